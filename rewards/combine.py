"""The one place reward functions are called: weights, names, error isolation, per-function metrics.

A reward function has TRL's signature ``fn(prompts, completions, **columns) -> list[float | None]``:
one value per completion, ``None`` (or NaN) where it does not apply. ``combine`` turns several of
them into one weighted reward; the result is itself a reward function, so TRL accepts it too.
"""

from __future__ import annotations

import inspect
import math
import numbers
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rewards.bounded_call import RewardTimeout, call_bounded

RewardFn = Callable[..., Sequence[Any]]


class RewardFunctionError(ValueError):
    """A reward function broke its contract (wrong length, a non-number, inf). Names the function."""


@dataclass(frozen=True)
class NamedReward:
    """A reward function with its name, weight and Python source (kept for logs and checkpoints)."""

    fn: RewardFn
    name: str
    weight: float = 1.0
    source: str = ""


@dataclass
class Scores:
    """What one call of a :class:`Combined` produced for a batch of N completions."""

    total: list[float]
    """(N,) weighted sum over the functions that gave a value; NaN where none did."""
    per_function: dict[str, list[float | None]]
    """name -> (N,) values as returned (NaN turned into None); all None if the function raised."""
    errors: dict[str, str] = field(default_factory=dict)
    """name -> traceback of a function that raised on this batch."""
    timed_out: list[str] = field(default_factory=list)
    """names of the functions that did not return within the time limit (their values are None)."""

    def metrics(self) -> dict[str, float]:
        """Mean and std per function (over the completions it scored) and the error count."""
        out: dict[str, float] = {}
        for name, values in self.per_function.items():
            got = [v for v in values if v is not None]
            mean = sum(got) / len(got) if got else math.nan
            var = sum((v - mean) ** 2 for v in got) / (len(got) - 1) if len(got) > 1 else 0.0
            out[f"rewards/{name}/mean"] = mean
            out[f"rewards/{name}/std"] = math.sqrt(var)
        out["reward_errors"] = float(len(self.errors))
        return out


def source_of(fn: Callable[..., Any]) -> str:
    """The function's source: ``fn.__grpo_source__`` when it was compiled from a string, else inspect's."""
    src = getattr(fn, "__grpo_source__", None)
    if src:
        return str(src)
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return f"# source not available for {getattr(fn, '__qualname__', repr(fn))}\n"


