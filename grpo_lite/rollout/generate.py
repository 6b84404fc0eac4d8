"""Rollouts: G sampled completions for each prompt, with masks and truncation flags.

Shapes: B prompts, G completions per prompt, N = B*G sequences (group by group), P prompt tokens
(left-padded), T completion tokens (right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grpo_lite.rollout.cache import can_compile
from grpo_lite.rollout.decode import decode
from grpo_lite.rollout.prompts import encode_prompts, is_chat, render_prompt
from grpo_lite.rollout.sampling import Sampling
from grpo_lite.rollout.turns import ToolUse, decode_with_tools


@dataclass
class Rollout:
    """One step's sampled data, N = B*G rows ordered group by group; tensors on the sampler's device."""

    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor  # (N, P)
    completion_ids: torch.Tensor  # (N, T) right-padded
    completion_mask: torch.Tensor  # (N, T) 1 up to and including EOS; 0 for padding and after
    truncated: torch.Tensor  # (N,) bool: hit max_new_tokens without EOS or stop string
    completions: list[str]  # (N,) decoded completion text, EOS left out (with tools: the whole exchange)
    prompt_texts: list[str]  # (N,) rendered prompt text
    tool_mask: torch.Tensor | None = None  # (N, T) 1 on tokens a tool wrote (its answers); None: no tools
    exchanges: list[list[dict[str, Any]]] | None = None  # (N,) with tools: assistant and tool turns
    tool_seconds: float = 0.0  # time the rollout waited for tools' answers with nothing to decode

    @property
    def loss_mask(self) -> torch.Tensor:
        """(N, T) 1 on the tokens the model wrote: what the loss, the KL, the entropy and every length
        normalisation count (the completion mask without the tools' answers)."""
        if self.tool_mask is None:
            return self.completion_mask
        return self.completion_mask * (1 - self.tool_mask)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) tokens the model wrote in each completion."""
        return self.loss_mask.sum(dim=1)

    @property
    def extents(self) -> torch.Tensor:
        """(N,) tokens in each completion, the tools' answers included: where each one ends."""
        return self.completion_mask.sum(dim=1)

    def for_rewards(self, *, chat: bool) -> list[Any]:
        """The completions as the reward functions get them: text, or a chat's assistant message; with
        tools, each exchange as messages (assistant turns and ``tool`` messages, TRL's multi-turn form)."""
        if self.exchanges is not None:
            return self.exchanges
        return [[{"role": "assistant", "content": c}] for c in self.completions] if chat else self.completions

    def tool_columns(self) -> dict[str, list[int]]:
        """With tools, the reward columns ``tool_calls`` and ``tool_failures``: counts per completion."""
        if self.exchanges is None:
            return {}
        tools = [[m for m in turns if m["role"] == "tool"] for turns in self.exchanges]
        return {
            "tool_calls": [len(t) for t in tools],
            "tool_failures": [sum(m["failed"] for m in t) for t in tools],
        }

    def rows(
        self, idx: torch.Tensor, extents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Prompt + completion of the rows ``idx``, cut to the longest completion among them: (ids, attention
        mask, loss mask, T), each (n, P+T) or (n, T). ``extents``: (N,) on the CPU, so no wait."""
        T = max(int(extents[idx].max()), 1)
        ids = torch.cat([self.prompt_ids[idx], self.completion_ids[idx, :T]], dim=1)  # (n, P+T)
        attn = torch.cat([self.prompt_mask[idx], self.completion_mask[idx, :T]], dim=1)  # (n, P+T)
        return ids, attn, self.loss_mask[idx, :T], T


def completion_mask_and_truncation(
    completion_ids: torch.Tensor, eos_ids: list[int], pad_id: int, ended_by_stop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which generated tokens belong to each completion, and which completions were cut off.

    A completion runs up to and including its first EOS; one that a stop string ended runs up to
    the padding generation put after it; one with neither hit max_new_tokens: it is truncated.

    Args:
        completion_ids: (N, T) generated tokens (padding after a finished sequence).
        ended_by_stop: (N,) bool, the decoded text ends with a stop string (no EOS was sampled).
    Returns:
        (N, T) long mask, (N,) bool truncated.
    """
    N, T = completion_ids.shape
    positions = torch.arange(T, device=completion_ids.device).expand(N, T)  # (N, T)
    never = torch.full((N, T), T, device=completion_ids.device)

    def first(hit: torch.Tensor) -> torch.Tensor:  # (N,) index of the first hit, T if none
        return torch.where(hit, positions, never).min(dim=1).values

    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))  # (N, T)
    has_eos = is_eos.any(dim=1) & ~ended_by_stop  # (N,)
    end = torch.where(has_eos, first(is_eos) + 1, T)  # (N,) exclusive end, EOS included
    end = torch.where(ended_by_stop, first(completion_ids == pad_id), end)
    mask = (positions < end.unsqueeze(1)).long()  # (N, T)
    return mask, ~has_eos & ~ended_by_stop


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    *,
    group_size: int,
    sampling: Sampling,
    max_prompt_tokens: int,
    stop_strings: tuple[str, ...] = (),
    sampler: str = "grpo_lite",
    compiled: bool = False,
    tools: Any = None,
) -> Rollout:
    """Sample ``group_size`` completions for each of B prompts (strings or chat messages).

    ``model`` samples: the policy itself or its merged rollout copy (``rollout/weights.py``).
    ``sampler``: ``"grpo_lite"`` (``decode.decode``) or ``"transformers"`` (``model.generate``).
    ``compiled``: a static KV cache and a compiled decode step where the model allows it (a plain
    transformers model: the merged copy; ``decode_cache.can_compile``), ``generate``'s static cache.
    ``tools``: a ``rollout.turns.ToolUse`` (the tool box, the call format, ``max_tool_calls``): the
    model's tool calls are answered mid-answer (``turns.py``); None: no tools.
    The model is put in eval mode with the KV cache on for generation; its mode is restored after.
    """
    texts = [render_prompt(p, tokenizer, tools=tools.schemas if tools else None) for p in prompts]
    ids, mask = encode_prompts(
        texts, tokenizer, max_prompt_tokens=max_prompt_tokens, chat=[is_chat(p) for p in prompts]
    )
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        if tools is not None:
            return _with_tools(model, tokenizer, texts, ids.to(device), mask.to(device), group_size=group_size,
                               sampling=sampling, eos_ids=eos_ids, stop_strings=stop_strings, tools=tools)  # fmt: skip
        if sampler == "grpo_lite":
            completion_ids = decode(
                model, ids.to(device), mask.to(device), group_size=group_size,
                max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                top_k=sampling.top_k, top_p=sampling.top_p, eos_ids=eos_ids, pad_id=tokenizer.pad_token_id,
                tokenizer=tokenizer, stop_strings=stop_strings, compiled=compiled and can_compile(model),
            )  # fmt: skip
        else:
            completion_ids = _transformers_generate(
                model, tokenizer, ids.to(device), mask.to(device), group_size=group_size,
                sampling=sampling, eos_ids=eos_ids, stop_strings=stop_strings, static_cache=compiled,
            )  # fmt: skip
    finally:
        model.train(was_training)
    return _rollout(tokenizer, texts, ids.to(device), mask.to(device), completion_ids, group_size=group_size,
                    eos_ids=eos_ids, stop_strings=stop_strings)  # fmt: skip


