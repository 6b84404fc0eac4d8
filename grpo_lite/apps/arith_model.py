"""The tiny model of the earlier demo, kept for the tests: a tiny Llama warm-started on ``a+b=`` labels
that are right only 40% of the time, built once into the cache (:func:`demo_model`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from grpo_lite.policy.offline import build_once, cache_dir

OPERANDS = 20  # tiny: problems a+b with a, b in [0, 20): 400 in all
SPLIT_SEED = 1234  # fixed: the held-out problems must be the ones the cached model never saw
P_RIGHT = 0.4  # share of correct labels in the warm start; the rest are a+b+1
MODEL_VERSION = "tiny-arith-v1"


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

    from grpo_lite.policy.tiny import build_char_tokenizer

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
