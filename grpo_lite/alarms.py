"""Alarms over the stream of step metrics: each rule looks at the history and may fire once per step.

Pure functions over lists of metric dicts, so they are tested on synthetic streams.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

History = list[dict[str, Any]]
WINDOW = 5  # steps compared against the steps before them


@dataclass(frozen=True)
class Alarm:
    name: str
    step: int
    message: str
    suggestion: str
    reward: str = ""  # the reward function it is about, if any


def _mean(history: History, key: str) -> float:
    values = [m[key] for m in history if isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
    return statistics.fmean(values) if values else math.nan


def _reward_keys(history: History, words: tuple[str, ...]) -> list[str]:
    keys = {k for m in history for k in m if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(k for k in keys if any(w in k.split("/")[1] for w in words))


def format_without_accuracy(history: History) -> Alarm | None:
    """Format reward rising while accuracy stays flat: the model learns the tags, not the task."""
    if len(history) < 2 * WINDOW:
        return None
    fmt = _reward_keys(history, ("format", "tag"))
    acc = _reward_keys(history, ("accuracy", "correct", "exact"))
    before, now = history[-2 * WINDOW : -WINDOW], history[-WINDOW:]
    for f in fmt:
        rose = _mean(now, f) - _mean(before, f) > 0.1
        flat = all(abs(_mean(now, a) - _mean(before, a)) < 0.02 for a in acc) if acc else False
        if rose and flat:
            return Alarm("format_gaming", history[-1]["step"],
                         f"{f.split('/')[1]} is rising while accuracy stays flat",
                         "gate format on correctness (require_correct=True) or lower the format weight",
                         reward=f.split("/")[1])  # fmt: skip
    return None


def proxy_without_tests(history: History) -> Alarm | None:
    """A proxy for working code ("it compiles", "it runs") paid to most completions while few pass the
    unit tests (the proxy's mean over the last steps >= 0.8, the tests' <= a quarter of it), or the
    proxy rising while the tests' pass rate does not follow (rises by less than a quarter as much):
    the model games the proxy. The tests' reward need not train: logged at weight 0 it shows the truth."""
    if len(history) < 2 * WINDOW:
        return None
    proxies = _reward_keys(history, ("compiles", "runs", "prints"))
    tests = _reward_keys(history, ("unit_tests", "tests_passed"))
    before, now = history[-2 * WINDOW : -WINDOW], history[-WINDOW:]
    for p in proxies:
        rise = _mean(now, p) - _mean(before, p)
        lagging = rise > 0.1 and all(_mean(now, t) - _mean(before, t) < 0.25 * rise for t in tests)
        apart = _mean(now, p) >= 0.8 and all(_mean(now, t) <= 0.25 * _mean(now, p) for t in tests)
        if tests and (lagging or apart):
            name = p.split("/")[1]
            return Alarm("reward_hacking", history[-1]["step"],
                         f"{name} pays {100 * _mean(now, p):.0f}% while the unit tests pass "
                         f"{100 * max(_mean(now, t) for t in tests):.0f}%: the proxy is gamed",
                         "train on what the tests check (code_unit_tests), not on a proxy",
                         reward=name)  # fmt: skip
    return None


