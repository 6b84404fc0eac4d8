"""What tools cost: sandboxed python calls per second, and rollout tokens per second with tools
(time inside the tools left out) against the same rollout without them.

    python benchmarks/tools.py [--calls N] [--workers W] [--repeats R] [--quick] [--json PATH]

1. ``--calls`` python tool calls (``print(i * 7)``, each in ``rewards``' sandbox with the tool's
   limits), ``--workers`` at a time, through ``ToolBox.run`` as a step runs them.
2. SmolLM2-135M-Instruct (float32, as the merged rollout copy samples on a CPU) samples the tool
   demo's prompts (``tool_demo``: 4 prompts x 8 completions of up to 64 tokens, the python tool in the
   plain format, at most 2 calls) with and without the tool, alternately, ``--repeats`` times each.
   tokens/s = the model's own tokens / (rollout seconds - seconds inside the tool calls); the tools'
   answers are fed through the decode pass, not counted as tokens, and feeding them counts as rollout
   time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def calls_per_second(calls: int, workers: int) -> dict[str, Any]:
    """Sandboxed python calls per second through ``ToolBox.run`` (after a warm-up batch)."""
    from grpo_lite.tools import ToolBox, ToolCall

    box = ToolBox(["python"], workers=workers)
    box.run([ToolCall("python", {"code": "print(1)"})] * workers)  # the sandbox probe and warm caches
    batch = [ToolCall("python", {"code": f"print({i} * 7)"}) for i in range(calls)]
    start = time.perf_counter()
    results = box.run(batch)
    seconds = time.perf_counter() - start
    wrong = [(i, r.output) for i, r in enumerate(results) if r.output != f"{i * 7}\n" or r.failed]
    if wrong:
        raise RuntimeError(f"{len(wrong)} calls did not print what they should (first: {wrong[0]})")
    return {
        "calls": calls,
        "workers": workers,
        "seconds": round(seconds, 3),
        "calls_per_second": calls / seconds,
    }


def rollout_tokens_per_second(rollout: Any, seconds: float) -> float:
    """The model's own tokens per second of rollout, time inside the tool calls left out."""
    return float(rollout.lengths.sum()) / (seconds - rollout.tool_seconds)


def rollouts(repeats: int, *, prompts: int, group: int, max_new_tokens: int) -> dict[str, Any]:
    """Alternating rollouts without and with the python tool; per-run tokens/s and their medians."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_lite.apps.tool_demo import multiplication_split
    from grpo_lite.policy.offline import SMOLLM2, resolve_model
    from grpo_lite.rollout import Sampling, generate
    from grpo_lite.rollout.turns import ToolUse
    from grpo_lite.tools import ToolBox, tool_format

    path = resolve_model(SMOLLM2)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    tools = ToolUse(ToolBox(["python"]), tool_format("plain", tok))
    texts = [r["prompt"] for r in multiplication_split()[0][:prompts]]
    sampling = Sampling(1.0, 1.0, 0, max_new_tokens, max_tool_calls=2)
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    for r in range(repeats):
        for name, use in (("without", None), ("with", tools)):
            torch.manual_seed(r)
            start = time.perf_counter()
            out = generate(model, tok, texts, group_size=group, sampling=sampling, max_prompt_tokens=256,
                           stop_strings=("\nQuestion",), tools=use)  # fmt: skip
            seconds = time.perf_counter() - start
            runs[name].append({
                "seconds": round(seconds, 3), "tool_seconds": round(out.tool_seconds, 3),
                "model_tokens": int(out.lengths.sum()), "tool_tokens": int((out.extents - out.lengths).sum()),
                "calls": sum(out.tool_columns().get("tool_calls", [0])),
                "tokens_per_second": rollout_tokens_per_second(out, seconds),
            })  # fmt: skip
    median = {k: statistics.median(x["tokens_per_second"] for x in v) for k, v in runs.items()}
    return {"runs": runs, "median_tokens_per_second": median, "ratio": median["with"] / median["without"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 16 calls, 1 repeat of 2 x 2 x 24")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from rewards.sandbox import capabilities

    calls = calls_per_second(16 if args.quick else args.calls, args.workers)
    shape = (
        dict(prompts=2, group=2, max_new_tokens=24)
        if args.quick
        else dict(prompts=4, group=8, max_new_tokens=64)
    )
    roll = rollouts(1 if args.quick else args.repeats, **shape)
    result = {
        "sandbox": calls, "rollout": roll, "rollout_shape": shape,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "capabilities": str(capabilities()),
    }  # fmt: skip
    print(
        f"sandboxed python calls: {calls['calls_per_second']:.1f}/s with {args.workers} workers (target >= 30)"
    )
    m = roll["median_tokens_per_second"]
    print(f"rollout tokens/s, tool time left out: {m['with']:.1f} with the tool vs {m['without']:.1f} without "
          f"= {roll['ratio']:.2f}x (target >= 0.8)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