def _rollout(
    tokenizer: Any, texts: list[str], ids: torch.Tensor, mask: torch.Tensor, completion_ids: torch.Tensor, *,
    group_size: int, eos_ids: Any, stop_strings: tuple[str, ...],
) -> Rollout:  # fmt: skip
    """The sampled ids as a Rollout: their text, which ended by a stop string or EOS, which ran out."""
    # the text needs the ids on the CPU (one copy); the tensors stay on the device for the whole step
    raw = [
        tokenizer.decode(row, skip_special_tokens=True) for row in _cut_at_eos(completion_ids.cpu(), eos_ids)
    ]
    ended_by_stop = torch.tensor([any(r.endswith(s) for s in stop_strings) for r in raw], dtype=torch.bool)
    comp_mask, truncated = completion_mask_and_truncation(
        completion_ids, eos_ids, tokenizer.pad_token_id, ended_by_stop.to(ids.device)
    )
    return Rollout(
        prompt_ids=ids.repeat_interleave(group_size, dim=0),
        prompt_mask=mask.repeat_interleave(group_size, dim=0),
        completion_ids=completion_ids,
        completion_mask=comp_mask,
        truncated=truncated,
        completions=raw,
        prompt_texts=[t for t in texts for _ in range(group_size)],
    )


def _with_tools(
    model: Any, tokenizer: Any, texts: list[str], ids: torch.Tensor, mask: torch.Tensor, *, group_size: int,
    sampling: Sampling, eos_ids: list[int], stop_strings: tuple[str, ...], tools: ToolUse,
) -> Rollout:  # fmt: skip
    """``generate`` with tool calls answered mid-answer (``turns.decode_with_tools``)."""
    turns = decode_with_tools(
        model, ids, mask, group_size=group_size, max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, eos_ids=eos_ids,
        pad_id=tokenizer.pad_token_id, tokenizer=tokenizer, stop_strings=stop_strings,
        tool_format=tools.format, toolbox=tools.box, max_tool_calls=sampling.max_tool_calls,
    )  # fmt: skip
    T = turns.completion_ids.shape[1]
    positions = torch.arange(T, device=ids.device)
    return Rollout(
        prompt_ids=ids.repeat_interleave(group_size, dim=0),
        prompt_mask=mask.repeat_interleave(group_size, dim=0),
        completion_ids=turns.completion_ids,
        completion_mask=(positions[None, :] < turns.lengths[:, None]).long(),
        truncated=turns.truncated,
        completions=[tokenizer.decode(row[: int(n)], skip_special_tokens=True)
                     for row, n in zip(turns.completion_ids.tolist(), turns.lengths.tolist(), strict=True)],
        prompt_texts=[t for t in texts for _ in range(group_size)],
        tool_mask=turns.tool_mask,
        exchanges=turns.exchanges,
        tool_seconds=turns.tool_seconds,
    )  # fmt: skip


