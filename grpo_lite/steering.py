"""The step boundary: changes requested while training runs, applied before the next rollout.

The notebook dashboard, the command line's Ctrl-C handling and the tests all steer through one
:class:`Steering` object (``trainer.steering``). Requests are thread-safe and take effect at the
next step boundary; the trainer records what changed in that step's metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpo_lite.rollout import Sampling
from rewards import Combined


@dataclass
class Changes:
    """What was requested since the last boundary."""

    sampling: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, tuple[Callable[..., Any], str | None]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sampling or self.rewards)

    def apply(self, sampling: Sampling, rewards: Combined) -> tuple[Combined, dict[str, Any]]:
        """Set the sampling settings in place and replace reward functions; returns the new combined
        reward and what changed (as recorded in that step's metrics: ``changes``)."""
        changes: dict[str, Any] = {}
        for key, value in self.sampling.items():
            if getattr(sampling, key) != value:
                setattr(sampling, key, value)
                changes[key] = value
        for name, (fn, source) in self.rewards.items():
            rewards = rewards.replace_function(name, fn, source)
            changes[f"reward:{name}"] = rewards.rewards[rewards.names.index(name)].source
        return rewards, changes


class Steering:
    """Requests for the next step: sampling settings, reward functions, pause/resume, stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = Changes()
        self.paused = False
        self.stop_requested = False

    def set_sampling(self, **settings: Any) -> None:
        """Request new sampling settings (temperature, top_p, top_k, max_new_tokens) for the next step."""
        allowed = set(Sampling.__dataclass_fields__)
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {unknown}; allowed: {sorted(allowed)}")
        probe = Sampling(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=1)
        for k, v in settings.items():
            setattr(probe, k, v)
        probe.check()  # a bad value is refused now, not at the next step
        with self._lock:
            self._pending.sampling.update(settings)

    def replace_reward(self, name: str, fn: Callable[..., Any], source: str | None = None) -> None:
        """Swap the reward function called ``name`` at the next step (weight kept)."""
        if not callable(fn):
            raise TypeError(f"replacement for reward {name!r} is not callable")
        with self._lock:
            self._pending.rewards[name] = (fn, source)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        """Finish after the current step; the trainer writes a checkpoint."""
        self.stop_requested = True

    def take(self) -> Changes:
        """The pending changes, cleared (called by the trainer at each boundary)."""
        with self._lock:
            changes, self._pending = self._pending, Changes()
        return changes
