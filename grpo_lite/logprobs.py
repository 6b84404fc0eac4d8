"""Per-token log-probs of completions, without ever holding the (N x T x V) logits.

Shapes: N sequences (prompt + completion), P prompt tokens, T completion tokens, H hidden size,
V vocabulary, M = number of completion tokens actually scored (mask == 1).

The model's backbone gives the final hidden states; the output head is applied here, a slice of M
rows at a time: ``hidden[rows] @ W.T / temperature -> log_softmax -> gather``. Backward recomputes
each slice's logits instead of saving them, so the peak is one slice x V in both directions: what
lets a 152k-token vocabulary (Qwen) fit on a small GPU. For a plain (or scaled) head the backward is
the closed form ``(onehot - softmax) @ W`` on each recomputed slice, without an autograd graph;
with soft-capping it differentiates each slice with autograd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from grpo_lite.packing import packed_hidden

CHUNK_BYTES = 64 * 2**20  # one fp32 slice of logits at most this large


def chunk_rows_for(vocab_size: int, chunk_tokens: int = 0) -> int:
    """Rows per slice: ``chunk_tokens`` if given, else as many as fit in CHUNK_BYTES of fp32 logits."""
    return chunk_tokens if chunk_tokens > 0 else max(1, CHUNK_BYTES // (4 * vocab_size))


def _slice_logits(h: torch.Tensor, weight: torch.Tensor, head: HeadSpec) -> torch.Tensor:
    logits = (h @ weight.T).float()  # (m, V) matmul in the model's dtype, softmax in fp32
    if head.logit_scale != 1.0:
        logits = logits * head.logit_scale
    if head.softcap:
        logits = head.softcap * torch.tanh(logits / head.softcap)
    return logits / head.temperature


class HeadSpec:
    """How the output head turns hidden states into logits (scale, soft-cap, sampling temperature)."""

    def __init__(self, temperature: float = 1.0, logit_scale: float = 1.0, softcap: float | None = None):
        self.temperature = temperature
        self.logit_scale = logit_scale
        self.softcap = softcap


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log p(target | hidden) for M rows, computed and differentiated one slice at a time."""

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, head: HeadSpec, rows: int,
        entropy_sink: list[torch.Tensor] | None = None,
    ):  # type: ignore[override]  # fmt: skip
        # hidden (M, H), weight (V, H), targets (M,); entropy_sink: receives the (M,) entropies, no grad,
        # from the same slices of logits (no second pass through the head)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # (M,)
        lse = torch.empty_like(out)  # (M,) log of each row's partition function, reused in backward
        entropy = torch.empty_like(out) if entropy_sink is not None else None
        for start in range(0, hidden.shape[0], rows):
            logits = _slice_logits(hidden[start : start + rows], weight, head)  # (m, V)
            picked = logits.gather(1, targets[start : start + rows, None]).squeeze(1)  # (m,)
            lse[start : start + rows] = torch.logsumexp(logits, dim=1)
            out[start : start + rows] = picked - lse[start : start + rows]
            if entropy is not None:  # H = lse - sum(p * logits), p = exp(logits - lse)
                p = (logits - lse[start : start + rows, None]).exp_()
                entropy[start : start + rows] = lse[start : start + rows] - p.mul_(logits).sum(dim=1)
        if entropy_sink is not None and entropy is not None:
            entropy_sink.append(entropy)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.head, ctx.rows = head, rows
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors
        head, rows = ctx.head, ctx.rows
        if not head.softcap:
            return _linear_head_backward(ctx, hidden, weight, targets, lse, grad_out) + (
                None,
                None,
                None,
                None,
            )
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], rows):
            with torch.enable_grad():
                h = hidden[start : start + rows].detach().requires_grad_(ctx.needs_input_grad[0])
                w = weight.detach().requires_grad_(ctx.needs_input_grad[1])
                logits = _slice_logits(h, w, head)  # (m, V) recomputed, not saved from forward
                picked = logits.gather(1, targets[start : start + rows, None]).squeeze(1)
                logp = picked - torch.logsumexp(logits, dim=1)  # (m,)
                inputs = [
                    t for t, need in ((h, ctx.needs_input_grad[0]), (w, ctx.needs_input_grad[1])) if need
                ]
                grads = torch.autograd.grad(logp, inputs, grad_out[start : start + rows])
            it = iter(grads)
            if grad_hidden is not None:
                grad_hidden[start : start + rows] = next(it)
            if grad_weight is not None:
                grad_weight += next(it).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def _linear_head_backward(
    ctx: Any,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    grad_out: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Backward of log p(target) when logits = s * hidden @ W.T (no soft-cap), s = logit_scale / T.

    d log p_t / d logits = onehot(t) - softmax(logits), so with g = grad_out, one slice at a time:
    G = s * g * (onehot - p)  (m, V);  grad_hidden = G @ W;  grad_W += G.T @ hidden.
    The slice's logits are recomputed once and turned into G in place: no autograd graph, one
    (m, V) buffer.
    """
    head, rows = ctx.head, ctx.rows
    scale = head.logit_scale / head.temperature
    need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_hidden = torch.empty_like(hidden) if need_h else None
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
    for start in range(0, hidden.shape[0], rows):
        end = min(start + rows, hidden.shape[0])
        h = hidden[start:end]  # (m, H)
        probs = _slice_logits(h, weight, head).sub_(lse[start:end, None]).exp_()  # (m, V) softmax
        g = grad_out[start:end, None]  # (m, 1)
        grad_logits = probs.mul_(-g)  # (m, V): -g * p
        grad_logits.scatter_add_(1, targets[start:end, None], g)  # + g at the target
        grad_logits = grad_logits.mul_(scale).to(weight.dtype)  # (m, V)
        if grad_hidden is not None:
            grad_hidden[start:end] = grad_logits @ weight  # (m, H)
        if grad_weight is not None:
            grad_weight += (grad_logits.T @ h).float()  # (V, H)
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return grad_hidden, grad_weight


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    head: HeadSpec | None = None,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) for flat rows, chunked in forward and backward.

    Args:
        hidden: (M, H) final hidden states (after the final norm).
        weight: (V, H) output-head weight.
        targets: (M,) token ids.
    Returns:
        (M,) fp32 log-probs.
    """
    rows = chunk_rows_for(weight.shape[0], chunk_tokens)
    return _ChunkedTokenLogprobs.apply(hidden, weight, targets, head or HeadSpec(), rows)


def token_logprobs_and_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    head: HeadSpec | None = None,
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_logprobs`` and, from the same slices of logits, each row's entropy (no grad): what
    ``token_entropy`` gives, without a second pass through the output head. (M,) each."""
    rows = chunk_rows_for(weight.shape[0], chunk_tokens)
    sink: list[torch.Tensor] = []
    logps = _ChunkedTokenLogprobs.apply(hidden, weight, targets, head or HeadSpec(), rows, sink)
    return logps, sink[0]


@torch.no_grad()
def token_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, *, head: HeadSpec | None = None, chunk_tokens: int = 0
) -> torch.Tensor:
    """Entropy of the next-token distribution for each row of (M, H) hidden states; (M,), no grad."""
    head = head or HeadSpec()
    rows = chunk_rows_for(weight.shape[0], chunk_tokens)
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = _slice_logits(hidden[start : start + rows], weight, head)  # (m, V)
        logp = torch.log_softmax(logits, dim=1)
        out[start : start + rows] = -(logp.exp() * logp).sum(dim=1)
    return out


def naive_token_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, head: HeadSpec | None = None
) -> torch.Tensor:
    """The reference: full logits, ``log_softmax(logits).gather(...)``. Used by tests and benchmarks."""
    logits = _slice_logits(hidden, weight, head or HeadSpec())  # (M, V)
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)


# ---- from a causal LM ------------------------------------------------------------------------------


def head_spec(model: nn.Module, temperature: float) -> HeadSpec:
    """The output head's logit scale and soft-cap, read from the model config (Cohere, Gemma 2)."""
    config = model.config
    return HeadSpec(
        temperature=temperature,
        logit_scale=float(getattr(config, "logit_scale", None) or 1.0),
        softcap=getattr(config, "final_logit_softcapping", None),
    )


def base_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def completion_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    temperature: float,
    chunk_tokens: int = 0,
    with_entropy: bool = False,
    pack: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and optionally entropies) of the completion tokens of prompt+completion sequences;
    ``pack``: rows that share a prompt go through the model as one sequence (``grpo_lite.packing``).

    Args:
        input_ids: (N, P+T) left-padded prompt followed by the completion.
        attention_mask: (N, P+T) 1 for real tokens.
        completion_mask: (N, T) 1 for the completion tokens to score.
    Returns:
        (N, T) log-probs, 0 where ``completion_mask`` is 0; and (N, T) entropies or None.
    """
    lm: Any = base_lm(model)
    T = completion_mask.shape[1]
    if pack:
        hidden = packed_hidden(lm.get_decoder(), input_ids, attention_mask, T)  # (N, T, H)
    else:
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)  # (N, P+T) left padding aware
        hidden = lm.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (N, P+T, H)
        hidden = hidden[:, -T - 1 : -1]  # (N, T, H): the state before each completion token predicts it
    rows = completion_mask.bool()  # (N, T)
    weight = lm.get_output_embeddings().weight  # (V, H)
    head = head_spec(lm, temperature)
    flat_hidden = hidden[rows]  # (M, H)
    targets = input_ids[:, -T:][rows]  # (M,)
    if with_entropy:
        flat, ent = token_logprobs_and_entropy(
            flat_hidden, weight, targets, head=head, chunk_tokens=chunk_tokens
        )
    else:
        flat = token_logprobs(flat_hidden, weight, targets, head=head, chunk_tokens=chunk_tokens)
    logps = torch.zeros(completion_mask.shape, dtype=flat.dtype, device=flat.device)
    logps = logps.masked_scatter(rows, flat)  # (N, T)
    entropy = torch.zeros_like(logps).masked_scatter(rows, ent) if with_entropy else None
    return logps, entropy


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The reference model: the same weights with the LoRA adapters switched off, no grad."""
    disable = getattr(model, "disable_adapter", None)
    ctx = disable() if callable(disable) else contextlib.nullcontext()
    with ctx, torch.no_grad():
        yield
