"""The reporting half of ``compare_trl.py``: per-trainer summaries of the raw runs, the learning
check's per-seed figures (equal steps and equal wall time) and the printed table."""

from __future__ import annotations

import statistics
from typing import Any

from runners import WARMUP, step_parts

SMOLLM2 = "smollm2-135m-instruct"


def summarize(runs: list[dict[str, Any]], last: int) -> dict[str, Any]:
    """Over several runs of one trainer: the median per-step seconds over all timed steps, medians of
    the per-run peak memory and tokens/s, per-part medians, and the mean reward of the first step
    and of the last ``last`` steps."""
    per_run = [step_parts(r) for r in runs]
    step_times = [
        b - a
        for r in runs
        for a, b in zip(r["step_ends"][WARMUP:], r["step_ends"][WARMUP + 1 :], strict=False)
    ]
    parts = runs[0]["parts"].keys()
    return {
        "step_seconds_median": statistics.median(step_times),
        "parts_median": {
            k: statistics.median(x for r in runs for x in r["parts"][k][WARMUP:]) for k in parts
        },
        "peak_mem_mb": statistics.median(p["peak_mem_mb"] for p in per_run),
        "gen_tokens_per_sec": statistics.median(p["gen_tokens_per_sec"] for p in per_run),
        "first_reward_mean": statistics.fmean(r["rewards"][0] for r in runs),
        "final_reward_mean": statistics.fmean(x for r in runs for x in r["rewards"][-last:]),
    }


def learned_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the learning check's seeds: mean held-out greedy accuracy of the base and of the trained
    policy (and each seed's), and the mean reward of the first and of the last 5 steps."""
    if not runs:
        return {}
    k = min(5, len(runs[0]["rewards"]))
    learned = {
        "demo_accuracy_base": statistics.fmean(r["after"]["base"] for r in runs),
        "demo_accuracy_trained": statistics.fmean(r["after"]["trained"] for r in runs),
        "demo_accuracy_trained_per_seed": [r["after"]["trained"] for r in runs],
        "demo_reward_first": statistics.fmean(x for r in runs for x in r["rewards"][:k]),
        "demo_reward_last": statistics.fmean(x for r in runs for x in r["rewards"][-k:]),
    }
    if all("step_ends" in r for r in runs):
        learned["demo_training_seconds_per_seed"] = [r["step_ends"][-1] - r["step_ends"][0] for r in runs]
    if all(r.get("at_seconds") for r in runs):  # TRL at grpo-lite's training time, seed by seed
        at = [r["at_seconds"] for r in runs]
        learned |= {
            "demo_accuracy_at_equal_time": statistics.fmean(x["after"]["trained"] for x in at),
            "demo_accuracy_at_equal_time_per_seed": [x["after"]["trained"] for x in at],
            "demo_steps_at_equal_time_per_seed": [x["step"] for x in at],
        }
    return learned


def table(r: dict[str, Any]) -> str:
    o, t = r["grpo_lite"], r["trl"]
    rows = [
        ("median seconds / step", "step_seconds_median", "{:.2f}"),
        ("- generating", "generate", "{:.2f}"),
        ("- no-grad log-prob passes (reference)", "reference", "{:.2f}"),
        ("- policy forward + backward, scoring, logging", "policy", "{:.2f}"),
        ("- optimizer step", "optimizer", "{:.2f}"),
        ("peak memory (MB)", "peak_mem_mb", "{:.0f}"),
        ("generated tokens / s", "gen_tokens_per_sec", "{:.0f}"),
        ("mean reward, first step", "first_reward_mean", "{:.3f}"),
        (f"mean reward, last {r['last_steps_averaged']} steps", "final_reward_mean", "{:.3f}"),
    ]
    if "demo_accuracy_trained" in o:
        n, seeds = r["learning_steps"], r["learning_seeds"]
        rows += [
            ("demo task: held-out greedy accuracy, base", "demo_accuracy_base", "{:.1%}"),
            (
                f"demo task: accuracy after {n} steps (mean over {seeds} seed{'s' if seeds > 1 else ''})",
                "demo_accuracy_trained",
                "{:.1%}",
            ),
            ("demo task: mean reward, first 5 steps", "demo_reward_first", "{:.3f}"),
            ("demo task: mean reward, last 5 steps", "demo_reward_last", "{:.3f}"),
        ]
    lines = [f"machine: {r['machine']}", f"model: {r.get('model', 'bench')}", "",
             "| | grpo-lite | TRL | grpo-lite / TRL |", "|---|---|---|---|"]  # fmt: skip
    for label, key, fmt in rows:
        a, b = (m.get(key, m["parts_median"].get(key)) for m in (o, t))
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    if "demo_accuracy_trained_per_seed" in o:
        ours, theirs = (", ".join(f"{x:.1%}" for x in m["demo_accuracy_trained_per_seed"]) for m in (o, t))
        lines += ["", f"demo task accuracy per seed: grpo-lite {ours}; TRL {theirs}"
                  " (one seed varies by about +-10 points; the full run averages 3)"]  # fmt: skip
    if "demo_accuracy_at_equal_time" in t:
        at = ", ".join(f"{x:.1%} at step {s}" for x, s in zip(t["demo_accuracy_at_equal_time_per_seed"],
                                                               t["demo_steps_at_equal_time_per_seed"], strict=True))  # fmt: skip
        lines += [f"at equal wall time (grpo-lite's {r['learning_steps']} steps: "
                  + ", ".join(f"{x:.0f} s" for x in o["demo_training_seconds_per_seed"])
                  + f"): TRL {t['demo_accuracy_at_equal_time']:.1%} ({at}) vs grpo-lite {o['demo_accuracy_trained']:.1%}"]  # fmt: skip
    if "grpo_lite_before" in r:
        b, ratios = r["grpo_lite_before"], r["before_ratios"]
        lines += ["", f"grpo-lite's earlier rollout path (generate on the adapter model): "
                  f"{b['step_seconds_median']:.2f} s/step, {b['parts_median']['generate']:.2f} s generating, "
                  f"{b['gen_tokens_per_sec']:.0f} tokens/s; now / then: step time {ratios['step_time']:.2f}, "
                  f"tokens/s {ratios['gen_tokens_per_sec']:.2f}"]  # fmt: skip
    step_target, mem_target = (0.30, 0.60) if r.get("model") == SMOLLM2 else (0.55, 1.00)
    lines += ["", f"step_time_ratio = {r['step_time_ratio']:.2f} (target <= {step_target:.2f})",
              f"peak_mem_ratio  = {r['peak_mem_ratio']:.2f} (target <= {mem_target:.2f})"]  # fmt: skip
    return "\n".join(lines)
