"""Where the reward is sparse: the reasoning task on SmolLM2-135M-Instruct, one mechanism at a time.

    python benchmarks/sparse_rewards.py [--variants today,dynamic,rows,shipped] [--seeds 0,1,2]
                                        [--runs-dir runs/sparse] [--json PATH]

Each variant is ``demo --task reasoning`` (the same 60 held-out two-step problems, greedy, the right
number in ``<answer>``) with the settings below, each a fresh run folder, one after another:

- ``today``: the task as it was before dynamic sampling: the 240 two-step training problems only,
  no dynamic sampling, no warm start, 40 steps;
- ``dynamic``: + dynamic sampling (at most 1 further draw a step), 30 steps;
- ``rows``: + the 120 one-step problems beside the two-step ones (the easier rung), 30 steps;
- ``shipped``: + the warm start on the data's worked solutions (12 steps of 8): the task's default.

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
    "today": {"two_step_only": True, "steps": 40, "dynamic_sampling": False, "warm_start": "off"},
    "dynamic": {"two_step_only": True, "steps": 30, "dynamic_sampling": True, "warm_start": "off"},
    "rows": {"two_step_only": False, "steps": 30, "dynamic_sampling": True, "warm_start": "off"},
    "shipped": {},  # the task's own settings
}


def variant_run(name: str, seed: int, out: Path) -> Any:
    """The reasoning demo's run with variant ``name``'s changes."""
    from grpo_lite.demo import demo_run

    v = dict(VARIANTS[name])
    two_step_only, steps = v.pop("two_step_only", False), v.pop("steps", None)
    demo = demo_run("smollm2-135m-instruct", out, task="reasoning", seed=seed, steps=steps, **v)
    if two_step_only:
        demo = dataclasses.replace(demo, train_rows=[r for r in demo.train_rows if r["difficulty"] == 2])
    return demo


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/sparse"))
    p.add_argument("--json", type=Path, default=None, help="written after every run")
    a = p.parse_args(argv)
    from grpo_lite.demo import train_and_measure

    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d"),
                              "runs": []}  # fmt: skip
    for seed in [int(s) for s in a.seeds.split(",")]:
        for name in a.variants.split(","):
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
    return result


if __name__ == "__main__":
    main()