def no_learning_signal(history: History) -> Alarm | None:
    """Most groups have all-equal rewards: their advantages are 0 and nothing is learned."""
    recent = history[-3:]
    if len(recent) == 3 and all(m.get("equal_reward_groups", 0) > 0.75 for m in recent):
        flat = sorted({k.split("/")[1] for m in recent for k, v in m.items()
                       if k.startswith("rewards/") and k.endswith("/std") and v == 0
                       and all(n.get(k, 1) == 0 for n in recent)})  # fmt: skip
        said = f"; {', '.join(flat)} gave every completion the same value" if flat else ""
        return Alarm("no_signal", history[-1]["step"],
                     f"{100 * recent[-1]['equal_reward_groups']:.0f}% of groups gave all-equal rewards (no learning "
                     f"signal){said}",
                     "a warm start now (the dashboard's button, trainer.steering.warm_start('own' / 'solutions')), "
                     "raise the temperature, use easier prompts, add a partial-credit reward, or (in a new run "
                     "or a branch) dynamic_sampling=True, rest_tied_after; "
                     "`python -m grpo_lite scan` says which")  # fmt: skip
    if len(recent) == 3 and all(
        m.get("dynamic/groups_kept", 1) == 0 for m in recent
    ):  # dynamic: 3 steps empty
        return Alarm("no_signal", history[-1]["step"], "dynamic sampling found no group with signal in 3 steps "
                     "(no update made)", "see `python -m grpo_lite scan`: easier rows, a partial-credit reward, "
                     "a warm start, or more max_extra_rounds")  # fmt: skip
    return None


def entropy_collapse(history: History) -> Alarm | None:
    """Policy entropy fell to a small fraction of where it started: sampling has stopped exploring."""
    if len(history) < WINDOW + 1:
        return None
    start, now = _mean(history[:3], "entropy"), history[-1].get("entropy")
    if (
        isinstance(now, float)
        and math.isfinite(now)
        and math.isfinite(start)
        and start > 0
        and now < 0.1 * start
    ):
        return Alarm("entropy_collapse", history[-1]["step"],
                     f"entropy fell from {start:.3g} to {now:.3g}",
                     "raise the temperature, lower the learning rate, or add a KL penalty (beta)")  # fmt: skip
    return None


def length_explosion(history: History) -> Alarm | None:
    """Completions hit max_new_tokens more and more: rambling, or answers cut off before the end."""
    m = history[-1]
    if m.get("truncated_frac", 0) > 0.5:
        return Alarm("truncation", m["step"],
                     f"{100 * m['truncated_frac']:.0f}% of completions hit max_new_tokens",
                     "raise max_new_tokens or add overlong_penalty")  # fmt: skip
    if len(history) > WINDOW and _mean(history[-WINDOW:], "completion_len_mean") > 2.5 * _mean(
        history[:3], "completion_len_mean"
    ):
        return Alarm("length_growth", m["step"], "mean completion length grew more than 2.5x since the start",
                     "check what the reward pays for length; consider overlong_penalty")  # fmt: skip
    return None


def kl_runaway(history: History) -> Alarm | None:
    """KL to the reference keeps climbing: the policy drifts far from the base model."""
    m = history[-1]
    kl = m.get("kl", 0.0) or 0.0
    earlier = _mean(history[:-1], "kl") if len(history) > 1 else math.nan
    if kl > 1.0 or (math.isfinite(earlier) and earlier > 0 and kl > 10 * earlier and kl > 0.1):
        return Alarm(
            "kl_runaway",
            m["step"],
            f"KL to the reference is {kl:.3g}",
            "lower the learning rate or raise beta",
        )
    return None


def reward_failing(history: History) -> Alarm | None:
    """A reward function raised on the latest batch (it scored None and training went on)."""
    m = history[-1]
    errors = m.get("reward_error_tracebacks") or {}
    if errors:
        name, tb = next(iter(errors.items()))
        last_line = tb.strip().splitlines()[-1] if tb.strip() else "error"
        return Alarm("reward_error", m["step"], f"reward {name!r} failed: {last_line}",
                     "fix it in the reward editor; until then it scores None", reward=name)  # fmt: skip
    return None


