"""One sequence per prompt in the log-prob pass: a prompt shared by k completions is computed once.

GRPO scores G completions of the same prompt. Laid out one row each, ``(N, P+T)``, the prompt's P
tokens go through the model G times. Packed, each distinct prompt becomes one row
``[prompt, completion 1, ..., completion k]`` of length ``P + k*T`` with an attention mask that keeps
the completions apart (each sees the prompt and its own earlier tokens, as in its own row) and
positions that restart after the prompt for every completion. The hidden state before each
completion token is then exactly the one of the unpacked layout (the same sums; a masked key adds
exactly zero), for ``P + k*T`` tokens of work instead of ``k*(P+T)`` — the linear layers, which are
most of the cost, scale with the tokens. Attention grows to ``(P + k*T)^2`` per packed row, small
next to the linear layers at these lengths.

Shapes: N rows, P prompt tokens (left-padded), T completion tokens, U distinct prompts among the N
rows, K the most completions one prompt has, L = P + K*T, H hidden size.
"""

from __future__ import annotations

from typing import Any

import torch


def packed_hidden(
    decoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, T: int
) -> torch.Tensor:
    """The decoder's final hidden states before each completion token, computed packed.

    Args:
        decoder: the transformers backbone (``lm.get_decoder()``), called with a custom 4D mask.
        input_ids, attention_mask: (N, P+T) left-padded prompt then completion, rows of one prompt
            identical in their first P columns (as a rollout lays them out).
        T: completion tokens per row.
    Returns:
        (N, T, H): row i's state at prompt position P-1 and at its completion tokens 0..T-2, the
        same as ``decoder(input_ids, attention_mask)[:, -T-1:-1]``.
    """
    N, P = input_ids.shape[0], input_ids.shape[1] - T
    device = input_ids.device
    prompts = torch.cat([input_ids[:, :P], attention_mask[:, :P]], dim=1)  # (N, 2P) ids and padding
    unique, group = torch.unique(prompts, dim=0, return_inverse=True)  # (U, 2P), (N,)
    U = unique.shape[0]
    counts = torch.bincount(group, minlength=U)  # (U,)
    K = int(counts.max())
    order = torch.argsort(group, stable=True)  # rows grouped by prompt
    first = torch.cumsum(counts, 0) - counts  # (U,) index in ``order`` of each group's first row
    slot = torch.empty(N, dtype=torch.long, device=device)
    slot[order] = torch.arange(N, device=device) - first[group[order]]  # (N,) row's place in its group
    L = P + K * T
    t = torch.arange(T, device=device)
    cols = P + slot[:, None] * T + t[None]  # (N, T) where row i's completion sits in its packed row

    ids = torch.zeros(U, L, dtype=input_ids.dtype, device=device)  # (U, L); unused slots stay 0
    ids[:, :P] = unique[:, :P]
    ids[group[:, None], cols] = input_ids[:, P:]
    prompt_mask = unique[:, P:]  # (U, P)
    positions = torch.zeros(U, L, dtype=torch.long, device=device)  # (U, L)
    positions[:, :P] = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    positions[group[:, None], cols] = prompt_mask.sum(1)[group][:, None] + t[None]  # restart after the prompt
    owner = torch.full((U, L), -2, dtype=torch.long, device=device)  # -1 prompt, j >= 0 completion slot j
    owner[:, :P] = -1
    owner[group[:, None], cols] = slot[:, None].expand(N, T)
    valid = torch.zeros(U, L, dtype=torch.bool, device=device)  # (U, L) a real token, as a key
    valid[:, :P] = prompt_mask.bool()
    valid[group[:, None], cols] = attention_mask[:, P:].bool()

    q, k = owner[:, :, None], owner[:, None, :]  # (U, L, 1), (U, 1, L)
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()  # (L, L) key not after query
    sees_prompt = k == -1  # every query sees the (real) prompt tokens before it
    same_completion = (k == q) & (k >= 0)  # ... and the earlier tokens of its own completion
    allowed = (sees_prompt | same_completion) & causal & valid[:, None, :]  # (U, L, L)
    allowed |= torch.eye(L, dtype=torch.bool, device=device)  # padding attends to itself: no empty row
    dtype = decoder.get_input_embeddings().weight.dtype  # the residual stream's, so the attention's
    mask = torch.zeros(U, 1, L, L, dtype=dtype, device=device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # (U, 1, L, L) additive

    hidden = decoder(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
    ).last_hidden_state
    before = torch.where(
        t[None] == 0, torch.full_like(cols, P - 1), cols - 1
    )  # (N, T) the state that predicts
    return hidden[group[:, None], before]  # (N, T, H)
