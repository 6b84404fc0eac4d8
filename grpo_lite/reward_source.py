"""A reward function from its source text: how the reward editor applies an edit and how a branch
restores the functions a checkpoint saved."""

from __future__ import annotations

import inspect
from typing import Any


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
