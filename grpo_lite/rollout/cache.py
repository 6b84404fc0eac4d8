"""How the decode loop steps the model: the KV cache it keeps and how one token goes through.

``CacheSteps`` (the default, any model, any device): transformers' dynamic cache, one prefill per
prompt repeated G times, and finished rows taken out of the batch (``drop``).

``CompiledSteps`` (``GRPOConfig.compile_rollouts``; the merged rollout copy): a ``StaticCache`` of a
fixed length and every decode step through transformers' compiled call of the model
(``get_compiled_call``: ``torch.compile``, mode ``reduce-overhead``, which replays CUDA graphs on a
GPU), the road transformers' own ``generate`` takes with ``cache_implementation="static"``. Shapes
never change from one token to the next (the cache and the attention mask have their full length;
position and cache index are tensors updated in place), so the step compiles once per batch shape
and cache length; the cache is kept on the model and reused by the next rollout of the same shape,
so a captured graph keeps its addresses. Rows cannot leave a static batch: ``drop`` is not offered.
The prompt is prefilled for each of the N rows (no shared prefill), eagerly.

Shapes: B prompts, G samples per prompt, N = B*G rows (n still in the batch), P prompt tokens, L
cache length, V vocabulary.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from grpo_lite.logprobs import base_lm

CACHE_ROUNDING = 256  # a static cache's length is P + T rounded up to this: fewer recompiles as P varies


def cache_argument(model: Any) -> str:
    """The KV cache's name in the model's forward and output: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (before)."""
    lm = base_lm(model)  # a peft wrapper's forward takes **kwargs
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"


class CacheSteps:
    """Dynamic KV cache: prefill once per prompt, then one token per row and call."""

    can_drop = True

    def __init__(
        self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, group_size: int,
        max_new_tokens: int, share_prefill: bool = True,
    ) -> None:  # fmt: skip
        B, P = prompt_ids.shape
        N, G = B * group_size, group_size
        if not share_prefill:
            prompt_ids, prompt_mask = (t.repeat_interleave(G, dim=0) for t in (prompt_ids, prompt_mask))
        positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B or N, P), left padding aware
        self.model, self.cache_arg, self.P = model, cache_argument(model), P
        out = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )  # prefill once per prompt (or per row)
        self.cache = getattr(out, self.cache_arg)
        self.logits = out.logits[:, -1]  # (B or N, V) the first token's logits
        if share_prefill:
            self.cache.batch_repeat_interleave(G)  # (B, ...) -> (N, ...), group by group
            self.logits = self.logits.repeat_interleave(G, dim=0)  # (N, V)
            positions, prompt_mask = (
                positions.repeat_interleave(G, dim=0),
                prompt_mask.repeat_interleave(G, dim=0),
            )
        self.attention = torch.ones(
            (N, P + max_new_tokens), dtype=prompt_mask.dtype, device=prompt_ids.device
        )
        self.attention[:, :P] = prompt_mask  # (N, P+T), sliced per step (a view, no copy)
        self.next_position = positions[:, -1] + 1  # (N,)

    def drop(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` ((n',) indices into the current batch), cache included."""
        self.cache.batch_select_indices(keep)
        self.attention, self.next_position = self.attention[keep], self.next_position[keep]

    def step(self, token: torch.Tensor, t: int) -> torch.Tensor:
        """Feed token ``t`` ((n,) ids) of each row; returns the next (n, V) logits."""
        out = self.model(
            input_ids=token[:, None],
            attention_mask=self.attention[:, : self.P + t + 1],
            position_ids=(self.next_position + t)[:, None],
            use_cache=True,
            **{self.cache_arg: self.cache},
        )
        return out.logits[:, -1]


class CompiledSteps:
    """Static KV cache and a compiled decode step (CUDA graphs on a GPU)."""

    can_drop = False

    def __init__(
        self, model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, group_size: int,
        max_new_tokens: int, share_prefill: bool = True,
    ) -> None:  # fmt: skip
        del share_prefill  # a static batch is prefilled row by row
        ids, mask = (t.repeat_interleave(group_size, dim=0) for t in (prompt_ids, prompt_mask))  # (N, P)
        (N, P), device = ids.shape, ids.device
        L = -(-(P + max_new_tokens) // CACHE_ROUNDING) * CACHE_ROUNDING
        self.model, self.cache_arg, self.P = model, cache_argument(model), P
        self.cache = static_cache(model, N, L)
        self.attention = torch.zeros((N, L), dtype=mask.dtype, device=device)  # (N, L) full length every step
        self.attention[:, :P] = mask
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (N, P)
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
            cache_position=torch.arange(P, device=device), **{self.cache_arg: self.cache},
        )  # fmt: skip
        self.logits = out.logits[:, -1]  # (N, V)
        self.position = positions[:, -1:] + 1  # (N, 1) updated in place
        self.cache_position = torch.full((1,), P, dtype=torch.long, device=device)  # (1,) updated in place
        self.forward = model.get_compiled_call(None)  # transformers' CompileConfig: reduce-overhead

    def drop(self, keep: torch.Tensor) -> None:
        raise NotImplementedError("rows cannot leave a static batch")

    def step(self, token: torch.Tensor, t: int) -> torch.Tensor:
        """Feed token ``t`` ((N,) ids) of each row; returns the next (N, V) logits (a fresh tensor: a
        CUDA graph's output is overwritten by its next replay)."""
        self.attention[:, self.P + t] = 1
        if t:
            self.position += 1
            self.cache_position += 1
        out = self.forward(
            input_ids=token[:, None],
            attention_mask=self.attention,
            position_ids=self.position,
            cache_position=self.cache_position,
            use_cache=True,
            **{self.cache_arg: self.cache},
        )
        return out.logits[:, -1].clone()


def static_cache(model: Any, rows: int, length: int) -> Any:
    """A ``StaticCache`` for ``rows`` x ``length``, emptied; the model's last one when its shape fits."""
    from transformers import StaticCache

    key = (rows, length)
    kept = getattr(model, "_grpo_lite_static_cache", None)
    if kept is not None and kept[0] == key:
        kept[1].reset()
        return kept[1]
    cache = StaticCache(config=model.config, max_cache_len=length)
    model._grpo_lite_static_cache = (key, cache)
    return cache


def can_compile(model: Any) -> bool:
    """Whether ``CompiledSteps`` applies: a plain transformers model (the merged rollout copy), not
    a peft or quantized one."""
    return (
        callable(getattr(model, "get_compiled_call", None))
        and not hasattr(model, "peft_config")
        and not any(type(m).__name__.startswith("Linear4bit") for m in model.modules())
    )