class Combined:
    """Several reward functions as one: ``Combined([f, g], weights=[1.0, 0.5])``."""

    def __init__(
        self,
        funcs: Sequence[RewardFn | NamedReward],
        *,
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not funcs:
            raise ValueError("combine: give at least one reward function")
        if weights is not None and len(weights) != len(funcs):
            raise ValueError(f"combine: {len(weights)} weights for {len(funcs)} reward functions")
        if names is not None and len(names) != len(funcs):
            raise ValueError(f"combine: {len(names)} names for {len(funcs)} reward functions")
        items = []
        for i, f in enumerate(funcs):
            item = f if isinstance(f, NamedReward) else NamedReward(f, getattr(f, "__name__", f"reward_{i}"))
            if not callable(item.fn):
                raise TypeError(f"combine: reward {i} ({item.fn!r}) is not callable")
            item = replace(
                item,
                weight=float(weights[i]) if weights is not None else item.weight,
                name=names[i] if names is not None else item.name,
                source=item.source or source_of(item.fn),
            )
            items.append(item)
        seen = [r.name for r in items]
        if len(set(seen)) != len(seen):
            raise ValueError(f"combine: reward names must be unique; got {seen} (pass names=...)")
        self.rewards: tuple[NamedReward, ...] = tuple(items)
        self.__name__ = "combined"

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rewards]

    def replace_function(self, name: str, fn: RewardFn, source: str | None = None) -> Combined:
        """A new Combined with ``name``'s function swapped (weight kept)."""
        if name not in self.names:
            raise KeyError(f"no reward function named {name!r}; have {self.names}")
        items = [
            replace(r, fn=fn, source=source or source_of(fn)) if r.name == name else r for r in self.rewards
        ]
        return Combined(items)

    def score(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        time_limit: float | None = None,
        stop: Callable[[], bool] | None = None,
        **columns: Sequence[Any],
    ) -> Scores:
        """Call every function once on the batch; a function that raises scores None and is reported.
        With ``time_limit`` (seconds) each call is bounded: see :func:`call_bounded`."""
        n = len(completions)
        per_function: dict[str, list[float | None]] = {}
        errors: dict[str, str] = {}
        timed_out: list[str] = []
        for r in self.rewards:
            kwargs = {"prompts": prompts, "completions": completions, **columns}
            try:
                if time_limit is None:
                    raw = r.fn(**kwargs)
                else:
                    raw = call_bounded(r.fn, kwargs, time_limit, name=r.name, source=r.source, stop=stop)
            except RewardTimeout as err:
                errors[r.name], per_function[r.name] = f"{type(err).__name__}: {err}", [None] * n
                timed_out.append(r.name)
                continue
            except Exception:  # isolate: one broken completion must not cost the others their scores
                batch_error = traceback.format_exc()
                per_function[r.name] = self._one_by_one(r, prompts, completions, columns, time_limit, stop)
                failed = [i for i, v in enumerate(per_function[r.name]) if v is None]
                # the note first, the traceback last: readers show a traceback's last line, the exception
                note = f"{r.name} raised on the batch; scored one by one, completions {failed} failed\n"
                errors[r.name] = note + batch_error
                continue
            per_function[r.name] = check_values(r.name, raw, n)
        total = []
        for i in range(n):
            parts = [(r.weight, per_function[r.name][i]) for r in self.rewards]
            got = [w * v for w, v in parts if v is not None]
            total.append(sum(got) if got else math.nan)
        return Scores(total=total, per_function=per_function, errors=errors, timed_out=timed_out)

    @staticmethod
    def _one_by_one(
        r: NamedReward,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        columns: dict[str, Sequence[Any]],
        time_limit: float | None,
        stop: Callable[[], bool] | None,
    ) -> list[float | None]:
        """``r`` on each completion alone, after it raised on the batch: the completions it raises on
        score None, the others keep their values. With ``time_limit``, the whole pass is bounded by it
        (the completions not reached score None)."""
        out: list[float | None] = []
        deadline = None if time_limit is None else time.monotonic() + time_limit
        for i in range(len(completions)):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                out.append(None)
                continue
            kwargs = {"prompts": [prompts[i]], "completions": [completions[i]],
                      **{k: [v[i]] for k, v in columns.items()}}  # fmt: skip
            try:
                if left is None:
                    raw = r.fn(**kwargs)
                else:
                    raw = call_bounded(r.fn, kwargs, left, name=r.name, source=r.source, stop=stop)
                out += check_values(r.name, raw, 1)
            except RewardFunctionError:
                raise  # a broken contract stops the run, as on the batch
            except Exception:  # this completion's failure; the next one is tried on its own
                out.append(None)
        return out

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        """TRL's reward signature: the weighted total, None where no function applied."""
        scores = self.score(prompts, completions, **columns)
        return [None if math.isnan(t) else t for t in scores.total]


def check_values(name: str, raw: Any, n: int) -> list[float | None]:
    """Validate one function's output: a sequence of n numbers or None; NaN becomes None."""
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
        raise RewardFunctionError(
            f"reward function {name!r} must return a list of {n} floats; got {type(raw).__name__}"
        )
    if len(raw) != n:
        raise RewardFunctionError(
            f"reward function {name!r} returned {len(raw)} values for {n} completions (one per completion expected)"
        )
    out: list[float | None] = []
    for i, v in enumerate(raw):
        if v is None:
            out.append(None)
            continue
        if not isinstance(v, numbers.Real):
            raise RewardFunctionError(f"reward function {name!r} returned {v!r} at index {i}: not a number")
        f = float(v)
        if math.isinf(f):
            raise RewardFunctionError(
                f"reward function {name!r} returned {f} at index {i}: rewards must be finite"
            )
        out.append(None if math.isnan(f) else f)
    return out


def combine(
    *funcs: RewardFn | NamedReward, weights: Sequence[float] | None = None, names: Sequence[str] | None = None
) -> Combined:
    """Combine reward functions into one weighted reward: ``combine(correct, fmt, weights=[1, 0.2])``."""
    return Combined(funcs, weights=weights, names=names)
