"""Prompt datasets: rows with a prompt column; every other column goes to the reward functions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from grpo_lite.difficulty import Difficulty, difficulty_column


def load_rows(source: Any) -> list[dict[str, Any]]:
    """Rows from a list of dicts, a ``datasets.Dataset``, or a local .jsonl/.json/.parquet/.csv file."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        import datasets

        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
        if kind is None:
            raise ValueError(f"dataset file {path}: expected .jsonl, .json, .parquet or .csv")
        source = datasets.load_dataset(kind, data_files=str(path), split="train")
    if hasattr(source, "to_list"):  # datasets.Dataset
        return list(source.to_list())
    rows = list(source)
    if rows and not isinstance(rows[0], dict):
        raise TypeError(f"dataset rows must be dicts of columns; got {type(rows[0]).__name__}")
    return rows


class PromptData:
    """The training prompts, one stream in an order fixed by the seed: epochs of seeded permutations.

    ``take(n)`` serves the next n rows and moves the cursor (``served``); a step takes B, or more with
    dynamic sampling. ``visited`` records each scored group in the rows' difficulty record
    (``difficulty.py``), which can rest rows whose groups keep tying (``rest_tied_after``) and order
    each epoch easiest first (``order="curriculum"``). The cursor, the record and the current epoch's
    order are the state (``state_dict``, in every checkpoint): a resumed run sees the same prompts as
    an uninterrupted one. In the uniform order without resting, step ``s`` of B prompts starts at
    ``s * B``: the same rows as before the stream had a cursor.
    """

    def __init__(
        self,
        source: Any,
        *,
        prompt_column: str,
        seed: int,
        order: str = "uniform",
        rest_tied_after: int = 0,
        rest_epochs: int = 1,
        solve_threshold: float = 1.0,
    ) -> None:
        self.rows = load_rows(source)
        if not self.rows:
            raise ValueError("the training dataset is empty")
        columns = sorted(self.rows[0])
        if prompt_column not in self.rows[0]:
            raise ValueError(
                f"the dataset has no prompt column {prompt_column!r}; its columns are {columns} "
                "(set GRPOConfig.prompt_column)"
            )
        self.prompt_column = prompt_column
        self.seed = seed
        self.order, self.rest_tied_after, self.rest_epochs = order, rest_tied_after, rest_epochs
        self.solve_threshold = solve_threshold
        self.levels = difficulty_column(self.rows) if order == "curriculum" else None
        self.difficulty = Difficulty(len(self.rows))
        self.served = 0  # positions of the stream passed so far (served or passed over while resting)
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, n: int) -> list[int]:
        """The row indices of the next ``n`` rows served; the cursor moves past them and past every
        resting row it passes over (at most one epoch of them in a row: if all rest, they are served)."""
        out: list[int] = []
        passed_over = 0
        while len(out) < n:
            row = self.index_at(self.served)
            self.served += 1
            if self.difficulty.resting.get(row) and passed_over < len(self.rows):
                self.difficulty.resting[row] -= 1
                if not self.difficulty.resting[row]:
                    del self.difficulty.resting[row]
                passed_over += 1
                continue
            out.append(row)
        return out

    def visited(self, indices: list[int], rewards: torch.Tensor, group_size: int) -> None:
        """Record one visit per row from its group's rewards; rest the rows that tied too often."""
        self.difficulty.record(indices, rewards, group_size, self.solve_threshold)
        for row in indices:
            if self.rest_tied_after and self.difficulty.tied_streak(row) >= self.rest_tied_after:
                self.difficulty.resting[row] = self.rest_epochs
                self.difficulty.streak_reset(row)

    def index_at(self, k: int) -> int:
        """The row at stream position ``k``."""
        epoch, pos = divmod(k, len(self.rows))
        return int(self._permutation(epoch)[pos])

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"served": self.served, "difficulty": self.difficulty.state_dict()}
        if self.order == "curriculum":  # the epoch's order was fixed from the record at its start
            state["epoch_order"] = {str(e): p.tolist() for e, p in self._perms.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.served = int(state["served"])
        self.difficulty.load_state_dict(state.get("difficulty", {}))
        if "epoch_order" in state:
            self._perms = {int(e): torch.tensor(p) for e, p in state["epoch_order"].items()}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.rows), generator=g)
            if self.order == "curriculum":  # easiest first; ties keep the random order
                perm = perm[torch.argsort(torch.tensor([self._ease(int(i)) for i in perm]), stable=True)]
            self._perms = {epoch: perm}  # keep only the current epoch
        return self._perms[epoch]

    def _ease(self, row: int) -> float:
        """Sort key, lower first: the ``difficulty`` column, else 1 - the estimated pass rate."""
        if self.levels is not None:
            return self.levels[row]
        rate = self.difficulty.pass_rate(row)
        return 1.0 - (0.5 if rate is None else rate)


def reward_columns(
    rows: Sequence[dict[str, Any]], *, prompt_column: str, group_size: int
) -> dict[str, list[Any]]:
    """Every non-prompt column, each value repeated G times to line up with the completions."""
    names = [k for k in rows[0] if k != prompt_column]
    return {k: [row.get(k) for row in rows for _ in range(group_size)] for k in names}
