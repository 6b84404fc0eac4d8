"""What a task declares: its data, its rewards, how held-out answers are judged, its training
settings, and hand-made completions its tests check. Each ``tasks/NAME.py`` ends with
``TASK = Task(...)``; ``tasks/__init__.py`` finds them (no registry to edit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Rows = list[dict[str, Any]]
Reward = Callable[..., Any]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task. ``naive`` (optional): reward functions and weights that pay a proxy instead of the
    task, trained on by ``demo --naive`` to show reward hacking. ``samples``: hand-made completions
    (as the rewards receive them) and their columns, the first one right: the tests score them with
    each reward (the first reward gives the first completion 1.0) and through the reward editor."""

    name: str
    summary: str
    split: Callable[[], tuple[Rows, Rows]]
    rewards: tuple[Reward, ...]
    weights: tuple[float, ...]
    measures: dict[str, Reward]  # held-out: name -> reward whose 1.0 counts; "accuracy" first
    settings: dict[str, Any] = field(default_factory=dict)  # GRPOConfig fields
    steps: int = 40
    naive: tuple[tuple[Reward, ...], tuple[float, ...]] | None = None
    samples: tuple[list[Any], dict[str, list[Any]]] = ([], {})

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.weights):
            raise ValueError(
                f"task {self.name!r}: {len(self.weights)} weights for {len(self.rewards)} rewards"
            )
        if next(iter(self.measures), None) != "accuracy":
            raise ValueError(f"task {self.name!r}: the first held-out measure must be 'accuracy'")

    def examples(self, n: int = 3) -> list[str]:
        """The first ``n`` held-out prompts' last message, as the model reads them."""
        return [_text(row["prompt"]) for row in self.split()[1][:n]]


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]
