"""The offline demo: GRPO makes a real pretrained model right more often, on a CPU, in minutes.

The default, ``model="smollm2-135m-instruct"``: SmolLM2-135M-Instruct (Q4_1 weights from the package
index, dequantized; ``offline.py``) is asked one-digit sums and products ("What is 7 + 8?", "What is
6 * 9?"). Greedy, it answers about a quarter of them right: it often says a wrong number ("7 + 7 is
11") or talks past its token budget. Sampled, it is right now and then, which is all GRPO needs.
Reward: the number it answers (its last number) equals the answer; nothing pays for form alone.

``model="tiny"``: the earlier rounds' demo, kept for the tests: a tiny Llama warm-started on ``a+b=``
labels that are right only 40% of the time, rewarded for an exact ``<answer>`` (+ a little format).

Both: 4-bit NF4 + LoRA through the normal engine; greedy accuracy on held-out problems (never trained
on) before and after; summary.json, metrics.jsonl, reward_curve.png and the adapter in the run folder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grpo_lite.config import ComputeDtype, GRPOConfig
from grpo_lite.offline import build_once, cache_dir

DEMO_MODELS = ("smollm2-135m-instruct", "tiny")
OPERANDS = 20  # tiny: problems a+b with a, b in [0, 20): 400 in all
SPLIT_SEED = 1234  # fixed: the held-out problems must be the ones the cached model never saw
P_RIGHT = 0.4  # share of correct labels in the warm start; the rest are a+b+1
MODEL_VERSION = "tiny-arith-v1"


def one_digit_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """SmolLM2's task, (train rows, held-out rows): "What is a + b?" (a, b in 1-9) and "What is a * b?"
    (a, b in 2-9) as chat prompts, the answer in the ``answer`` column; 145 problems, 48 held out."""
    problems = [(f"What is {a} + {b}?", a + b) for a in range(1, 10) for b in range(1, 10)]
    problems += [(f"What is {a} * {b}?", a * b) for a in range(2, 10) for b in range(2, 10)]
    random.Random(SPLIT_SEED).shuffle(problems)
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": str(a)} for q, a in problems]
    held = len(rows) // 3
    return rows[held:], rows[:held]


def arithmetic_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tiny model's task, (train rows, held-out rows): chat prompts ``a+b=``, answers in ``answer``."""
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
    """The tiny model's settings: 8 prompts x 8 completions a step, 8 new tokens, LoRA rank 8, 4-bit.
    ``compute_dtype="bfloat16"`` runs the GPU's 16-bit path on the CPU."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=8, group_size=8,
        prompts_per_step=8, micro_batch_size=64, learning_rate=2e-3, lora_rank=8, lora_alpha=16,
        max_steps=steps, save_steps=0, seed=seed, device="cpu", compute_dtype=compute_dtype,
    )  # fmt: skip


def smollm2_config(
    model: str | Path, output_dir: Path, *, seed: int, steps: int, compute_dtype: ComputeDtype = "auto"
) -> GRPOConfig:
    """SmolLM2's settings: 4 prompts x 8 completions of up to 16 tokens a step, LoRA rank 16 on every
    linear layer, 4-bit NF4, learning rate 5e-4 (high for LoRA, which a 40-step run needs)."""
    return GRPOConfig(
        model=str(model), output_dir=str(output_dir), load_in_4bit=True, max_new_tokens=16, group_size=8,
        prompts_per_step=4, micro_batch_size=32, learning_rate=5e-4, lora_rank=16, lora_alpha=32,
        max_steps=steps, save_steps=0, seed=seed, device="cpu", compute_dtype=compute_dtype,
    )  # fmt: skip


@dataclass(frozen=True)
class DemoRun:
    """What a demo trains with: rows, settings, rewards; ``eval_reward`` scores the held-out rows."""

    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    cfg: GRPOConfig
    reward_funcs: list[Callable[..., Any]]
    reward_weights: list[float]
    eval_reward: Callable[..., Any]


def demo_run(
    model: str, output_dir: str | Path, *, seed: int = 0, steps: int | None = None, **settings: Any
) -> DemoRun:
    """The demo of ``model`` (one of DEMO_MODELS), built on first use; ``steps`` defaults to 40
    (SmolLM2) or 80 (tiny); ``settings`` override GRPOConfig fields (e.g. ``compute_dtype``)."""
    from grpo_lite.offline import resolve_model
    from rewards import answer_tag_format, exact_answer, last_number_accuracy

    if model not in DEMO_MODELS:
        raise ValueError(f"--model must be one of {', '.join(DEMO_MODELS)}; got {model!r}")
    if steps is not None and steps <= 0:
        raise ValueError(f"--steps must be > 0; got {steps}")
    rewards: list[Callable[..., Any]]
    if model == "tiny":
        train, held = arithmetic_split()
        cfg = demo_config(demo_model(), Path(output_dir), seed=seed, steps=steps or 80)
        rewards, weights = [exact_answer, answer_tag_format], [1.0, 0.1]
    else:
        train, held = one_digit_split()
        cfg = smollm2_config(resolve_model(model), Path(output_dir), seed=seed, steps=steps or 40)
        rewards, weights = [last_number_accuracy], [1.0]
    return DemoRun(train, held, cfg.replace(**settings), rewards, weights, eval_reward=rewards[0])


def run_demo(
    output_dir: str | Path,
    *,
    model: str = "smollm2-135m-instruct",
    seed: int = 0,
    steps: int | None = None,
    overwrite: bool = False,
    compute_dtype: ComputeDtype = "auto",
) -> dict[str, Any]:
    """Train ``model`` (one of DEMO_MODELS) with GRPO; measure held-out greedy accuracy before and after.
    ``seconds`` counts everything, the first use's download and conversion included."""
    from grpo_lite.evaluate import accuracy
    from grpo_lite.offline import WEIGHTS_NOTE
    from grpo_lite.trainer import GRPOTrainer

    start, output_dir = time.perf_counter(), Path(output_dir)
    demo = demo_run(model, output_dir, seed=seed, steps=steps, compute_dtype=compute_dtype)
    cfg, held = demo.cfg, demo.eval_rows
    trainer = GRPOTrainer(
        cfg, demo.train_rows, demo.reward_funcs, reward_weights=demo.reward_weights, overwrite=overwrite
    )
    before = accuracy(
        trainer.model, trainer.tokenizer, held, demo.eval_reward, max_new_tokens=cfg.max_new_tokens
    )
    print(
        f"held-out greedy accuracy before training: {100 * before:.0f}% of {len(held)} problems", flush=True
    )
    history = trainer.train()
    after = accuracy(
        trainer.model, trainer.tokenizer, held, demo.eval_reward, max_new_tokens=cfg.max_new_tokens
    )
    summary = {
        "model": model,
        "weights": WEIGHTS_NOTE if model == "smollm2-135m-instruct" else "built by grpo_lite.demo",
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
