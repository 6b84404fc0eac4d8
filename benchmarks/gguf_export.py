"""A GGUF in, a better GGUF out: the demo's SmolLM2 run exported to GGUF and checked.

    python benchmarks/gguf_export.py [--task arithmetic] [--seed 0] [--eval-every 10]
                                     [--types f16,q8_0] [--runs-dir runs/gguf] [--json PATH]

1. trains ``demo --task T --eval-every N`` (held-out evaluation while training: the best checkpoint);
2. ``export RUN --gguf --gguf-type X`` for each type: file size, export seconds (merge, write, read
   back and check), the check's figures (max logit error against the weights the file should hold,
   greedy agreement on the held-out prompts, with the unrounded merged model too);
3. the held-out accuracy of each exported GGUF and of the base GGUF (the Q4_1 file SmolLM2 arrives
   as), each read by transformers' GGUF loader, greedy, with the demo's measure and settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from runners import machine, versions  # noqa: E402


def gguf_accuracy(folder: Path, name: str, demo: Any, tokenizer: Any) -> dict[str, float]:
    """The demo's held-out measures on a GGUF read by transformers' loader (greedy)."""
    import torch
    from transformers import AutoModelForCausalLM

    from grpo_lite.evaluate import held_out_scores

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    cfg = demo.cfg
    return held_out_scores(model, tokenizer, demo.eval_rows, demo.measures, max_new_tokens=cfg.max_new_tokens,
                           stop_strings=cfg.stop_strings)[0]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--types", default="f16,q8_0")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/gguf"))
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--reuse", action="store_true", help="keep a finished run in the folder (its summary.json)"
    )
    a = p.parse_args(argv)
    from grpo_lite.apps.demo import demo_run, run_demo
    from grpo_lite.export import export, export_source
    from grpo_lite.policy.model import load_tokenizer
    from grpo_lite.policy.offline import SMOLLM2_VERSION, cache_dir

    run = a.runs_dir / f"{a.task}-seed{a.seed}"
    start = time.perf_counter()
    if a.reuse and (run / "summary.json").exists():
        summary = json.loads((run / "summary.json").read_text())
    else:
        summary = run_demo(run, task=a.task, seed=a.seed, overwrite=True, eval_every=a.eval_every)
    result: dict[str, Any] = {"machine": machine(), "versions": versions(), "date": time.strftime("%Y-%m-%d"),
                              "task": a.task, "seed": a.seed, "demo_seconds": round(time.perf_counter() - start, 1),
                              "demo": {k: summary[k] for k in ("accuracy_before", "accuracy_after", "best",
                                                               "held_out_curve", "steps")}, "exports": []}  # fmt: skip
    demo = demo_run("smollm2-135m-instruct", run, task=a.task, seed=a.seed)
    source = export_source(run)
    tokenizer = load_tokenizer(str(source))
    base = cache_dir() / SMOLLM2_VERSION
    [base_file] = sorted(base.glob("*.gguf"))
    result["base_gguf"] = {"file": base_file.name, "mb": round(base_file.stat().st_size / 1e6, 1),
                           "held_out": gguf_accuracy(base, base_file.name, demo, tokenizer)}  # fmt: skip
    print("base GGUF:", result["base_gguf"], flush=True)
    for kind in a.types.split(","):
        out = run / "exports" / f"bench-{kind}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        t0 = time.perf_counter()
        export(source, out, gguf=kind)
        seconds = round(time.perf_counter() - t0, 1)
        report = json.loads((out / "gguf_check.json").read_text())
        row = {"type": kind, "checkpoint": source.name, "export_seconds": seconds, "mb": round(report["bytes"] / 1e6, 1),
               "check": report, "held_out": gguf_accuracy(out, report["file"], demo, tokenizer)}  # fmt: skip
        result["exports"].append(row)
        print(f"{kind}: {row['mb']} MB in {seconds} s; check {report['passed']}, max logit error "
              f"{report['max_logit_error_vs_file_type']:.2e}, greedy {report['greedy_same_as_file_type']}, "
              f"{100 * report['greedy_agreement_with_merged']:.0f}% as merged; held-out {row['held_out']}", flush=True)  # fmt: skip
        if a.json:
            a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
