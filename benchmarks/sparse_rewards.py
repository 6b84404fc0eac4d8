"""Where the reward is sparse: the reasoning task on SmolLM2-135M-Instruct, one mechanism at a time.

    python benchmarks/sparse_rewards.py [--variants today,dynamic,rows,shipped] [--seeds 0,1,2]
                                        [--runs-dir runs/sparse] [--json PATH]

Each variant is ``demo --task reasoning`` (the same 60 held-out two-step problems, greedy, the right
number in ``<answer>``) with the settings below, each a fresh run folder, one after another:

- ``today``: the task as it was before this round: no dynamic sampling, no warm start, 40 steps;
- ``dynamic``: + dynamic sampling (at most 1 further draw a step), 30 steps;
- ``rows``: + the 120 one-step problems beside the 240 two-step ones, easiest first (the curriculum);
- ``warm``: the warm start on the data's worked solutions (12 steps of 8) without dynamic sampling;
- ``rows+warm``: the one-step problems, dynamic sampling and the warm start;
- ``shipped``: dynamic sampling + the warm start: the task's default.

``--trl-seconds S``: also TRL's GRPOTrainer on the shipped task's rows and settings (without what it
cannot carry: dynamic sampling, the warm start, stop strings), trained for S seconds (grpo-lite's
warm start + training time, equal wall time), then the same held-out measurement.

Per run: held-out accuracy and format before/after, seconds (both evaluations, the warm start and
training), further draws made, steps without an update, and the warm start's record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runners import machine, versions  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "today": {"steps": 40, "dynamic_sampling": False, "warm_start": "off"},
    "dynamic": {"steps": 30, "dynamic_sampling": True, "warm_start": "off"},
    "rows": {
        "one_step_rows": True,
        "prompt_order": "curriculum",
        "steps": 30,
        "dynamic_sampling": True,
        "warm_start": "off",
    },
    "rows+warm": {"one_step_rows": True, "steps": 30, "dynamic_sampling": True, "warm_start": "solutions"},
    "warm": {"steps": 30, "dynamic_sampling": False, "warm_start": "solutions"},
    "shipped": {},  # the task's own settings: dynamic sampling + the warm start
}
SIGNAL_OFF = {"dynamic_sampling": False, "warm_start": "off"}  # what TRL cannot carry (scale-out says so)


def trl_at_equal_time(seconds: float, seed: int, out: Path) -> dict[str, Any]:
    """TRL's GRPOTrainer on the shipped task's rows and GRPO settings (no dynamic sampling, no warm
    start: it has neither; stop strings dropped: it stops at EOS only), trained for ``seconds`` (the
    grpo-lite run's warm start + training time), then the same held-out measurement."""
    from runners import run_trl

    from grpo_lite.evaluate import held_out_scores

    demo = variant_run("shipped", seed, out)
    cfg = demo.cfg.replace(**SIGNAL_OFF)
    skip = ("model", "output_dir", "max_steps")
    settings = {f: getattr(cfg, f) for f in cfg.to_dict() if f not in skip}
    funcs, weights = demo.reward_funcs, demo.reward_weights

    def weighted(prompts: Any, completions: Any, **columns: Any) -> list[float]:  # TRL gets one function
        parts = [f(prompts, completions, **columns) for f in funcs]
        return [
            sum(w * (v or 0.0) for w, v in zip(weights, vs, strict=True)) for vs in zip(*parts, strict=True)
        ]

    def measure(model: Any, tokenizer: Any) -> dict[str, float]:
        return held_out_scores(model, tokenizer, demo.eval_rows, demo.measures, max_new_tokens=cfg.max_new_tokens,
                               stop_strings=cfg.stop_strings)[0]  # fmt: skip

    start = time.perf_counter()
    result = run_trl(cfg.model, settings, demo.train_rows, weighted, 400, out, after=measure, at_seconds=seconds,
                     stop_at_seconds=True)  # fmt: skip
    return {"variant": "trl", "seed": seed, "trained_seconds": seconds, "at": result["at_seconds"],
            "wall_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def variant_run(name: str, seed: int, out: Path) -> Any:
    """The reasoning demo's run with variant ``name``'s changes."""
    from grpo_lite.apps.demo import demo_run
    from grpo_lite.tasks.reasoning import one_step_rows

    v = dict(VARIANTS[name])
    easier, steps = v.pop("one_step_rows", False), v.pop("steps", None)
    demo = demo_run("smollm2-135m-instruct", out, task="reasoning", seed=seed, steps=steps, **v)
    if easier:  # the 120 one-step problems beside the 240 two-step ones (difficulty 1 and 2)
        demo = dataclasses.replace(demo, train_rows=demo.train_rows + one_step_rows())
    return demo


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/sparse"))
    p.add_argument("--json", type=Path, default=None, help="written after every run")
    p.add_argument("--trl-seconds", type=float, default=0,
                   help="also TRL on the shipped task for this many training seconds (0: not run)")  # fmt: skip
    a = p.parse_args(argv)
    from grpo_lite.apps.demo import train_and_measure

    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d"),
                              "runs": []}  # fmt: skip
    for seed in [int(s) for s in a.seeds.split(",")]:
        for name in [n for n in a.variants.split(",") if n]:
            if name not in VARIANTS:
                sys.exit(f"--variants: unknown {name!r}; variants: {', '.join(VARIANTS)}")
            out = a.runs_dir / f"{name}-seed{seed}"
            start = time.perf_counter()
            demo = variant_run(name, seed, out)
            summary = train_and_measure(demo, out, overwrite=True, start=start)
            row = {"variant": name, "seed": seed, "train_rows": len(demo.train_rows)} | summary
            result["runs"].append(row)
            print(f"{name} seed {seed}: {100 * summary['accuracy_before']:.0f}% -> "
                  f"{100 * summary['accuracy_after']:.0f}% in {summary['seconds']:.0f} s, "
                  f"{summary['extra_rounds']} further draws", flush=True)  # fmt: skip
            if a.json:
                a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        if a.trl_seconds:
            result["runs"].append(trl_at_equal_time(a.trl_seconds, seed, a.runs_dir / f"trl-seed{seed}"))
            print(f"trl seed {seed}: {result['runs'][-1]['at']}", flush=True)
            if a.json:
                a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
