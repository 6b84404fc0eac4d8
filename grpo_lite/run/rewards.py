"""The reward functions a checkpoint holds, and how a resumed run or a branch gets them back.

A checkpoint keeps each reward's name, weight and source (and, for a function of an importable
module, where it came from). A branch goes on with the rewards in force at its checkpoint; a
resumed run keeps the ones it was given and warns where they differ from the checkpoint's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewards import Combined, NamedReward

log = logging.getLogger(__name__)


def rewards_at(state: dict[str, Any], current: Combined) -> Combined:
    """The reward functions in force when the checkpoint was written, with their weights: the current
    function where its source is the saved one, else the saved source compiled."""
    from grpo_lite.reward_source import RewardSourceError, compile_reward

    sources, origins = state.get("reward_sources", {}), state.get("reward_origins", {})
    items = []
    for saved in state["rewards"]:
        name, source = saved["name"], sources.get(saved["name"], "")
        now = current.rewards[current.names.index(name)] if name in current.names else None
        original = _importable(origins.get(name), source)
        if now is not None and now.source == source:
            fn = now.fn
        elif original is not None:  # a function of a module (a built-in reward): its module's globals too
            fn = original
        else:
            try:
                fn = compile_reward(source, name)
            except RewardSourceError as err:
                raise ValueError(
                    f"cannot restore reward {name!r} from the checkpoint's saved source: {err}"
                ) from err
        items.append(NamedReward(fn, name, float(saved["weight"]), source))
    return Combined(items)


def reward_origin(fn: Any) -> str | None:
    """``module:qualname`` of a reward defined in an importable module (None for one compiled from
    the editor or defined in a notebook), saved with checkpoints so a branch can import it again."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or getattr(fn, "__grpo_source__", None):
        return None
    return f"{module}:{qualname}"


def _importable(origin: str | None, source: str) -> Any:
    """The function at ``origin`` if it imports and its source is still ``source``, else None."""
    if not origin:
        return None
    import importlib

    from rewards import source_of

    module, _, qualname = origin.partition(":")
    try:
        fn: Any = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError):
        return None
    return fn if source_of(fn) == source else None


def restore_rewards(state: dict[str, Any], current: Combined, *, branch: bool, where: Path) -> Combined:
    """The rewards to go on with after loading a checkpoint: a branch takes the ones in force then
    (:func:`rewards_at`); a resumed run keeps the ones it was given, with a warning for each that
    differs from the checkpoint's."""
    if branch:
        return rewards_at(state, current)
    for name, source in state.get("reward_sources", {}).items():
        if name in current.names and current.rewards[current.names.index(name)].source != source:
            log.warning("reward %r differs from the one in force at %s; the new one is used", name, where)
    return current
