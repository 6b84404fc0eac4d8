"""Where a grpo-lite step's time and memory go on SmolLM2-135M-Instruct (the demo's task and settings).

    python benchmarks/profile_step.py [--task arithmetic] [--steps 6] [--layouts plain,packed] [--json PATH]

Each layout (``pack_prompts`` off / on) trains ``--steps`` steps of the demo in a fresh process, with
the trainer's own pieces wrapped by timers (instrumentation only, nothing computed changes): the
rollout, scoring, the no-grad log-prob passes, the policy forward (log-probs and loss) and backward,
the optimizer step. Memory per part: the process's resident-set high-water mark while the part runs
(the kernel's ``VmHWM``, reset at each part's start through ``/proc/self/clear_refs``), so the largest
of them is the step's peak and the part that sets it is named; plus the resident set after imports,
after loading the 4-bit policy, and after the first rollout (which builds the merged rollout copy).
Per part: the median over the steps after the first (warm-up); memory: the largest over all steps.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("generate", "score", "no_grad_logps", "forward", "backward", "optimizer")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


class Parts:
    """Seconds and the RSS high-water mark of each named part, per step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, dict[str, float]]] = [{}]

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        _reset_peak()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds, peak = time.perf_counter() - t0, _status_mb("VmHWM")
            cur = self.steps[-1].setdefault(name, {"seconds": 0.0, "peak_rss_mb": 0.0})
            cur["seconds"] += seconds
            cur["peak_rss_mb"] = max(cur["peak_rss_mb"], peak)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            with self.part(name):
                return fn(*a, **k)

        return timed


def worker(task: str, steps: int, pack: bool) -> dict[str, Any]:
    import torch

    import grpo_lite.trainer as trainer_module
    from grpo_lite.apps.demo import demo_run
    from grpo_lite.callbacks import Callback
    from grpo_lite.trainer import GRPOTrainer

    rss = {"after_imports": _status_mb("VmRSS")}
    demo = demo_run("smollm2-135m-instruct", "unused", task=task, steps=steps)
    parts = Parts()
    ends: list[float] = []

    class Clock(Callback):
        def on_train_begin(self, trainer: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
            ends.append(time.perf_counter())
            parts.steps.append({})

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo.cfg.replace(output_dir=tmp, pack_prompts=pack, save_steps=0)
        trainer = GRPOTrainer(cfg, demo.train_rows, demo.reward_funcs, reward_weights=demo.reward_weights,
                              callbacks=[Clock()], progress=False)  # fmt: skip
        rss["policy_loaded"] = _status_mb("VmRSS")
        trainer_module.generate = parts.wrap("generate", trainer_module.generate)  # type: ignore[assignment]
        trainer._score = parts.wrap("score", trainer._score)  # type: ignore[method-assign]
        trainer._logps_no_grad = parts.wrap("no_grad_logps", trainer._logps_no_grad)  # type: ignore[method-assign]
        forward = trainer._completion_logprobs
        trainer._completion_logprobs = parts.wrap("forward", forward)  # type: ignore[method-assign]
        trainer._optimizer_step = parts.wrap("optimizer", trainer._optimizer_step)  # type: ignore[method-assign]
        backward = torch.Tensor.backward
        torch.Tensor.backward = parts.wrap("backward", backward)  # type: ignore[method-assign]
        first = trainer.train_step
        seen: list[int] = []

        def step_then_probe(*a: Any, **k: Any) -> dict[str, Any]:
            out = first(*a, **k)
            if not seen:
                rss["after_first_step"] = _status_mb("VmRSS")
            seen.append(1)
            return out

        trainer.train_step = step_then_probe  # type: ignore[method-assign]
        history = trainer.train()
        torch.Tensor.backward = backward  # type: ignore[method-assign]
    per_step = parts.steps[: len(history)]
    step_seconds = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    timed = slice(1, None)  # the first step is warm-up
    return {
        "task": task, "pack_prompts": pack, "steps": len(history), "threads": torch.get_num_threads(),
        "step_seconds": step_seconds, "step_seconds_median": statistics.median(step_seconds[timed]),
        "parts_seconds_median": {
            p: statistics.median(s.get(p, {}).get("seconds", 0.0) for s in per_step[timed]) for p in PARTS
        },
        "parts_peak_rss_mb": {p: max(s.get(p, {}).get("peak_rss_mb", 0.0) for s in per_step) for p in PARTS},
        "rss_mb": rss,
        "peak_rss_mb": max(s.get(p, {}).get("peak_rss_mb", 0.0) for s in per_step for p in PARTS),
        "tokens_scored": [h.get("completion_len_mean", 0) * cfg.prompts_per_step * cfg.group_size for h in history],
        "skipped_compute_frac": [h.get("skipped_compute_frac") for h in history],
        "per_step": per_step,
    }  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    head = "| part | " + " | ".join(f"{'packed' if r['pack_prompts'] else 'plain'} s" for r in results)
    head += " | " + " | ".join(f"{'packed' if r['pack_prompts'] else 'plain'} peak RSS MB" for r in results)
    lines = [head + " |", "|---" * (1 + 2 * len(results)) + "|"]
    for p in PARTS:
        s = " | ".join(f"{r['parts_seconds_median'][p]:.2f}" for r in results)
        m = " | ".join(f"{r['parts_peak_rss_mb'][p]:.0f}" for r in results)
        lines.append(f"| {p} | {s} | {m} |")
    s = " | ".join(f"{r['step_seconds_median']:.2f}" for r in results)
    m = " | ".join(f"{r['peak_rss_mb']:.0f}" for r in results)
    lines.append(f"| whole step | {s} | {m} |")
    for r in results:
        lines.append(f"\n{'packed' if r['pack_prompts'] else 'plain'}: RSS MB " +
                     ", ".join(f"{k} {v:.0f}" for k, v in r["rss_mb"].items()))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--layouts", default="plain,packed", help="comma-separated: plain, packed")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", choices=["plain", "packed"], help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up)")
    if a.worker:
        a.out.write_text(json.dumps(worker(a.task, a.steps, a.worker == "packed")))
        return 0
    from grpo_lite.policy.offline import resolve_model

    resolve_model("smollm2-135m-instruct")  # fetched and converted once, outside every timing
    results = []
    for layout in a.layouts.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            cmd = [sys.executable, __file__, "--worker", layout, "--task", a.task, "--steps", str(a.steps),
                   "--out", str(out)]  # fmt: skip
            subprocess.run(cmd, check=True)
            results.append(json.loads(out.read_text()))
    print(table(results))
    if a.json:
        a.json.write_text(json.dumps({"machine": _machine(), "results": results}, indent=2) + "\n")
    return 0


def _machine() -> str:
    from runners import machine, versions

    return f"{machine()}; {versions()}"


if __name__ == "__main__":
    raise SystemExit(main())
