"""TensorBoard: event files in ``RUN/tensorboard/RUN_NAME`` (``tensorboard --logdir RUN/tensorboard``).

Scalars under the metrics' own names; the config, reward sources, completions tables and events
(steering changes, alarms, reward errors, resumes) as Markdown text, TensorBoard's only table-like
type."""

from __future__ import annotations

import json
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from grpo_lite.trackers.base import Tracker as Base


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", "<br>")


class Tracker(Base):
    name = "tensorboard"

    def start(self, config: dict[str, Any]) -> None:
        self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / self.run_name))
        rewards = config.pop("rewards")
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)
        for name, reward in rewards.items():
            text = f"weight {reward['weight']}\n\n```python\n{reward['source']}\n```"
            self.writer.add_text(f"reward_source/{name}", text, 0)

    def log_scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
        self.writer.add_text(key, "\n".join(lines), step)
        self.writer.flush()

    def log_event(self, step: int, kind: str, text: str) -> None:
        self.writer.add_text(f"events/{kind}", text, step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()
