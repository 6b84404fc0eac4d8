"""Dynamic sampling (DAPO, arXiv 2503.14476, section 3.2): a step trains on groups that carry signal.

A group whose rewards all tie has advantage 0 for every completion: nothing to learn from it. With
``GRPOConfig.dynamic_sampling``, once a step's first draw (``prompts_per_step`` prompts x G) is
scored, such groups are set aside and a further draw of ``prompts_per_step`` prompts is rolled out and
scored in the same step, until ``prompts_per_step`` groups carry signal or ``max_extra_rounds``
further draws were made. The step then trains on the groups with signal, the first drawn first
(fewer when too few were found, none when none was: that step makes no update). Advantages and the
loss are computed on the kept groups exactly as on any batch; the loss normalisation counts only
them. Each draw uses the sampling settings and rewards in force (steering applies at the next step's
boundary, so every draw of a step shares them); the prompt stream's cursor moves past every prompt
drawn, and goes into the checkpoint, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from grpo_lite.rollout.generate import Rollout
from grpo_lite.rollout.merge import concat_rollouts, select_rows
from rewards import Scores

log = logging.getLogger(__name__)


@dataclass
class Draw:
    """One rollout of B prompts x G completions, scored. N = B*G rows, group by group."""

    indices: list[int]  # (B,) the rows of the training data
    rows: list[dict[str, Any]]  # (B,)
    rollout: Rollout
    scores: Scores
    scored: dict[str, Any]  # what the rewards were given: prompts, completions, columns, group_size
    rollout_seconds: float
    score_seconds: float

    @property
    def rewards(self) -> torch.Tensor:
        """(N,) total rewards, NaN where no function gave one."""
        return torch.tensor(self.scores.total, dtype=torch.float32)


def signal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) bool: the group holds two valid (non-NaN) rewards that differ, so some advantage is not 0."""
    r = rewards.view(-1, group_size)  # (B, G)
    valid = ~torch.isnan(r)
    hi = torch.where(valid, r, torch.full_like(r, -torch.inf)).max(dim=1).values
    lo = torch.where(valid, r, torch.full_like(r, torch.inf)).min(dim=1).values
    return (valid.sum(dim=1) >= 2) & (hi > lo)


def seek_signal(
    first: Draw, draw_more: Callable[[], Draw], *, want: int, max_extra_rounds: int, pad_id: int
) -> tuple[Draw, dict[str, float]]:
    """Draw until ``want`` groups carry signal or ``max_extra_rounds`` more draws were made; returns
    the kept groups as one draw (``first`` whole when none carries signal) and the step's figures."""
    G = first.scored["group_size"]
    draws, found = [first], int(signal_groups(first.rewards, G).sum())
    while found < want and len(draws) <= max_extra_rounds:
        draws.append(draw_more())
        found += int(signal_groups(draws[-1].rewards, G).sum())
    picks = [(d, int(g)) for d in draws for g in torch.nonzero(signal_groups(d.rewards, G)).flatten()][:want]
    drawn = sum(len(d.indices) for d in draws)
    discarded_seconds = sum(
        d.rollout_seconds * (1 - sum(p[0] is d for p in picks) / len(d.indices)) for d in draws
    )
    stats = {
        "dynamic/groups_drawn": float(drawn),
        "dynamic/groups_kept": float(len(picks)),
        "dynamic/extra_rounds": float(len(draws) - 1),
        "dynamic/discarded_rollout_seconds": discarded_seconds,
        "dynamic/reward_drawn": _mean([v for d in draws for v in d.scores.total]),
        "time/generate": sum(d.rollout_seconds for d in draws),  # every draw's, the discarded ones too
        "time/score": sum(d.score_seconds for d in draws),
    }
    if not picks:
        log.warning("dynamic sampling: no group of %d drawn carried signal (every group's rewards tie): "
                    "no update this step", drawn)  # fmt: skip
        return first, stats
    return join([(d, [g for e, g in picks if e is d]) for d in draws], pad_id=pad_id), stats


def join(parts: list[tuple[Draw, list[int]]], *, pad_id: int) -> Draw:
    """The groups ``gs`` of each draw, in order, as one draw."""
    parts = [(d, gs) for d, gs in parts if gs]
    G = parts[0][0].scored["group_size"]
    rows_of = [[g * G + j for g in gs for j in range(G)] for _, gs in parts]  # completion rows kept

    def pick(values: list[Any], k: int) -> list[Any]:
        return [values[i] for i in rows_of[k]]

    first = parts[0][0]
    names = list(first.scores.per_function)
    scores = Scores(
        total=[v for k, (d, _) in enumerate(parts) for v in pick(d.scores.total, k)],
        per_function={
            n: [v for k, (d, _) in enumerate(parts) for v in pick(d.scores.per_function[n], k)] for n in names
        },  # fmt: skip
        errors={name: tb for d, _ in parts for name, tb in d.scores.errors.items()},
        timed_out=sorted({name for d, _ in parts for name in d.scores.timed_out}),
    )
    columns = {c: [v for k, (d, _) in enumerate(parts) for v in pick(d.scored["columns"][c], k)]
               for c in first.scored["columns"]}  # fmt: skip
    scored = {
        "prompts": [v for k, (d, _) in enumerate(parts) for v in pick(d.scored["prompts"], k)],
        "completions": [v for k, (d, _) in enumerate(parts) for v in pick(d.scored["completions"], k)],
        "columns": columns,
        "group_size": G,
    }
    rollout = concat_rollouts(
        [select_rows(d.rollout, rows_of[k]) for k, (d, _) in enumerate(parts)], pad_id=pad_id
    )
    return Draw(
        indices=[d.indices[g] for d, gs in parts for g in gs],
        rows=[d.rows[g] for d, gs in parts for g in gs],
        rollout=rollout,
        scores=scores,
        scored=scored,
        rollout_seconds=sum(d.rollout_seconds for d, _ in parts),
        score_seconds=sum(d.score_seconds for d, _ in parts),
    )


def _mean(values: list[float]) -> float:
    got = [v for v in values if v == v]  # NaN left out
    return sum(got) / len(got) if got else float("nan")


def no_update() -> dict[str, float]:
    """The update's figures on a step where no group carried signal: nothing computed, nothing applied."""
    return {"loss": 0.0, "skipped_compute_frac": 1.0, "entropy": float("nan"), "grad_norm": 0.0,
            "update_skipped": 1.0, "time/optimizer": 0.0}  # fmt: skip
