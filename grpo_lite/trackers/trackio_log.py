"""Trackio: Hugging Face's local-first tracker. Runs are stored locally (``TRACKIO_DIR``, default
``~/.cache/huggingface/trackio``; nothing leaves the machine unless you give it a Space); view them
with ``trackio show --project grpo-lite``. Project: ``TRACKIO_PROJECT``, else ``grpo-lite``.

Scalars under the metrics' own names, completions as ``trackio.Table``, alarms as Trackio alerts
(warnings), steering changes, reward errors and resumes as info alerts, the config and reward
sources as the run's config."""

from __future__ import annotations

import os
from typing import Any

import trackio

from grpo_lite.trackers.base import Tracker as Base

LEVELS = {"alarm": trackio.AlertLevel.WARN, "reward_error": trackio.AlertLevel.ERROR}


class Tracker(Base):
    name = "trackio"

    def start(self, config: dict[str, Any]) -> None:
        self.project = os.environ.get("TRACKIO_PROJECT", "grpo-lite")
        self.run = trackio.init(project=self.project, name=self.run_name, config=config, resume="allow",
                                embed=False, auto_log_gpu=False, auto_log_cpu=False)  # fmt: skip

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({key: trackio.Table(columns=columns, data=rows)}, step=step)

    def log_event(self, step: int, kind: str, text: str) -> None:
        level = LEVELS.get(kind, trackio.AlertLevel.INFO)
        self.run.alert(title=f"{kind} at step {step}", text=text, level=level)

    def finish(self) -> None:
        self.run.finish()
