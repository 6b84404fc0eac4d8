"""The policy's side of a step: log-probs without grad (reference: adapters off; old policy), the
gradient over micro-batches and the optimizer step. ``t``: the trainer (its model, settings,
optimizer, scheduler and loss scaler). Shapes: N completions, T completion tokens."""

from __future__ import annotations

import math
from typing import Any

import torch

from grpo_lite.logprobs import adapters_disabled, completion_logprobs
from grpo_lite.loss import grpo_loss, masked_mean, microbatch_weight
from grpo_lite.optim import clipped_step
from grpo_lite.policy.model import trainable_parameters
from grpo_lite.rollout import Rollout


def logps_no_grad(t: Any, rollout: Rollout, extents: torch.Tensor, *, reference: bool) -> torch.Tensor:
    """(N, T) log-probs without grad: of the base (adapters off) or of the current policy."""
    out = torch.zeros(rollout.completion_mask.shape, dtype=torch.float32, device=t.device)
    was_training = t.model.training
    t.model.eval()
    try:
        for idx in micro_batches(t, torch.arange(rollout.completion_ids.shape[0])):
            ids, attn, mask, T = rollout.rows(idx, extents)
            with adapters_disabled(t.model) if reference else torch.no_grad():
                logps, _ = logprobs_of(t, ids, attn, mask)
            out[idx, :T] = logps.float()
    finally:
        t.model.train(was_training)
    return out


def policy_update(
    t: Any,
    rollout: Rollout,
    sizes: tuple[torch.Tensor, torch.Tensor],
    adv: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    *,
    with_entropy: bool,
) -> dict[str, float]:
    """Accumulate gradients over micro-batches and take one optimizer step (or skip a bad one).
    ``sizes``: (N,) the model's tokens and the completions' extents (tools' answers included) on
    the CPU, so that no micro-batch waits on the device; the metrics stay tensors until one sync."""
    cfg, (lengths, extents) = t.cfg, sizes
    N = lengths.shape[0]
    # With beta = 0 a zero-advantage completion contributes exactly zero gradient: skip its passes.
    keep = torch.arange(N) if cfg.beta > 0 else torch.nonzero(adv.cpu() != 0).flatten()
    t.model.train()
    total_tokens = int(lengths.sum())
    sums: dict[str, torch.Tensor] = {}  # token-weighted sums of the micro-batches' metrics
    loss_sum = torch.zeros((), device=t.device)
    for idx in micro_batches(t, keep):
        ids, attn, mask, T = rollout.rows(idx, extents)
        logps, entropy = logprobs_of(t, ids, attn, mask, with_entropy=with_entropy)  # (n, T) each
        old = old_logps[idx, :T] if old_logps is not None else logps.detach()
        ref = ref_logps[idx, :T] if ref_logps is not None else None
        loss, m = grpo_loss(
            logps, old, ref, adv[idx], mask,
            eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta, loss_type=cfg.loss_type,
            max_tokens=cfg.max_new_tokens, importance_sampling=cfg.importance_sampling,
        )  # fmt: skip
        weight = microbatch_weight(cfg.loss_type, lengths[idx], total_seqs=N, total_tokens=total_tokens)
        t.scaler.scale(loss * weight).backward()
        loss_sum = loss_sum + loss.detach().float() * weight
        if entropy is not None:
            m["entropy"] = masked_mean(entropy.detach(), mask)
        tokens = float(lengths[idx].sum())
        for k, v in m.items():
            sums[k] = sums.get(k, 0) + v.float() * tokens
    if not len(keep):  # every gradient is exactly 0: step with zeros, as the full computation would
        for p in trainable_parameters(t.model):
            p.grad = torch.zeros_like(p)
    names = list(sums)
    loss_total, *values = torch.stack([loss_sum, *(sums[k] for k in names)]).tolist()  # the one sync
    kept_tokens = max(float(lengths[keep].sum()), 1.0)
    metrics = {k: v / kept_tokens for k, v in zip(names, values, strict=True)}
    metrics |= {"loss": loss_total, "skipped_compute_frac": 1 - len(keep) / N}
    metrics.setdefault("entropy", math.nan)
    return metrics | optimizer_step(t, loss_total)


def optimizer_step(t: Any, loss: float) -> dict[str, float]:
    """Unscale, clip and step (optim.clipped_step); a non-finite loss or gradient skips the update."""
    out = clipped_step(
        trainable_parameters(t.model), t.optimizer, t.scheduler, t.scaler, loss=loss,
        max_grad_norm=t.cfg.max_grad_norm, device=t.device, step=t.step + 1,
    )  # fmt: skip
    t._optimizer_steps_taken += int(not out["update_skipped"])
    return out


def logprobs_of(
    t: Any, ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, *, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs at the sampling temperature in force (see logprobs.completion_logprobs);
    packed by prompt where asked, but with Unsloth, whose attention takes no custom mask."""
    return completion_logprobs(t.model, ids, attn, mask, temperature=t.sampling.temperature,
                               chunk_tokens=t.cfg.logprob_chunk_tokens, with_entropy=with_entropy,
                               pack=t.cfg.pack_prompts and t.backend != "unsloth")  # fmt: skip


def micro_batches(t: Any, indices: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(indices, t.cfg.micro_batch_size)) if len(indices) else []
