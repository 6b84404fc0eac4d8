"""The offline demo: GRPO makes a tiny arithmetic model right more often, on a CPU, in minutes.

1. Build once (cached) a tiny Llama with a character-level tokenizer, given a short supervised
   warm start on labels that are right only 40% of the time (the rest are off by one), so it
   samples correct answers some of the time and greedy decoding is mostly wrong.
2. Train it with GRPO through the normal engine: 4-bit NF4 + LoRA, an exact-answer reward plus a
   small format reward.
3. Measure greedy accuracy on held-out problems (never seen in warm start or training) before and
   after, and write summary.json, metrics.jsonl, reward_curve.png and the adapter.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from grpo_lite.config import ComputeDtype, GRPOConfig
from grpo_lite.offline import build_once, cache_dir

OPERANDS = 20  # problems a+b with a, b in [0, 20): 400 in all
SPLIT_SEED = 1234  # fixed: the held-out problems must be the ones the cached model never saw
P_RIGHT = 0.4  # share of correct labels in the warm start; the rest are a+b+1
MODEL_VERSION = "tiny-arith-v1"


def arithmetic_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): chat prompts ``a+b=`` with the answer in the ``answer`` column."""
    pairs = [(a, b) for a in range(OPERANDS) for b in range(OPERANDS)]
    random.Random(SPLIT_SEED).shuffle(pairs)
    rows = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}], "answer": str(a + b)} for a, b in pairs]
    held = len(rows) // 5
    return rows[held:], rows[:held]


def build_arith_model(path: Path, *, steps: int = 600, batch: int = 128) -> None:
    """Warm-start a tiny Llama on partly wrong labels and save it (model + tokenizer) into ``path``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from grpo_lite.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=512, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    rng = random.Random(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    train, _ = arithmetic_split()
    for _ in range(steps):
        examples = []
        for row in rng.sample(train, batch):
            label = int(row["answer"]) + (0 if rng.random() < P_RIGHT else 1)
            prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            examples.append(
                (tok(prompt)["input_ids"], tok(f"<answer>{label}</answer><|im_end|>")["input_ids"])
            )
        width = max(len(p) + len(c) for p, c in examples)
        ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)  # loss on the completion only
        for i, (p, c) in enumerate(examples):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    tok.save_pretrained(path)


def demo_model() -> Path:
    """The cached warm-started model, built on first use (``offline.build_once``: safe when two first
    uses race)."""
    path = cache_dir() / MODEL_VERSION
    if not (path / "config.json").exists():
        print(f"building the tiny arithmetic model once (cached in {path}) ...", flush=True)
    return build_once(path, build_arith_model)


def demo_config(
    model: Path, output_dir: Path, *, seed: int, steps: int, compute_dtype: ComputeDtype = "auto"
) -> GRPOConfig:
    """The demo's settings: 8 prompts x 8 completions a step, 8 new tokens, LoRA rank 8, 4-bit.
    ``compute_dtype="bfloat16"`` runs the GPU's 16-bit path on the CPU."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=8, group_size=8,
        prompts_per_step=8, micro_batch_size=64, learning_rate=2e-3, lora_rank=8, lora_alpha=16,
        max_steps=steps, save_steps=0, seed=seed, device="cpu", compute_dtype=compute_dtype,
    )  # fmt: skip


def run_demo(
    output_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 40,
    overwrite: bool = False,
    compute_dtype: ComputeDtype = "auto",
) -> dict[str, Any]:
    """Train the tiny model with GRPO and measure held-out greedy accuracy before and after."""
    from grpo_lite.evaluate import accuracy
    from grpo_lite.trainer import GRPOTrainer
    from rewards import answer_tag_format, exact_answer

    if steps <= 0:
        raise ValueError(f"--steps must be > 0; got {steps}")
    start = time.perf_counter()
    output_dir = Path(output_dir)
    train, held = arithmetic_split()
    cfg = demo_config(demo_model(), output_dir, seed=seed, steps=steps, compute_dtype=compute_dtype)
    trainer = GRPOTrainer(
        cfg, train, [exact_answer, answer_tag_format], reward_weights=[1.0, 0.1], overwrite=overwrite
    )
    before = accuracy(trainer.model, trainer.tokenizer, held, exact_answer, max_new_tokens=cfg.max_new_tokens)
    history = trainer.train()
    after = accuracy(trainer.model, trainer.tokenizer, held, exact_answer, max_new_tokens=cfg.max_new_tokens)
    summary = {
        "accuracy_before": before,
        "accuracy_after": after,
        "held_out_problems": len(held),
        "steps": len(history),
        "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "final_reward": history[-1]["reward"] if history else None,
        "device": str(trainer.device),
        "compute_dtype": history[-1]["compute_dtype"] if history else None,
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
