"""The step boundary: changes requested while training runs, applied before the next rollout.

The notebook dashboard, the command line's Ctrl-C handling and the tests all steer through one
:class:`Steering` object (``trainer.steering``). Requests are thread-safe, checked when made (a bad
value is refused at once with a message naming it; nothing pending changes) and take effect at the
next step boundary; the trainer records what changed in that step's metrics (``changes``), and the
values in force every step (``weights/NAME``, ``lr``, the sampling settings).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from grpo_lite.rollout import Sampling
from rewards import Combined, NamedReward, source_of

TIMEOUTS_IN_A_ROW = 3  # a reward that times out on this many steps in a row gets weight 0


@dataclass
class Changes:
    """What was requested since the last boundary."""

    sampling: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, tuple[Callable[..., Any], str | None]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    added: dict[str, NamedReward] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    learning_rate: float | None = None
    disabled: list[str] = field(default_factory=list)  # weight set to 0 after repeated timeouts
    warm_start: str | None = None  # "own" / "solutions": a supervised phase before the next step

    def __bool__(self) -> bool:
        return bool(self.sampling or self.rewards or self.weights or self.added or self.removed) or (
            self.learning_rate is not None or self.warm_start is not None
        )

    def apply(
        self, sampling: Sampling, rewards: Combined, scheduler: Any = None
    ) -> tuple[Combined, dict[str, Any]]:
        """Set the sampling settings in place, swap, add, remove and reweight reward functions, set the
        learning rate; returns the new combined reward and what changed (that step's ``changes``)."""
        changes: dict[str, Any] = {}
        for key, value in self.sampling.items():
            if getattr(sampling, key) != value:
                setattr(sampling, key, value)
                changes[key] = value
        for name, (fn, source) in self.rewards.items():
            if name in rewards.names:
                rewards = rewards.replace_function(name, fn, source)
                changes[f"reward:{name}"] = rewards.rewards[rewards.names.index(name)].source
            elif name in self.added:
                self.added[name] = replace(self.added[name], fn=fn, source=source or source_of(fn))
        if self.removed:
            rewards = Combined([r for r in rewards.rewards if r.name not in self.removed])
            changes["removed_rewards"] = list(self.removed)
        for name, item in self.added.items():
            rewards = Combined([*rewards.rewards, item])
            changes[f"added:{name}"] = item.source
        if self.weights:
            rewards = Combined(
                [replace(r, weight=self.weights.get(r.name, r.weight)) for r in rewards.rewards]
            )
            changes |= {f"weight:{name}": w for name, w in self.weights.items()}
        if self.disabled:
            changes["disabled_after_timeouts"] = list(self.disabled)
        if self.learning_rate is not None and scheduler is not None:
            set_learning_rate(scheduler, self.learning_rate)
            changes["learning_rate"] = self.learning_rate
        return rewards, changes


def set_learning_rate(scheduler: Any, lr: float) -> None:
    """Make ``lr`` the learning rate in force now; the schedule goes on from it: its base rate becomes
    ``lr / factor`` (the schedule's factor at this step, e.g. 0.5 halfway down a linear decay), so
    warmup, decay or cosine continue with the same shape, scaled. At a factor of 0 (before warmup
    starts, at the end of a decay) ``lr`` becomes the base rate."""
    factors = [f(scheduler.last_epoch) for f in getattr(scheduler, "lr_lambdas", [lambda _: 1.0])]
    for i, group in enumerate(scheduler.optimizer.param_groups):
        factor = factors[i % len(factors)]
        base = lr / factor if factor > 0 else lr
        scheduler.base_lrs[i] = base
        group["initial_lr"] = base
        group["lr"] = base * factor
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def weights_in_force(rewards: Combined) -> dict[str, float]:
    """``weights/NAME`` for every reward function (in each step's metrics)."""
    return {f"weights/{r.name}": r.weight for r in rewards.rewards}


def _check_weight(name: str, weight: Any) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(f"reward {name!r}: weight must be a finite number >= 0; got {weight!r}")
    return float(weight)


class Steering:
    """Requests for the next step: sampling settings, reward functions and weights, learning rate,
    a warm start, pause/resume, stop. ``names`` gives the reward names in force (to check requests
    against); ``check_warm_start(source)`` raises ValueError for a warm start the run cannot make."""

    def __init__(
        self, names: Callable[[], list[str]] = list, check_warm_start: Callable[[str], None] | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._pending = Changes()
        self._names = names
        self._check_warm_start = check_warm_start
        self._timeouts: dict[str, int] = {}
        self.paused = False
        self.stop_requested = False

    def _names_after_pending(self) -> list[str]:
        return [n for n in self._names() if n not in self._pending.removed] + list(self._pending.added)

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
            if name not in self._names_after_pending():
                raise ValueError(f"no reward named {name!r}; rewards: {self._names_after_pending()}")
            self._pending.rewards[name] = (fn, source)

    def set_reward_weights(self, weights: dict[str, float]) -> None:
        """New weights for some reward functions from the next step (0 switches one off; ``weights/NAME``
        in the metrics shows the weight in force every step)."""
        with self._lock:
            names = self._names_after_pending()
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(f"unknown reward name(s) {unknown}; rewards: {names}")
            checked = {name: _check_weight(name, w) for name, w in weights.items()}
            self._pending.weights.update(checked)

    def set_learning_rate(self, lr: float) -> None:
        """The learning rate from the next step; the schedule continues from it (see
        :func:`set_learning_rate`); ``lr`` in the metrics shows the rate in force."""
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning rate must be a finite number > 0; got {lr!r}")
        with self._lock:
            self._pending.learning_rate = float(lr)

    def add_reward(self, fn: Callable[..., Any], weight: float = 1.0, name: str | None = None,
                   source: str | None = None) -> str:  # fmt: skip
        """Add a reward function from the next step; returns its name (``name``, else the function's)."""
        if not callable(fn):
            raise TypeError(f"reward {fn!r} is not callable")
        name = name or getattr(fn, "__name__", "") or ""
        if not name.isidentifier():
            raise ValueError(f"a new reward needs a name (an identifier); got {name!r}")
        item = NamedReward(fn, name, _check_weight(name, weight), source or source_of(fn))
        with self._lock:
            if name in self._names_after_pending():
                raise ValueError(f"a reward named {name!r} is already in use; give name=...")
            self._pending.added[name] = item
            if name in self._pending.removed:
                self._pending.removed.remove(name)
        return name

    def remove_reward(self, name: str) -> None:
        """Remove a reward function from the next step (the last one cannot be removed)."""
        with self._lock:
            names = self._names_after_pending()
            if name not in names:
                raise ValueError(f"no reward named {name!r}; rewards: {names}")
            if len(names) == 1:
                raise ValueError(f"cannot remove {name!r}: it is the last reward function")
            if name in self._pending.added:
                del self._pending.added[name]
            else:
                self._pending.removed.append(name)
            self._pending.weights.pop(name, None)
            self._pending.rewards.pop(name, None)

    def watch_timeouts(self, timed_out: list[str], limit: int = TIMEOUTS_IN_A_ROW) -> None:
        """Count each reward's timeouts in a row; at ``limit``, request its weight 0 for the next step
        (recorded in that step's ``changes`` as ``weight:NAME`` and ``disabled_after_timeouts``)."""
        for name in list(self._timeouts):
            if name not in timed_out:
                del self._timeouts[name]
        for name in timed_out:
            self._timeouts[name] = self._timeouts.get(name, 0) + 1
            if self._timeouts[name] == limit and name in self._names_after_pending():
                with self._lock:
                    self._pending.weights[name] = 0.0
                    self._pending.disabled.append(name)

    def warm_start(self, source: str = "own") -> None:
        """A warm start before the next step (``warm_start.py``): a supervised phase of the LoRA on the
        model's own right answers (``"own"``: the next ``warm_start_prompts`` prompts drawn and scored)
        or the data's worked solutions (``"solutions"``); then GRPO goes on. Recorded in that step's
        ``changes`` and in ``warm_start-step-N.json``."""
        if source not in ("own", "solutions"):
            raise ValueError(f"warm start source must be 'own' or 'solutions'; got {source!r}")
        if self._check_warm_start is not None:
            self._check_warm_start(source)
        with self._lock:
            self._pending.warm_start = source

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
