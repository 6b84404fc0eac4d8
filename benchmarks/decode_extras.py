"""The decode loop's extras, rollouts alone: a static KV cache with a compiled decode step, and
finished rows leaving the batch, against the plain lean loop, on the merged rollout copy.

    python benchmarks/decode_extras.py [--prompts 8] [--tokens 64] [--eos-rate 0.03] [--json PATH]

On the CPU it loads ``compare_trl.py``'s model (a 4-layer Llama with a 32,000-token vocabulary, in
4-bit + LoRA; ``--model PATH`` for another) and samples prompts x G = 8 completions from its
merged copy, as the trainer does. Two length regimes:

- **full length**: random weights never sample the EOS, so every row runs to ``--tokens``: the
  lean loop with the dynamic cache against the compiled step with the static cache;
- **varied lengths**: a forward hook raises the EOS logit so that each token ends its row with
  probability about ``--eos-rate`` (lengths spread as they do on a real task: many short rows, a
  few to the limit); the lean loop with finished rows kept (as ``generate`` does), with finished
  rows dropped (grpo-lite's default), and compiled (a static batch keeps every row).

Each road: one warm-up rollout at the same length (for the compiled step this is the compile,
timed apart), then the best of ``--repeats`` rollouts, each from the same seed. Tokens per second
count the tokens of the completions (up to and including the EOS), not padding. ``gpu.py
--rollouts`` runs the same roads on the Qwen2.5 shapes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runners import machine, versions  # noqa: E402


def eos_bias(model: Any, eos_id: int, rate: float) -> Any:
    """A forward hook on ``model``'s output head adding log(rate (V - 1) / (1 - rate)) to the EOS
    logit: for a near-uniform random model, P(EOS) per token about ``rate``. Returns the handle."""
    head = model.get_output_embeddings()
    bias = math.log(rate * (head.out_features - 1) / (1 - rate))

    def hook(module: Any, args: Any, out: Any) -> Any:
        out[..., eos_id] += bias
        return out

    return head.register_forward_hook(hook)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_road(run: Callable[[], Any], pad_id: int, repeats: int) -> dict[str, Any]:
    """Warm-up once (timed: a compile happens there), then the best of ``repeats`` runs, each from
    seed 0; tokens = completion tokens that are not padding."""
    import torch

    _sync()
    t0 = time.perf_counter()
    run()
    _sync()
    first = time.perf_counter() - t0
    best, tokens = math.inf, 0
    for _ in range(repeats):
        torch.manual_seed(0)
        _sync()
        t0 = time.perf_counter()
        out = run()
        _sync()
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, tokens = seconds, int((out != pad_id).sum())
    return {"seconds": best, "first_seconds": first, "tokens": tokens, "tokens_per_sec": tokens / best,
            "mean_length": tokens / out.shape[0]}  # fmt: skip


def extra_roads(
    merged: Any, ids: Any, mask: Any, *, group_size: int, eos_ids: list[int], pad_id: int, tokens: int,
    eos_rate: float, repeats: int = 2, log: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """The roads of this benchmark on ``merged`` (the merged rollout copy): {name: timing}."""
    import torch

    from grpo_lite.rollout.decode import decode

    def lean(**kw: Any) -> Any:
        return decode(merged, ids, mask, group_size=group_size, max_new_tokens=tokens, temperature=1.0, top_k=0,
                      top_p=1.0, eos_ids=eos_ids, pad_id=pad_id, **kw)  # fmt: skip

    roads: dict[str, Callable[[], Any]] = {
        "full length, lean loop": lambda: lean(),
        "full length, compiled step, static cache": lambda: lean(compiled=True),
        "varied lengths, lean loop, finished rows kept": lambda: lean(drop_finished=False),
        "varied lengths, lean loop, finished rows dropped": lambda: lean(drop_finished=True),
        "varied lengths, compiled step, static cache": lambda: lean(compiled=True),
    }
    result: dict[str, Any] = {}
    for name, run in roads.items():
        hook = eos_bias(merged, eos_ids[0], eos_rate) if name.startswith("varied") else None
        if "compiled" in name:  # a compiled step keeps the hooks of its compile: compile again with these
            torch._dynamo.reset()
            vars(merged).pop("_compiled_call", None)
        try:
            result[name] = time_road(run, pad_id, repeats)
        finally:
            if hook is not None:
                hook.remove()
        m = result[name]
        if "compiled" in name and getattr(merged, "_grpo_lite_compile_failed", False):
            m["fell_back_to_eager"] = True  # decode warned: this road measured the eager loop
            name += " (FELL BACK TO EAGER)"
        log(f"    {name}: {m['tokens_per_sec']:.0f} tokens/s, mean length {m['mean_length']:.1f}, "
            f"first run {m['first_seconds']:.1f} s")  # fmt: skip
    return result


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """The speed-ups the issue asks about, from one run's roads."""
    tps = {k: v["tokens_per_sec"] for k, v in result.items() if isinstance(v, dict) and "tokens_per_sec" in v}
    out = {}
    pairs = {
        "compiled / lean, full length": ("full length, compiled step, static cache", "full length, lean loop"),
        "rows dropped / kept, varied lengths": (
            "varied lengths, lean loop, finished rows dropped", "varied lengths, lean loop, finished rows kept"),
        "compiled / rows dropped, varied lengths": (
            "varied lengths, compiled step, static cache", "varied lengths, lean loop, finished rows dropped"),
    }  # fmt: skip
    for label, (a, b) in pairs.items():
        if a in tps and b in tps:
            out[label] = tps[a] / tps[b]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a model path (default: compare_trl.py's benchmark model)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--eos-rate", type=float, default=0.03)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    import torch
    from compare_trl import SETTINGS, bench_rows, build_bench_model

    from grpo_lite import GRPOConfig
    from grpo_lite.policy.model import load_policy
    from grpo_lite.rollout import encode_prompts, render_prompt
    from grpo_lite.rollout.generate import _eos_ids
    from grpo_lite.rollout.weights import make_rollout_weights

    model = a.model or str(build_bench_model(Path(tempfile.gettempdir()) / "grpo-lite-bench-model"))
    cfg = GRPOConfig(model=model, output_dir=tempfile.gettempdir(), **(SETTINGS | {"device": a.device}))
    policy, tok = load_policy(cfg)
    policy.eval()
    dtype = policy.get_base_model().get_input_embeddings().weight.dtype
    merged = make_rollout_weights(policy, choice="merged", dtype=dtype).current()
    texts = [render_prompt(r["prompt"], tok) for r in bench_rows()[: a.prompts]]
    ids, mask = encode_prompts(texts, tok, max_prompt_tokens=cfg.max_prompt_tokens, chat=[False] * len(texts))
    ids, mask = ids.to(policy.device), mask.to(policy.device)
    print(f"{machine()}\n{a.prompts} prompts x G = {cfg.group_size} x {a.tokens} new tokens, "
          f"EOS rate {a.eos_rate} in the varied-length roads, torch threads {torch.get_num_threads()}")  # fmt: skip
    roads = extra_roads(merged, ids, mask, group_size=cfg.group_size, eos_ids=_eos_ids(policy, tok),
                        pad_id=tok.pad_token_id, tokens=a.tokens, eos_rate=a.eos_rate, repeats=a.repeats)  # fmt: skip
    result = {"machine": machine(), "versions": versions(), "prompts": a.prompts, "group_size": cfg.group_size,
              "max_new_tokens": a.tokens, "eos_rate": a.eos_rate, "roads": roads, "ratios": ratios(roads)}  # fmt: skip
    for label, value in result["ratios"].items():
        print(f"  {label}: {value:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
