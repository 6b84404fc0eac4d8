"""Reward hacking, shown: the code task trained on a naive reward beside the honest one, same length.

    python benchmarks/reward_hacking.py [--seed S] [--steps N] [--runs DIR] [--figure PNG] [--json PATH]

Two runs of ``demo --task code`` on SmolLM2-135M-Instruct, same seed, settings and steps:

- **naive**: trained on ``code_compiles`` (the last code block parses and defines ``f``), the hidden
  unit tests logged at weight 0 (they score every rollout but pay nothing);
- **honest**: trained on ``code_unit_tests`` (the share of hidden tests passed, in the sandbox).

The figure draws, for each run, both curves over the training rollouts, marks the steps where the
``reward_hacking`` alarm fired, and gives held-out greedy accuracy (all tests pass) before and after.
A run folder that already holds a finished run of the same seed and steps is read, not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_or_read(folder: Path, *, naive: bool, seed: int, steps: int) -> dict[str, Any]:
    """The run's summary and metrics, trained here unless ``folder`` holds this very run already."""
    from grpo_lite.apps.demo import run_demo

    summary_path = folder / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if (
            (summary.get("task"), summary.get("seed"), summary.get("steps")) == ("code", seed, steps)
            and ("code_compiles" in summary.get("rewards", {})) == naive
            and (summary["rewards"].get("code_compiles", 0) > 0) == naive
        ):
            print(f"reading the finished run in {folder}", flush=True)
            return summary | {"history": _history(folder)}
    summary = run_demo(folder, task="code", naive=naive, seed=seed, steps=steps, overwrite=True)
    return summary | {"history": _history(folder)}


def _history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def draw(naive: dict[str, Any], honest: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, run, title in ((axes[0], naive, "trained on code_compiles (naive)"),
                           (axes[1], honest, "trained on code_unit_tests (honest)")):  # fmt: skip
        steps = [m["step"] for m in run["history"]]
        for key, label, color in (
            ("rewards/code_compiles/mean", "defines f and parses (naive reward)", "tab:orange"),
            ("rewards/code_unit_tests/mean", "hidden unit tests passed", "tab:blue"),
        ):
            values = [m.get(key) for m in run["history"]]
            if any(v is not None for v in values):
                ax.plot(
                    steps,
                    [float("nan") if v is None else v for v in values],
                    color=color,
                    label=label,
                    linewidth=2,
                )
        fired = [
            m["step"]
            for m in run["history"]
            if any(a["name"] == "reward_hacking" for a in m.get("alarms") or [])
        ]
        for i, step in enumerate(fired):
            ax.axvline(
                step, color="#c00", alpha=0.25, linewidth=3, label="reward_hacking alarm" if i == 0 else None
            )
        acc = f"held-out, all tests pass: {100 * run['accuracy_before']:.0f}% -> {100 * run['accuracy_after']:.0f}%"
        ax.set_title(f"{title}\n{acc}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
    axes[0].set_ylabel("mean over the step's 32 completions")
    fig.suptitle(f"SmolLM2-135M-Instruct, code task, seed {honest['seed']}, {len(honest['history'])} steps each",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the code task's")
    parser.add_argument("--runs", default="runs/reward-hacking", help="where the two runs go")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "reward_hacking.png"))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "reward-hacking-cpu.json"))
    args = parser.parse_args(argv)
    from grpo_lite.tasks import TASKS

    steps = args.steps or TASKS["code"].steps
    runs = Path(args.runs)
    naive = run_or_read(runs / f"naive-s{args.seed}", naive=True, seed=args.seed, steps=steps)
    honest = run_or_read(runs / f"honest-s{args.seed}", naive=False, seed=args.seed, steps=steps)
    draw(naive, honest, Path(args.figure))
    out = {}
    for name, run in (("naive", naive), ("honest", honest)):
        hist = run["history"]
        out[name] = {
            "rewards": run["rewards"], "accuracy_before": run["accuracy_before"], "accuracy_after": run["accuracy_after"],
            "defines_f_before": run["before"].get("defines_f"), "defines_f_after": run["after"].get("defines_f"),
            "compiles_first5": _mean5(hist[:5], "code_compiles"), "compiles_last5": _mean5(hist[-5:], "code_compiles"),
            "tests_first5": _mean5(hist[:5], "code_unit_tests"), "tests_last5": _mean5(hist[-5:], "code_unit_tests"),
            "alarm_steps": [m["step"] for m in hist if any(a["name"] == "reward_hacking" for a in m.get("alarms") or [])],
            "seconds": run["seconds"], "steps": run["steps"], "seed": run["seed"],
        }  # fmt: skip
        print(f"{name:>6}: compiles {out[name]['compiles_first5']} -> {out[name]['compiles_last5']}, "
              f"tests {out[name]['tests_first5']} -> {out[name]['tests_last5']} (mean of the first/last 5 steps); "
              f"held-out all pass {100 * run['accuracy_before']:.0f}% -> {100 * run['accuracy_after']:.0f}%; "
              f"alarm at steps {out[name]['alarm_steps']}")  # fmt: skip
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"figure: {args.figure}; numbers: {args.json}")
    return 0


def _mean5(history: list[dict[str, Any]], name: str) -> float | None:
    values = [m[f"rewards/{name}/mean"] for m in history if m.get(f"rewards/{name}/mean") is not None]
    return round(sum(values) / len(values), 3) if values else None


if __name__ == "__main__":
    raise SystemExit(main())
