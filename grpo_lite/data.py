"""Prompt datasets: rows with a prompt column; every other column goes to the reward functions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


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
    """The training prompts, served B at a time in an order fixed by the seed and the step.

    The order of step ``s`` depends only on (seed, s): a resumed run sees the same prompts as an
    uninterrupted one without saving a data-loader state.
    """

    def __init__(self, source: Any, *, prompt_column: str, seed: int) -> None:
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
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, step: int, size: int) -> list[dict[str, Any]]:
        """The ``size`` rows of training step ``step`` (0-based): epochs of seeded permutations."""
        n = len(self.rows)
        out = []
        for k in range(step * size, (step + 1) * size):
            epoch, pos = divmod(k, n)
            perm = self._permutation(epoch)
            out.append(self.rows[int(perm[pos])])
        return out

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.rows), generator=g)}  # keep only the current epoch
        return self._perms[epoch]


def reward_columns(
    rows: Sequence[dict[str, Any]], *, prompt_column: str, group_size: int
) -> dict[str, list[Any]]:
    """Every non-prompt column, each value repeated G times to line up with the completions."""
    names = [k for k in rows[0] if k != prompt_column]
    return {k: [row.get(k) for row in rows for _ in range(group_size)] for k in names}
