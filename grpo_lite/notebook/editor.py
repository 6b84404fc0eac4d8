"""The reward editor's logic, without widgets: compile edited source, test it, apply it.

A syntax error, a wrong signature, an exception or a wrong-length result is refused with its
message; the trainer keeps the previous function. An applied function keeps its source, which the
checkpoint and the metrics log record.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field
from typing import Any

from rewards import RewardFunctionError
from rewards.combine import check_values


class RewardSourceError(ValueError):
    """Edited reward source that cannot be used; the message says why."""


def compile_reward(source: str, name: str | None = None) -> Any:
    """Execute ``source`` in a fresh namespace and return its reward function.

    The function is the one called ``name`` if defined, else the only function the source defines.
    It must accept ``prompts`` and ``completions`` and take ``**kwargs`` for the dataset columns.
    """
    namespace: dict[str, Any] = {}
    try:
        code = compile(source, f"<reward {name or 'edited'}>", "exec")
    except SyntaxError as err:
        raise RewardSourceError(f"syntax error on line {err.lineno}: {err.msg}") from err
    try:
        exec(code, namespace)
    except Exception as err:
        raise RewardSourceError(
            f"the source raised while defining the function: {type(err).__name__}: {err}"
        ) from err
    funcs = {
        k: v
        for k, v in namespace.items()
        if inspect.isfunction(v) and v.__code__.co_filename == code.co_filename
    }
    fn = funcs.get(name) if name in funcs else (next(iter(funcs.values())) if len(funcs) == 1 else None)
    if fn is None:
        raise RewardSourceError(
            f"define one function (or one named {name!r}); found {sorted(funcs) or 'none'}"
        )
    params = inspect.signature(fn).parameters
    has_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not {"prompts", "completions"} <= set(params) or not has_kwargs:
        raise RewardSourceError(
            f"{fn.__name__}{inspect.signature(fn)} must have the signature (prompts, completions, **kwargs)"
        )
    fn.__grpo_source__ = source  # type: ignore[attr-defined]  # kept by rewards.source_of
    return fn


@dataclass
class TryResult:
    ok: bool
    message: str
    new_scores: list[float | None] = field(default_factory=list)
    old_scores: list[float | None] = field(default_factory=list)


def try_reward(source: str, name: str, latest: dict[str, Any] | None, current: Any = None) -> TryResult:
    """Run edited source on the latest step's completions, next to the current function's scores."""
    try:
        fn = compile_reward(source, name)
    except RewardSourceError as err:
        return TryResult(False, str(err))
    if not latest:
        return TryResult(True, "compiled; no completions yet to test it on")
    kwargs = {"prompts": latest["prompts"], "completions": latest["completions"], **latest.get("columns", {})}
    try:
        new = check_values(name, fn(**kwargs), len(latest["completions"]))
    except RewardFunctionError as err:
        return TryResult(False, str(err))
    except Exception:
        return TryResult(False, "raised on the latest completions:\n" + traceback.format_exc(limit=-2))
    old = latest.get("per_function", {}).get(name, [])
    return TryResult(True, f"scored {len(new)} completions", new, list(old))


def apply_reward(trainer: Any, name: str, source: str) -> TryResult:
    """Test the source, then ask the trainer to swap it in at the next step; refused if the test fails."""
    result = try_reward(source, name, trainer.last_rollout)
    if result.ok:
        trainer.steering.replace_reward(name, compile_reward(source, name), source)
        result.message = f"{name} will be replaced at the next step"
    return result
