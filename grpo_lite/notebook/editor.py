"""The reward editor's logic, without widgets: compile edited source, test it, apply it.

A syntax error, a wrong signature, an exception or a wrong-length result is refused with its
message; the trainer keeps the previous function. An applied function keeps its source, which the
checkpoint and the metrics log record.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from grpo_lite.reward_source import RewardSourceError, compile_reward
from rewards import RewardFunctionError
from rewards.combine import RewardTimeout, call_bounded, check_values


@dataclass
class TryResult:
    ok: bool
    message: str
    new_scores: list[float | None] = field(default_factory=list)
    old_scores: list[float | None] = field(default_factory=list)


def try_reward(
    source: str, name: str, latest: dict[str, Any] | None, current: Any = None, time_limit: float = 10.0
) -> TryResult:
    """Run edited source on the latest step's completions, next to the current function's scores;
    a call that takes longer than ``time_limit`` seconds is refused (and left to finish)."""
    try:
        fn = compile_reward(source, name)
    except RewardSourceError as err:
        return TryResult(False, str(err))
    if not latest:
        return TryResult(True, "compiled; no completions yet to test it on")
    kwargs = {"prompts": latest["prompts"], "completions": latest["completions"], **latest.get("columns", {})}
    try:
        value = call_bounded(fn, kwargs, time_limit, name=name, source=source)
        new = check_values(name, value, len(latest["completions"]))
    except (RewardFunctionError, RewardTimeout) as err:
        return TryResult(False, str(err))
    except Exception:
        return TryResult(False, "raised on the latest completions:\n" + traceback.format_exc(limit=-2))
    old = latest.get("per_function", {}).get(name, [])
    return TryResult(True, f"scored {len(new)} completions", new, list(old))


def apply_reward(trainer: Any, name: str, source: str) -> TryResult:
    """Test the source, then ask the trainer to swap it in (or add it, for a new name) at the next
    step; refused if the test fails."""
    result = try_reward(source, name, trainer.last_rollout, time_limit=trainer.cfg.reward_timeout)
    if result.ok and name in trainer.rewards.names:
        trainer.steering.replace_reward(name, compile_reward(source, name), source)
        result.message = f"{name} will be replaced at the next step"
    elif result.ok:  # a new reward
        try:
            trainer.steering.add_reward(compile_reward(source, name), name=name, source=source)
            result.message = f"{name} will be added at the next step (weight 1)"
        except ValueError as err:
            result.ok, result.message = False, str(err)
    return result
