"""grpo-lite and TRL on a CUDA GPU: Qwen2.5-0.5B/1.5B-Instruct in 4-bit + LoRA, G = 8, 256/512 tokens.

    python benchmarks/gpu.py [--models 0.5b,1.5b] [--tokens 256,512] [--steps 4] [--no-trl] [--json PATH]

For each model and completion length, one fresh process per trainer: peak VRAM
(``torch.cuda.max_memory_allocated``), generated tokens per second, and seconds per step split into
generate / reference / policy (forward + backward) / optimizer; the memory planner's estimate
beside the measured peak. Both trainers run the same settings (``SETTINGS`` below, mapped to TRL by
``grpo_lite.scale_out.trl_args``; both use bitsandbytes' paged 8-bit AdamW), on GSM8K-style chat
prompts, with beta = 0.04 so that the reference pass (base = adapters off) is part of every step,
and with a dense reward (the share of digits in a completion), so that no group ties and
grpo-lite's zero-advantage skipping never applies: every completion is trained on by both.

Where the Hugging Face Hub can't be reached (or with ``--random-weights``), each model is built
from its real config (the shapes of ``Qwen/Qwen2.5-*-Instruct``) with random weights and a
character-level tokenizer padded to the real vocabulary: the same memory and arithmetic per token,
but every completion runs to the full length. The JSON and the printed table say which was used.
Without CUDA the script stops: this benchmark is for a GPU (``compare_trl.py`` runs anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runners import machine, peak_memory_mb, run_grpo_lite, run_trl, step_parts, versions  # noqa: E402

# The shapes of Qwen/Qwen2.5-{0.5B,1.5B}-Instruct's config.json.
QWEN = {
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
}  # fmt: skip
# A tiny shape of the same family, only for a smoke run of this script on the CPU (tests).
QWEN["tiny"] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=128, vocab_size=4096, tie_word_embeddings=True)  # fmt: skip
HUB_ID = {"0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-1.5B-Instruct", "tiny": "tiny-qwen2"}
SETTINGS = dict(
    prompts_per_step=2,
    group_size=8,
    micro_batch_size=8,
    max_prompt_tokens=256,
    temperature=1.0,
    learning_rate=1e-5,
    lora_rank=16,
    lora_alpha=32,
    beta=0.04,
    loss_type="grpo",
    load_in_4bit=True,
    gradient_checkpointing=True,
    save_steps=0,
    seed=0,
)
QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her "
    "parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]
SYSTEM = (
    "Think step by step inside <think>...</think>, then give the final number inside <answer>...</answer>."
)


def gsm8k_style_rows() -> list[dict[str, Any]]:
    return [
        {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
        for q in QUESTIONS * 8
    ]


def digit_share(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """Dense benchmark reward: the share of digits in the completion's text."""
    from rewards import completion_text

    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def random_weights_model(size: str, folder: Path) -> Path:
    """The real config of Qwen2.5-{size} with random weights and a char tokenizer of the same vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from grpo_lite.tiny import build_char_tokenizer

    path = folder / f"qwen2.5-{size}-random"
    if (path / "config.json").exists():
        return path
    shape = QWEN[size]
    tokenizer = build_char_tokenizer(extra_tokens=shape["vocab_size"] - len(build_char_tokenizer()))
    config = Qwen2Config(**shape, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resolve_model(size: str, folder: Path, random_weights: bool) -> tuple[str, str]:
    """(model path or id, "hub" | "random weights, real config")."""
    if not random_weights and size != "tiny":
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(HUB_ID[size]), "hub"
        except Exception as err:  # offline, no Hub: fall back to the real shapes
            print(f"  {HUB_ID[size]} not reachable ({type(err).__name__}); using random weights of its shape")
    return str(random_weights_model(size, folder)), "random weights, real config"


def planned_peak_gb(model: str, max_new_tokens: int) -> float:
    from grpo_lite.memory import CUDA_CONTEXT_GB, plan_memory

    plan = plan_memory(
        model, group_size=SETTINGS["group_size"], max_new_tokens=max_new_tokens,
        prompt_len=SETTINGS["max_prompt_tokens"], lora_rank=SETTINGS["lora_rank"], load_in_4bit=True,
        micro_batch=SETTINGS["micro_batch_size"], prompts_per_step=SETTINGS["prompts_per_step"], gpu_gb=80,
    )  # fmt: skip
    return plan.peak_gb - CUDA_CONTEXT_GB  # max_memory_allocated does not see the CUDA context


def worker(impl: str, model: str, max_new_tokens: int, steps: int, out: Path, device: str) -> None:
    settings = SETTINGS | {"max_new_tokens": max_new_tokens, "device": device}
    run = run_grpo_lite if impl == "grpo-lite" else run_trl
    with tempfile.TemporaryDirectory() as tmp:
        result = run(model, settings, gsm8k_style_rows(), digit_share, steps, Path(tmp) / "run")
    result["peak_mem_mb"] = peak_memory_mb()  # CUDA max allocated; peak RSS in a CPU smoke run
    out.write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="0.5b,1.5b")
    p.add_argument("--tokens", default="256,512")
    p.add_argument("--steps", type=int, default=4, help="steps per run; the first is warm-up (default 4)")
    p.add_argument("--no-trl", action="store_true", help="grpo-lite only")
    p.add_argument("--random-weights", action="store_true", help="do not try the Hub")
    p.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "grpo-lite-gpu-bench")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: a smoke run of this script (with --models tiny), not a benchmark")  # fmt: skip
    p.add_argument("--worker", nargs=3, metavar=("IMPL", "MODEL", "TOKENS"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]), a.steps, a.out, a.device)
        return {}
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU; on a CPU run benchmarks/compare_trl.py instead")
    a.model_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    impls = ("grpo-lite",) if a.no_trl else ("grpo-lite", "trl")
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.models.split(","):
            model, source = resolve_model(size, a.model_dir, a.random_weights)
            for tokens in (int(t) for t in a.tokens.split(",")):
                row: dict[str, Any] = {"model": HUB_ID[size], "source": source, "max_new_tokens": tokens,
                                       "planned_peak_gb": planned_peak_gb(model, tokens)}  # fmt: skip
                for impl in impls:
                    out = Path(tmp) / f"{impl}-{size}-{tokens}.json"
                    cmd = [sys.executable, __file__, "--worker", impl, model, str(tokens), "--steps", str(a.steps), "--device", a.device, "--out", str(out)]  # fmt: skip
                    proc = subprocess.run(
                        cmd,
                        capture_output=True,
                        text=True,
                        env=os.environ | {"TOKENIZERS_PARALLELISM": "false"},
                    )
                    if proc.returncode:
                        row[impl] = {"error": proc.stderr[-2000:]}
                        print(f"  {impl} {size} {tokens}: FAILED\n{proc.stderr[-2000:]}", flush=True)
                        continue
                    row[impl] = step_parts(json.loads(out.read_text()))
                    print(f"  {impl:9s} {size} x {tokens} tokens: {row[impl]['step_seconds_median']:.2f} s/step, "
                          f"{row[impl]['peak_mem_mb'] / 1024:.2f} GB", flush=True)  # fmt: skip
                rows.append(row)
    result = {
        "machine": machine(),
        "versions": versions(),
        "settings": SETTINGS,
        "steps": a.steps,
        "rows": rows,
    }
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']}", "",
             "| model (weights) | tokens | trainer | s/step | generate | reference | policy | optimizer | tokens/s | peak VRAM GB | planned GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in r["rows"]:
        for impl in ("grpo-lite", "trl"):
            m = row.get(impl)
            if m is None:
                continue
            head = f"| {row['model']} ({row['source']}) | {row['max_new_tokens']} | {impl} "
            if "error" in m:
                lines.append(head + "| failed | | | | | | | |")
                continue
            parts = m["parts_median"]
            lines.append(
                head
                + f"| {m['step_seconds_median']:.2f} | {parts['generate']:.2f} | {parts['reference']:.2f} | "
                f"{parts['policy']:.2f} | {parts['optimizer']:.2f} | {m['gen_tokens_per_sec']:.0f} | "
                f"{m['peak_mem_mb'] / 1024:.2f} | {row['planned_peak_gb']:.2f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
