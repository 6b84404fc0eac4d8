"""Listeners the trainer hands each step's metrics to. Each does one thing.

A callback may also steer: ``on_step_boundary`` runs before every step (and repeatedly while the
run is paused), where it can call ``trainer.steering``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol


class Run(Protocol):
    """What a listener reads from the trainer it is handed (``GRPOTrainer`` is one): callbacks and
    trackers depend on this, not on the trainer, so nothing below the loop imports it."""

    cfg: Any  # the GRPOConfig
    step: int
    run_dir: Path
    rewards: Any  # the Combined reward in force
    steering: Any  # the Steering object
    history: list[dict[str, Any]]
    lineage: dict[str, Any] | None
    last_rollout: dict[str, Any] | None
    interrupted_at: Path | None

    def run_facts(self) -> dict[str, Any]: ...


class Callback:
    """Base class: override what you need."""

    def on_train_begin(self, trainer: Run) -> None: ...

    def on_step_boundary(self, trainer: Run) -> None: ...

    def on_step_end(self, trainer: Run, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Run) -> None: ...


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; None reads back as "not measured"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


class JsonlLogger(Callback):
    """Appends one JSON object per step to ``RUN/metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_step_end(self, trainer: Run, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(_json_safe(metrics)) + "\n")


class ProgressBar(Callback):
    """A tqdm bar showing the step, the mean reward and the completion length."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(self, trainer: Run) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=trainer.cfg.max_steps, initial=trainer.step, desc="GRPO", unit="step")

    def on_step_end(self, trainer: Run, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                reward=f"{metrics['reward']:.3f}", length=f"{metrics['completion_len_mean']:.0f}"
            )

    def on_train_end(self, trainer: Run) -> None:
        if self.bar is not None:
            self.bar.close()
