"""The pre-flight scan: will GRPO find signal on this data, with this model, rewards and settings?

``scan(trainer, prompts=N)`` (``GRPOTrainer.scan``, ``python -m grpo_lite scan``) rolls out the first
N prompts of the run's stream, G completions each, with the run's sampling settings and rewards, and
reports: per reward function the mean and spread; the share of groups that tie, split into all at
the lowest reward seen, all at the highest, and other ties; truncation; completion lengths; the
expected number of groups with signal per step (with and without dynamic sampling); and one
verdict — too hard, learnable, too easy — with what to change. The run is left as it was: the
prompt stream, the difficulty record and the random state are put back afterwards, so a scan
before ``train()`` changes nothing in the run.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from grpo_lite.draw import draw
from grpo_lite.dynamic import signal_groups
from grpo_lite.run import rng_state, set_rng_state
from grpo_lite.run.atomic import write_text

LEARNABLE = 0.25  # groups with signal at or above this share: a plain step of B prompts has some


def scan(trainer: Any, *, prompts: int = 32, progress: bool = True, write: bool = True) -> dict[str, Any]:
    """Scan the next ``prompts`` prompts of ``trainer``'s stream (see the module docstring); the report
    also goes to ``RUN/scan.json`` (``write``)."""
    from tqdm.auto import tqdm

    cfg, t0 = trainer.cfg, time.perf_counter()
    saved_data, saved_rng = trainer.data.state_dict(), rng_state()
    draws: list[Any] = []
    try:
        with tqdm(total=prompts, desc="scan", unit="prompt", disable=not progress) as bar:
            done = 0
            while done < prompts:
                n = min(prompts - done, cfg.prompts_per_step * 2)
                draws.append(draw(trainer, n))
                done += n
                bar.update(n)
    finally:
        trainer.data.load_state_dict(saved_data)
        set_rng_state(saved_rng)
    report = summarize(draws, group_size=cfg.group_size, prompts_per_step=cfg.prompts_per_step,
                       max_extra_rounds=cfg.max_extra_rounds, dynamic=cfg.dynamic_sampling,
                       temperature=trainer.sampling.temperature)  # fmt: skip
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if write:
        write_text(
            Path(trainer.run_dir) / "scan.json", json.dumps(report, indent=2) + "\n"
        )  # whole or absent
    return report


def summarize(
    draws: list[Any],
    *,
    group_size: int,
    prompts_per_step: int,
    max_extra_rounds: int,
    dynamic: bool,
    temperature: float,
) -> dict[str, Any]:
    """The scan's figures from scored draws (``dynamic.Draw``); see :func:`verdict`."""
    G = group_size
    rewards = torch.cat([d.rewards for d in draws])  # (N,)
    groups = rewards.view(-1, G)
    signal = signal_groups(rewards, G)
    valid = rewards[~torch.isnan(rewards)]
    lo, hi = (float(valid.min()), float(valid.max())) if len(valid) else (math.nan, math.nan)
    tied = ~signal
    value = torch.where(torch.isnan(groups), torch.full_like(groups, -torch.inf), groups).amax(
        1
    )  # a tie's value
    at_low = tied & (value == lo)
    at_high = tied & (value == hi) & ~at_low
    n = len(groups)
    per_function: dict[str, dict[str, float]] = {}
    for name in draws[0].scores.per_function:
        got = [v for d in draws for v in d.scores.per_function[name] if v is not None]
        per_function[name] = {"mean": statistics.fmean(got) if got else math.nan,
                              "std": statistics.stdev(got) if len(got) > 1 else 0.0}  # fmt: skip
    lengths = torch.cat([d.rollout.lengths.float().cpu() for d in draws])
    share = float(signal.float().mean())
    plain = share * prompts_per_step
    report: dict[str, Any] = {
        "prompts": n,
        "group_size": G,
        "temperature": temperature,
        "rewards": per_function,
        "reward": {"mean": float(valid.mean()) if len(valid) else math.nan, "min": lo, "max": hi},
        "groups_with_signal": share,
        "tied_all_lowest": float(at_low.float().mean()),
        "tied_all_highest": float(at_high.float().mean()),
        "tied_other": float((tied & ~at_low & ~at_high).float().mean()),
        "truncated": float(torch.cat([d.rollout.truncated.float().cpu() for d in draws]).mean()),
        "length": {"mean": float(lengths.mean()), "max": float(lengths.max())},
        "signal_groups_per_step": plain,
        "signal_groups_per_step_dynamic": min(prompts_per_step, plain * (1 + max_extra_rounds)),
    }
    report["verdict"], report["advice"] = verdict(report, dynamic=dynamic)
    return report


def verdict(r: dict[str, Any], *, dynamic: bool) -> tuple[str, list[str]]:
    """``too hard`` / ``learnable`` / ``too easy``, and what to change."""
    if r["groups_with_signal"] >= LEARNABLE:
        advice = (
            []
            if r["truncated"] < 0.3
            else ["many completions hit max_new_tokens: raise it or reward brevity"]
        )
        return "learnable", advice
    if r["tied_all_highest"] > r["tied_all_lowest"]:
        return "too easy", [
            "harder rows (or a stricter reward)",
            "fewer steps on these rows: rest_tied_after",
        ]
    advice = [
        "easier rows first: a 'difficulty' column and prompt_order='curriculum', or rest_tied_after",
        "a partial-credit reward (a share of tests, of fields, a format part gated on the answer)",
        f"a larger group_size (now {r['group_size']}) or a different temperature (now {r['temperature']:g})",
        "warm_start='own' (its right answers first) or 'solutions' (a worked-answer column)",
    ]
    if not dynamic:
        advice.insert(0, "dynamic_sampling=True: draw more prompts until the step has signal")
    return "too hard", advice


def report_text(r: dict[str, Any]) -> str:
    """The report as a few lines, the verdict last."""
    lines = [
        f"scan of {r['prompts']} prompts x {r['group_size']} completions (temperature {r['temperature']:g}):"
    ]
    for name, v in r["rewards"].items():
        lines.append(f"  {name}: mean {v['mean']:.3f}, std {v['std']:.3f}")
    lines += [
        f"  groups with signal {100 * r['groups_with_signal']:.0f}%; tied all lowest "
        f"{100 * r['tied_all_lowest']:.0f}%, all highest {100 * r['tied_all_highest']:.0f}%, other "
        f"{100 * r['tied_other']:.0f}%",
        f"  truncated {100 * r['truncated']:.0f}%; length mean {r['length']['mean']:.1f}, max {r['length']['max']:.0f}",
        f"  groups with signal per step: {r['signal_groups_per_step']:.1f} (dynamic sampling: "
        f"{r['signal_groups_per_step_dynamic']:.1f})",
        f"verdict: {r['verdict']}" + (f" -- try: {'; '.join(r['advice'])}" if r["advice"] else ""),
    ]
    return "\n".join(lines)
