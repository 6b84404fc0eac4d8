"""Peak memory of completion log-probs (forward + backward): chunked vs full logits, by vocabulary.

    python benchmarks/logprob_memory.py [--tokens M] [--hidden H] [--json PATH]

For each vocabulary (32k as Llama 2 / Mistral, 128k as Llama 3, 152k as Qwen2.5) it computes
log p(target | hidden) for M completion tokens and backpropagates into the hidden states (the
output head is frozen, as under LoRA), once with ``grpo_lite.logprobs.token_logprobs`` (one slice of
about 64 MB of logits at a time, recomputed in backward) and once the naive way
(``log_softmax(hidden @ W.T).gather(...)``, what a plain implementation does). Each measurement runs
in a fresh process; the number is the peak above what the inputs themselves take: on a GPU
``torch.cuda.max_memory_allocated``, on the CPU the peak resident set size (large tensors are
mmap'ed and given back when freed, so it follows the live tensors). Defaults: M = 8 x 256 = 2,048
tokens (8 completions of 256 tokens in a micro-batch), H = 896 (Qwen2.5-0.5B).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VOCABS = {"32k": 32_000, "128k": 128_256, "152k": 151_936}


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def measure(method: str, vocab: int, tokens: int, hidden: int) -> dict[str, float]:
    """Run one forward + backward; peak bytes above the inputs, and the seconds it took."""
    import resource

    import torch

    from grpo_lite.logprobs import naive_token_logprobs, token_logprobs

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    h = torch.randn(tokens, hidden, device=device, requires_grad=True)  # (M, H)
    w = torch.randn(vocab, hidden, device=device).mul_(hidden**-0.5)  # (V, H), frozen; in place: no
    # temporary copy, which would raise the peak before the measurement starts (the CPU peak is lifelong)
    targets = torch.randint(0, vocab, (tokens,), device=device)  # (M,)
    fn = token_logprobs if method == "chunked" else naive_token_logprobs
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    t0 = time.perf_counter()
    fn(h, w, targets).sum().backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_mb": peak / 2**20, "seconds": time.perf_counter() - t0, "device": device}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=2048, help="completion tokens M (default 2048)")
    p.add_argument("--hidden", type=int, default=896, help="hidden size H (default 896)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "VOCAB"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        method, vocab = a.worker[0], int(a.worker[1])
        a.out.write_text(json.dumps(measure(method, vocab, a.tokens, a.hidden)))
        return {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, vocab in VOCABS.items():
            row: dict[str, Any] = {"vocab": name, "V": vocab}
            for method in ("chunked", "naive"):
                out = Path(tmp) / f"{method}-{vocab}.json"
                cmd = [sys.executable, __file__, "--worker", method, str(vocab), "--tokens", str(a.tokens),
                       "--hidden", str(a.hidden), "--out", str(out)]  # fmt: skip
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"{method} V={vocab} failed:\n{proc.stderr[-3000:]}")
                row[method] = json.loads(out.read_text())
            rows.append(row)
            print(f"  V={vocab}: chunked {row['chunked']['peak_mb']:.0f} MB, naive {row['naive']['peak_mb']:.0f} MB",
                  flush=True)  # fmt: skip
    result = {"tokens": a.tokens, "hidden": a.hidden, "device": rows[0]["chunked"]["device"], "rows": rows}
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(r: dict[str, Any]) -> str:
    lines = [
        f"M = {r['tokens']} completion tokens, H = {r['hidden']}, forward + backward, {r['device']}",
        "",
        "| vocabulary | chunked peak (MB) | full-logits peak (MB) | full / chunked | chunked s | full s |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        c, n = row["chunked"], row["naive"]
        lines.append(
            f"| {row['vocab']} ({row['V']:,}) | {c['peak_mb']:.0f} | {n['peak_mb']:.0f} | "
            f"{n['peak_mb'] / max(c['peak_mb'], 1e-9):.1f}x | {c['seconds']:.2f} | {n['seconds']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