def tool_trouble(history: History) -> Alarm | None:
    """Tool calls explode (3 steps near ``max_tool_calls``, or 3x the first steps' rate) or every call
    fails (3 steps in a row): the model loops on the tool, or cannot use it."""
    recent = history[-3:]
    found = [m.get("tools/calls_per_completion") for m in recent]
    if len(recent) < 3 or not all(isinstance(c, (int, float)) for c in found):
        return None
    calls = [float(c) for c in found if c is not None]
    m = history[-1]
    if all(c > 0 and mm.get("tools/failure_rate") == 1.0 for c, mm in zip(calls, recent, strict=True)):
        return Alarm("tool_failures", m["step"], "every tool call failed for 3 steps",
                     "read the tool answers in the completions panel; check the prompt's tool instructions")  # fmt: skip
    limit = m.get("max_tool_calls") or 0
    start = _mean(history[:3], "tools/calls_per_completion")
    near_limit = limit > 0 and all(c >= 0.8 * limit for c in calls)
    grew = (
        len(history) > WINDOW and math.isfinite(start) and calls[-1] >= 1 and calls[-1] > 3 * max(start, 1e-9)
    )
    if near_limit or grew:
        return Alarm("tool_explosion", m["step"], f"{calls[-1]:.2g} tool calls per completion"
                     + (f" (max_tool_calls={limit})" if near_limit else f", {calls[-1] / max(start, 1e-9):.1f}x the start"),
                     "lower max_tool_calls, or check what the reward pays for calls")  # fmt: skip
    return None


RULES: list[Callable[[History], Alarm | None]] = [
    tool_trouble,
    format_without_accuracy,
    proxy_without_tests,
    no_learning_signal,
    entropy_collapse,
    length_explosion,
    kl_runaway,
    reward_failing,
]


def check_alarms(history: History) -> list[Alarm]:
    """The alarms that fire on the latest step."""
    if not history:
        return []
    return [alarm for rule in RULES if (alarm := rule(history)) is not None]


def alarms_of(metrics: dict[str, Any]) -> list[Alarm]:
    """The alarms a step's metrics carry (the trainer checks once per step, into ``metrics["alarms"]``)."""
    return [Alarm(**a) for a in metrics.get("alarms") or []]


@dataclass(frozen=True)
class Remedy:
    """The obvious fix for an alarm, as a steering request (so it is checked and recorded like any other)."""

    label: str
    request: Callable[[Any], None]  # called with trainer.steering


def remedy_for(
    alarm: Alarm, *, lr: float, temperature: float, max_new_tokens: int, max_tool_calls: int = 0,
    warm_start: str | None = None,
) -> Remedy | None:  # fmt: skip
    """A one-click remedy for alarms that have an obvious one; None for the others. ``warm_start``: the
    warm start the run can make (``"solutions"`` when its data has worked solutions, else ``"own"``),
    offered for ``no_signal``; without it, a higher temperature is."""
    if alarm.name == "no_signal" and warm_start:
        where = (
            "the data's worked solutions" if warm_start == "solutions" else "the model's own right answers"
        )
        return Remedy(f"warm start on {where}", lambda s: s.warm_start(warm_start))
    if alarm.name in ("format_gaming", "reward_hacking", "reward_error") and alarm.reward:
        name = alarm.reward
        return Remedy(f"set {name} weight to 0", lambda s: s.set_reward_weights({name: 0.0}))
    if alarm.name == "kl_runaway":
        return Remedy(
            f"halve the learning rate ({lr:.2g} -> {lr / 2:.2g})", lambda s: s.set_learning_rate(lr / 2)
        )
    if alarm.name in ("entropy_collapse", "no_signal") and temperature < 2.0:
        t = round(min(temperature + 0.2, 2.0), 2)
        return Remedy(f"raise temperature to {t}", lambda s: s.set_sampling(temperature=t))
    if alarm.name == "tool_explosion" and max_tool_calls > 1:
        k = max_tool_calls // 2
        return Remedy(f"lower max_tool_calls to {k}", lambda s: s.set_sampling(max_tool_calls=k))
    if alarm.name == "truncation":
        n = 2 * max_new_tokens
        return Remedy(f"raise max_new_tokens to {n}", lambda s: s.set_sampling(max_new_tokens=n))
    return None