def _transformers_generate(
    model: Any,
    tokenizer: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int,
    sampling: Sampling,
    eos_ids: list[int],
    stop_strings: tuple[str, ...],
    static_cache: bool = False,
) -> torch.Tensor:
    """(N, T) completion ids from transformers' ``generate`` (the ``sampler="transformers"`` path)."""
    from transformers import GenerationConfig

    gen = GenerationConfig(
        do_sample=True,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        max_new_tokens=sampling.max_new_tokens,
        num_return_sequences=group_size,
        repetition_penalty=1.0,  # the loss assumes plain temperature sampling
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        use_cache=True,
        stop_strings=list(stop_strings) or None,
        cache_implementation="static" if static_cache else None,
    )
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=gen,
        tokenizer=tokenizer if stop_strings else None,
    )  # (N, P+T)
    return out[:, ids.shape[1] :]


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the generation config (chat models often have several) and the tokenizer."""
    ids = model.generation_config.eos_token_id
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    if not found:
        raise ValueError("the model and tokenizer define no EOS token; cannot tell where completions end")
    return sorted(found)


def _cut_at_eos(completion_ids: torch.Tensor, eos_ids: list[int]) -> list[list[int]]:
    rows = []
    for row in completion_ids.tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        rows.append(row[:end])
    return rows
