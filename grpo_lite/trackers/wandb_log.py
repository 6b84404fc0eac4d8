"""Weights & Biases. Offline unless ``WANDB_MODE`` says otherwise (runs land in ``RUN/wandb``; push
them with ``wandb sync RUN/wandb/offline-run-*``, or set ``WANDB_MODE=online`` after ``wandb login``).
Project: ``WANDB_PROJECT``, else ``grpo-lite``.

Scalars under the metrics' own names, completions as ``wandb.Table``, steering changes, alarms,
reward errors and resumes as rows of an ``events`` table (re-logged whole, W&B's idiom for a table
that grows), the config and reward sources as the run's config."""

from __future__ import annotations

import os
from typing import Any

import wandb

from grpo_lite.trackers.base import Tracker as Base


class Tracker(Base):
    name = "wandb"

    def start(self, config: dict[str, Any]) -> None:
        self.events: list[list[Any]] = []
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "grpo-lite"), name=self.run_name,
                              config=config, dir=str(self.run_dir), mode=os.environ.get("WANDB_MODE", "offline"))  # type: ignore[arg-type]  # fmt: skip

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: wandb.Table(columns=list[str | int](columns), data=rows)}, step=step)

    def log_event(self, step: int, kind: str, text: str) -> None:
        self.events.append([step, kind, text])
        self.run.log({"events": wandb.Table(columns=["step", "kind", "text"], data=self.events)}, step=step)

    def finish(self) -> None:
        self.run.finish()
