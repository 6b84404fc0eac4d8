"""What packing each prompt with its completions saves in the loss's forward/backward (``GRPOConfig.pack_prompts``).

    python benchmarks/packing.py [--task reasoning] [--completion-tokens 30] [--repeats 3] [--json PATH]

SmolLM2-135M-Instruct in 4-bit NF4 + LoRA rank 16 as the tasks train it (gradient checkpointing on),
one step's worth of rows: the task's first 4 training prompts x 8 completions of ``--completion-tokens``
random tokens. Each repeat times the plain layout (one row per completion) and the packed one
(one row per prompt), alternately: forward + backward of the summed log-probs, one micro-batch of 32.
Prints seconds per pass (median), the ratio, and the peak RSS growth of each (first pass of each).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="reasoning")
    parser.add_argument("--completion-tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from grpo_lite.apps.demo import demo_run
    from grpo_lite.logprobs import completion_logprobs
    from grpo_lite.policy.model import load_policy
    from grpo_lite.rollout import encode_prompts, is_chat, render_prompt

    demo = demo_run("smollm2-135m-instruct", "unused", task=args.task)
    model, tok = load_policy(demo.cfg)
    prompts = [r["prompt"] for r in demo.train_rows[:4]]
    texts = [render_prompt(p, tok) for p in prompts]
    p_ids, p_mask = encode_prompts(texts, tok, max_prompt_tokens=512, chat=[is_chat(p) for p in prompts])
    G, T = 8, args.completion_tokens
    g = torch.Generator().manual_seed(0)
    ids = torch.cat(
        [p_ids.repeat_interleave(G, 0), torch.randint(100, 40000, (4 * G, T), generator=g)], dim=1
    )
    attn = torch.cat([p_mask.repeat_interleave(G, 0), torch.ones(4 * G, T, dtype=torch.long)], dim=1)
    cmask = torch.ones(4 * G, T, dtype=torch.long)
    model.train()

    def one_pass(pack: bool) -> float:
        model.zero_grad()
        start = time.perf_counter()
        logps, _ = completion_logprobs(model, ids, attn, cmask, temperature=1.0, pack=pack)
        logps.sum().backward()
        return time.perf_counter() - start

    seconds: dict[str, list[float]] = {"plain": [], "packed": []}
    rss: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, pack in (("packed", True), ("plain", False)):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            seconds[name].append(one_pass(pack))
            rss.setdefault(name, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    out = {
        "task": args.task, "prompt_tokens": p_ids.shape[1], "completions": 4 * G, "completion_tokens": T,
        "seconds": seconds, "median_seconds": med, "packed_over_plain": med["packed"] / med["plain"],
        "peak_rss_growth_mb_first_pass": rss, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }  # fmt: skip
    print(f"{args.task}: {4 * G} completions x {T} tokens after a {p_ids.shape[1]}-token prompt (padded), "
          f"forward + backward: plain {med['plain']:.2f} s, packed {med['packed']:.2f} s "
          f"({out['packed_over_plain']:.2f}x); peak RSS grew {rss.get('packed', 0):.0f} MB packed (first), "
          f"{rss.get('plain', 0):.0f} MB more plain")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
