"""What every tracker logs, and when; each tracker module only says how (its native calls)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from grpo_lite.alarms import alarms_of
from grpo_lite.callbacks import Callback, Run
from grpo_lite.config import GRPOConfig

COMPLETION_CHARS = 2000  # of each prompt and completion in a table row


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a step's metrics (but the step itself, the x-axis) under their own names (``rewards/NAME/mean`` …), NaN and
    infinities left out (not measured), strings and nested records (changes, tracebacks) left to
    the text events."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step"
    }


def as_text(value: Any) -> str:
    """A prompt or completion as text: chat messages as ``role: content`` lines."""
    if isinstance(value, str):
        return value[:COMPLETION_CHARS]
    if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(f"{m.get('role', '?')}: {m['content']}" for m in value)[:COMPLETION_CHARS]
    return str(value)[:COMPLETION_CHARS]


def completion_rows(rollout: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the completions table: prompt, completion, each reward, total, advantage."""
    names = list(rollout["per_function"])
    columns = ["step", "prompt", "completion", *names, "total", "advantage"]
    rows = []
    for i, completion in enumerate(rollout["completions"]):
        per_function = [rollout["per_function"][n][i] for n in names]
        rows.append([rollout["step"], as_text(rollout["prompts"][i]), as_text(completion), *per_function,
                     rollout["reward"][i], rollout["advantage"][i]])  # fmt: skip
    return columns, rows


class Tracker(Callback):
    """Logs, through the subclass's native calls: the config and the reward sources once at start;
    every step's numbers; every ``cfg.log_completions_every`` steps a completions table; steering
    changes, alarms, reward errors and resumes as text events at the step they happened."""

    name = "tracker"

    def __init__(self, cfg: GRPOConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_name = cfg.run_name or self.run_dir.resolve().name
        self.started = False
        self.alarms_seen: set[tuple[str, int]] = set()

    # ---- what the subclass implements ------------------------------------------------------------
    def start(self, config: dict[str, Any]) -> None: ...

    def log_scalars(self, step: int, values: dict[str, float]) -> None: ...

    def log_table(self, step: int, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_event(self, step: int, kind: str, text: str) -> None: ...

    def finish(self) -> None: ...

    # ---- when --------------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Run) -> None:
        if self.started:  # train() called again after a stop: the same tracker run goes on
            return
        self.started = True
        config = trainer.cfg.to_dict() | trainer.run_facts() | {"run_dir": str(self.run_dir)}
        config["rewards"] = {
            fn.name: {"weight": fn.weight, "source": fn.source} for fn in trainer.rewards.rewards
        }
        lineage = getattr(trainer, "lineage", None)
        if lineage:
            config["lineage"] = lineage
        self.start(config)
        if lineage and trainer.step == lineage["parent_step"]:
            self.log_event(
                trainer.step,
                "branch",
                f"branched from {lineage['parent_run_dir']} at step {lineage['parent_step']}",
            )
        elif trainer.step:
            self.log_event(trainer.step, "resume", f"resumed at step {trainer.step} in {self.run_dir}")

    def on_step_end(self, trainer: Run, metrics: dict[str, Any]) -> None:
        step = int(metrics["step"])
        self.log_scalars(step, scalars(metrics))
        if metrics.get("changes"):
            self.log_event(step, "changes", json.dumps(metrics["changes"], default=str))
        for name, tb in (metrics.get("reward_error_tracebacks") or {}).items():
            self.log_event(step, "reward_error", f"{name}: {tb.strip().splitlines()[-1]}")
        for alarm in alarms_of(metrics):
            if (alarm.name, alarm.step) not in self.alarms_seen:
                self.alarms_seen.add((alarm.name, alarm.step))
                self.log_event(step, "alarm", f"{alarm.name}: {alarm.message} ({alarm.suggestion})")
        every = self.cfg.log_completions_every
        if every and step % every == 0 and trainer.last_rollout is not None:
            self.log_table(step, "completions", *completion_rows(trainer.last_rollout))

    def on_train_end(self, trainer: Run) -> None:
        if self.started and (trainer.step >= trainer.cfg.max_steps or trainer.interrupted_at is not None):
            self.finish()
            self.started = False
