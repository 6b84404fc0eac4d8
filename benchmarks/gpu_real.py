"""Real weights on a CUDA GPU: SmolLM2-135M-Instruct learns its tasks in bfloat16 and in float16.

    python benchmarks/gpu_real.py [--parts P1,P2,...] [--budget-s S] [--steps N] [--json PATH]

One process per part, in this order (``--parts`` picks and orders them; ``--budget-s`` starts no
part after that many seconds, and the JSON is written after every part, so a cut run keeps what it
measured):

- ``demo-TASK-DTYPE``: ``python -m grpo_lite demo --task TASK --compute-dtype DTYPE`` on the GPU,
  the task's shipped settings (float16 = the T4's path: loss scaling, skipped updates counted):
  held-out greedy accuracy before/after, seconds, median step seconds, skipped updates, the last
  loss scale, the measured peak (CUDA max allocated) beside the memory planner's prediction for
  the same settings (its peak less the CUDA context, which max_memory_allocated does not see);
- ``compare-trl``: ``compare_trl.py --model smollm2-135m-instruct`` (step time and peak memory
  against TRL's GRPOTrainer at equal settings, the demo's task), without its learning check;
- ``rollouts``: ``gpu.py --runs smollm2:128: --rollouts 4`` (rollouts alone: the adapter model with
  transformers' generate and grpo-lite's loop, the merged copy, the compiled step with CUDA graphs);
- ``tools``: the tool demo (``grpo_lite.apps.tool_demo``, the python tool in the sandbox mid-answer), a
  short run: tool calls, accuracy before/after.

``--device cpu --steps 1`` is a dry run of the plumbing on a machine without a GPU, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runners import machine, versions  # noqa: E402

DEMOS = [(task, dtype) for task in ("arithmetic", "code") for dtype in ("bfloat16", "float16")]
DEFAULT_PARTS = [f"demo-{t}-{d}" for t, d in DEMOS] + [
    "compare-trl",
    "rollouts",
    "tools",
    "demo-reasoning-bfloat16",
]


def demo_part(task: str, dtype: str, a: Any, work: Path) -> dict[str, Any]:
    run = work / f"demo-{task}-{dtype}"
    cmd = [sys.executable, "-m", "grpo_lite", "demo", "--task", task, "--compute-dtype", dtype,
           "--device", a.device, "--output-dir", str(run), "--overwrite"]  # fmt: skip
    if a.steps:
        cmd += ["--steps", str(a.steps)]
    out = _run(cmd, a.part_timeout)
    if out["returncode"] or not (run / "summary.json").exists():
        return out
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    peak_gb = max(m.get("peak_mem_mb", 0.0) for m in metrics) / 1024
    return {
        "seconds_process": out["seconds"],
        "summary": summary,
        "step_seconds_median": statistics.median(m["time/step"] for m in metrics),
        "skipped_updates": int(sum(m.get("update_skipped", 0.0) for m in metrics)),
        "loss_scale_last": metrics[-1].get("loss_scale"),
        "rollout_weights": metrics[-1].get("rollout_weights"),
        "measured_peak_gb": peak_gb,
        "planned_peak_gb": _planned(task, dtype, a.device),
        "tail": out["tail"][-1500:],
    }


def _planned(task: str, dtype: str, device: str) -> float | None:
    """The planner's peak for the demo's own settings, less the CUDA context (not in max allocated)."""
    from grpo_lite.apps.demo import demo_run
    from grpo_lite.policy.memory import CUDA_CONTEXT_GB, plan_for_config
    from grpo_lite.policy.offline import SMOLLM2

    cfg = demo_run(SMOLLM2, "unused", task=task, compute_dtype=dtype, device=device).cfg  # type: ignore[arg-type]
    plan = plan_for_config(cfg) if device == "cuda" else plan_for_config(cfg, gpu_gb=24)
    return round(plan.peak_gb - CUDA_CONTEXT_GB, 3)


def script_part(script: str, args: list[str], a: Any, work: Path) -> dict[str, Any]:
    out_json = work / f"{Path(script).stem}.json"
    out = _run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out_json)], a.part_timeout
    )
    if out_json.exists():
        out["result"] = json.loads(out_json.read_text())
    out["tail"] = out["tail"][-3000:]
    return out


def tools_part(a: Any, work: Path) -> dict[str, Any]:
    run = work / "tools"
    code = (
        "import json, sys; from grpo_lite.apps.tool_demo import run_tool_demo; "
        f"print(json.dumps(run_tool_demo({str(run)!r}, steps={a.tool_steps}, overwrite=True, device={a.device!r})))"
    )
    out = _run([sys.executable, "-c", code], a.part_timeout)
    if (run / "summary.json").exists():
        out["summary"] = json.loads((run / "summary.json").read_text())
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        out["tool_calls_per_completion"] = [
            round(m.get("tools/calls_per_completion", 0.0), 3) for m in metrics
        ]
        out["measured_peak_gb"] = max(m.get("peak_mem_mb", 0.0) for m in metrics) / 1024
    out["tail"] = out["tail"][-1500:]
    return out


def _run(cmd: list[str], timeout: float) -> dict[str, Any]:
    start = time.perf_counter()
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, text = -9, f"{err.stdout or ''}{err.stderr or ''}\n[killed after {timeout:.0f} s]"
        text = text if isinstance(text, str) else text.decode(errors="replace")
    return {"returncode": code, "seconds": round(time.perf_counter() - start, 1), "tail": text[-6000:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--parts", default=",".join(DEFAULT_PARTS), help="comma-separated (default: all, in order)"
    )
    p.add_argument("--budget-s", type=float, default=540, help="start no part after this many seconds")
    p.add_argument("--part-timeout", type=float, default=240, help="seconds one part may take")
    p.add_argument("--steps", type=int, default=0, help="demo steps (0: each task's own)")
    p.add_argument("--tool-steps", type=int, default=10, help="steps of the tool demo (default %(default)s)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--json", type=Path, default=Path("gpu-real.json"))
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "grpo-lite-gpu-real")
    a = p.parse_args(argv)
    start = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d"),
                              "device": a.device, "parts": {}}  # fmt: skip
    a.work.mkdir(parents=True, exist_ok=True)
    for part in [x for x in a.parts.split(",") if x]:
        if time.perf_counter() - start > a.budget_s:
            result["parts"][part] = {"skipped": f"past --budget-s {a.budget_s:g}"}
            continue
        print(f"== {part} ({time.perf_counter() - start:.0f} s in)", flush=True)
        if part.startswith("demo-"):
            _, task, dtype = part.split("-")
            entry = demo_part(task, dtype, a, a.work)
        elif part == "compare-trl":
            entry = script_part("compare_trl.py", ["--model", "smollm2-135m-instruct", "--reps", "1", "--steps",
                                                   "5", "--learning-steps", "0"], a, a.work)  # fmt: skip
        elif part == "rollouts":
            entry = script_part("gpu.py", ["--runs", "smollm2:128:", "--rollouts", "4", "--budget-s", "0",
                                           "--device", a.device], a, a.work)  # fmt: skip
        elif part == "tools":
            entry = tools_part(a, a.work)
        else:
            sys.exit(f"--parts: unknown part {part!r}; parts: {', '.join(DEFAULT_PARTS)}")
        result["parts"][part] = entry
        print(json.dumps({k: v for k, v in entry.items() if k not in ("tail", "result")}, default=str)[:1500])
        if entry.get("returncode"):
            print(entry.get("tail", "")[-2500:], flush=True)
        a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["seconds"] = round(time.perf_counter() - start, 1)
    a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
