"""Held-out accuracy: batched greedy decoding scored by a reward function (1.0 = correct)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from grpo_lite.logprobs import adapters_disabled
from grpo_lite.rollout import encode_prompts, is_chat, render_prompt


@torch.no_grad()
def greedy_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    max_prompt_tokens: int = 1024,
    stop_strings: Sequence[str] = (),
) -> list[str]:
    """Greedy completions (text, EOS left out) for prompts given as strings or chat messages; a
    completion ends with the first of ``stop_strings`` it writes (kept), as in training."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            texts = [render_prompt(p, tokenizer) for p in chunk]
            ids, mask = encode_prompts(
                texts, tokenizer, max_prompt_tokens=max_prompt_tokens, chat=[is_chat(p) for p in chunk]
            )
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                **({"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}),
            )  # (b, P+T)
            texts = tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
            out += [_cut_at_stop(t, stop_strings) for t in texts]
    finally:
        model.train(was_training)
    return out


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to and with the first stop string (a batch goes on until all its rows stopped)."""
    ends = [text.find(s) + len(s) for s in stop_strings if s in text]
    return text[: min(ends)] if ends else text


def held_out_scores(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    measures: dict[str, Callable[..., Sequence[Any]]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    batch_size: int = 64,
) -> tuple[dict[str, float], list[str]]:
    """One greedy completion per row, scored by every measure (the share of rows it gives 1.0):
    ({name: share}, completions)."""
    prompts = [row["prompt"] for row in rows]
    texts = greedy_completions(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop_strings=stop_strings,
    )
    completions: list[Any] = [
        [{"role": "assistant", "content": t}] if is_chat(p) else t
        for p, t in zip(prompts, texts, strict=True)
    ]
    columns = {k: [row[k] for row in rows] for k in rows[0] if k != "prompt"}
    shares = {
        name: sum(1 for s in fn(prompts=prompts, completions=completions, **columns) if s == 1.0) / len(rows)
        for name, fn in measures.items()
    }
    return shares, texts


def accuracy(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    reward: Callable[..., Sequence[Any]],
    *,
    prompt_column: str = "prompt",
    max_new_tokens: int = 256,
    batch_size: int = 64,
    base: bool = False,
    stop_strings: Sequence[str] = (),
) -> float:
    """Share of rows whose greedy completion gets reward 1.0. ``base=True`` disables the adapters."""
    rows = [
        {"prompt": row[prompt_column], **{k: v for k, v in row.items() if k != prompt_column}} for row in rows
    ]
    with adapters_disabled(model) if base else contextlib.nullcontext():
        shares, _ = held_out_scores(model, tokenizer, rows, {"accuracy": reward}, max_new_tokens=max_new_tokens,
                                    stop_strings=stop_strings, batch_size=batch_size)  # fmt: skip
    return shares["accuracy"]


def evaluate_model(
    model_name: str,
    rows: Sequence[dict[str, Any]],
    *,
    adapter: str | None = None,
    load_in_4bit: bool = True,
    max_new_tokens: int = 512,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Greedy ``math_accuracy`` of a base model (plus an adapter) on prompt rows with an ``answer``
    column. Greedy decoding and fixed batches make the number reproducible on the same machine."""
    from grpo_lite.model import load_base_model, load_tokenizer
    from rewards import math_accuracy

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_base_model(model_name, load_in_4bit=load_in_4bit, device=device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = load_tokenizer(model_name)
    prompts = [row["prompt"] for row in rows]
    texts = greedy_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    scores = math_accuracy(prompts, texts, answer=[row["answer"] for row in rows])
    correct = int(sum(scores))
    return {
        "model": model_name,
        "adapter": adapter,
        "load_in_4bit": load_in_4bit,
        "max_new_tokens": max_new_tokens,
        "n": len(rows),
        "correct": correct,
        "accuracy": correct / len(rows) if rows else 0.0,
        "completions": [
            {"answer": r["answer"], "completion": t, "correct": s == 1.0}
            for r, t, s in zip(rows, texts, scores, strict=True)
        ],
    }


def tool_accuracy(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    reward: Callable[..., Sequence[Any]],
    *,
    tools: Any,
    max_new_tokens: int,
    stop_strings: tuple[str, ...] = (),
    prompt_column: str = "prompt",
    max_tool_calls: int = 2,
    batch_size: int = 16,
    temperature: float = 1e-3,
    samples: int = 1,
) -> dict[str, float]:
    """Accuracy of ``samples`` answers per row at ``temperature`` (default 0.001: near-greedy, the most
    likely token but for near-ties) with the tools ``tools`` (a ``rollout.turns.ToolUse``; None: without
    tools), and the share of answers that called a tool (``tool_use``). The reward gets the whole
    exchange, as in training."""
    from grpo_lite.rollout import Sampling, generate

    sampling = Sampling(temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                        max_tool_calls=max_tool_calls)  # fmt: skip
    scores: list[float] = []
    used: list[bool] = []
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        prompts = [r[prompt_column] for r in chunk]
        rollout = generate(model, tokenizer, prompts, group_size=samples, sampling=sampling,
                           max_prompt_tokens=1024, stop_strings=stop_strings, tools=tools)  # fmt: skip
        columns = {k: [r[k] for r in chunk for _ in range(samples)] for k in chunk[0] if k != prompt_column}
        completions = rollout.for_rewards(chat=is_chat(prompts[0]))
        repeated = [p for p in prompts for _ in range(samples)]
        scores += [float(s or 0.0) for s in reward(repeated, completions, **columns)]
        used += [n > 0 for n in rollout.tool_columns().get("tool_calls", [0] * len(completions))]
    return {"accuracy": sum(scores) / len(scores), "tool_use": sum(used) / len(used)}
