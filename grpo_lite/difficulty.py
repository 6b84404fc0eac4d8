"""Per-prompt difficulty: each training row's recent pass rate, and a prompt order that uses it.

Every scored group is a visit of its row: the share of its G completions that are right (total
reward >= ``GRPOConfig.solve_threshold``, 1.0 by default: the convention of the held-out measures)
and whether its rewards all tied (no signal: solved by every completion or by none, or all given
the same partial credit). ``Difficulty`` keeps the last ``WINDOW`` visits of each row (in every
checkpoint) and says how many rows are always solved, never solved, in between, or not seen yet
(the dashboard's histogram, the metrics' ``difficulty/*``).

Two uses in the prompt stream (``data.PromptData``), both off by default (today's uniform order):

- ``rest_tied_after = k``: a row whose group tied on its last k visits is rested: the stream
  passes over it the next ``rest_epochs`` times it comes round (so nothing is dropped for good:
  it comes back, its count reset);
- ``prompt_order = "curriculum"``: each epoch serves the rows easiest first: by the data's
  ``difficulty`` column when it has one (numbers; lower = easier), else by the estimated pass rate
  (higher = easier; rows not seen yet count as 0.5), ties in the epoch's seeded random order.
"""

from __future__ import annotations

from typing import Any

import torch

WINDOW = 4  # visits remembered per row


class Difficulty:
    """The rows' recent visits: (pass rate, tied) per visit, the newest last; and which are resting."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.visits: dict[int, list[tuple[float, bool]]] = {}
        self.resting: dict[int, int] = {}  # row -> times the stream still passes over it
        self.streak: dict[int, int] = {}  # row -> tied visits in a row since its last rest

    def record(self, indices: list[int], rewards: torch.Tensor, group_size: int, threshold: float) -> None:
        """One visit for each row of ``indices`` from its group's (G,) rewards (NaN: no reward)."""
        r = rewards.view(-1, group_size)
        for row, group in zip(indices, r, strict=True):
            valid = group[~torch.isnan(group)]
            passed = int((valid >= threshold).sum()) / len(valid) if len(valid) else 0.0
            tied = len(valid) < 2 or bool(valid.max() == valid.min())
            self.visits[row] = [*self.visits.get(row, []), (passed, tied)][-WINDOW:]
            self.streak[row] = self.streak.get(row, 0) + 1 if tied else 0

    def pass_rate(self, row: int) -> float | None:
        """The mean pass rate of the row's remembered visits; None if never seen."""
        seen = self.visits.get(row)
        return sum(p for p, _ in seen) / len(seen) if seen else None

    def tied_streak(self, row: int) -> int:
        """How many of the row's latest visits tied in a row (since it last came back from a rest)."""
        return self.streak.get(row, 0)

    def streak_reset(self, row: int) -> None:
        self.streak.pop(row, None)

    def histogram(self) -> dict[str, int]:
        """Rows always solved / never solved / in between on their last visit, and never seen."""
        out = {"always": 0, "never": 0, "between": 0, "unseen": self.n_rows - len(self.visits)}
        for seen in self.visits.values():
            last = seen[-1][0]
            out["always" if last == 1.0 else "never" if last == 0.0 else "between"] += 1
        return out

    def metrics(self) -> dict[str, float]:
        h = self.histogram()
        return {f"difficulty/{k}": float(v) for k, v in h.items()} | {
            "difficulty/resting": float(len(self.resting))
        }

    def state_dict(self) -> dict[str, Any]:
        return {"visits": {str(k): v for k, v in self.visits.items()},
                "resting": {str(k): v for k, v in self.resting.items()},
                "streak": {str(k): v for k, v in self.streak.items()}}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visits = {
            int(k): [(float(p), bool(t)) for p, t in v] for k, v in state.get("visits", {}).items()
        }
        self.resting = {int(k): int(v) for k, v in state.get("resting", {}).items()}
        self.streak = {int(k): int(v) for k, v in state.get("streak", {}).items()}


def difficulty_column(rows: list[dict[str, Any]]) -> list[float] | None:
    """The rows' ``difficulty`` values as numbers, or None when the data has no such column; a value
    that is not a number is named with its row."""
    if not rows or "difficulty" not in rows[0]:
        return None
    out = []
    for i, row in enumerate(rows):
        value = row.get("difficulty")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(
                f"the dataset's 'difficulty' column must hold numbers (lower = easier); row {i} has {value!r}"
            )
        out.append(float(value))
    return out
