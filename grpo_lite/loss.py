"""The GRPO objective and its normalisation variants, as pure functions over tensors.

Shapes: N completions (B prompts x G), T completion tokens (padded), per-token tensors (N, T).

DeepSeekMath (arXiv 2402.03300) eq. 3, written as a loss to minimise, per token:

    rho   = pi_theta(o_t) / pi_old(o_t)
    l_t   = -( min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) - beta * KL_t )
    KL_t  = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1          (eq. 4, Schulman's k3 estimator)

and the normalisations:

    grpo    : 1/N sum_i 1/|o_i| sum_t l_it                  (DeepSeekMath eq. 3)
    dapo    : sum_it l_it / sum_i |o_i|                     (DAPO, arXiv 2503.14476, eq. 8)
    dr_grpo : sum_it l_it / (N * max_tokens)                (Dr. GRPO, arXiv 2503.20783, eq. 4)
"""

from __future__ import annotations

from typing import Literal

import torch

LossType = Literal["grpo", "dapo", "dr_grpo"]
ImportanceLevel = Literal["token", "sequence"]


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    loss_type: LossType = "grpo",
    max_tokens: int | None = None,
    importance_sampling: ImportanceLevel = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate with optional KL penalty, normalised by ``loss_type``.

    Args:
        logps: (N, T) log-probs of the sampled tokens under the current policy (with grad).
        old_logps: (N, T) the same under the policy that sampled them (no grad).
        ref_logps: (N, T) under the reference model, or None when ``beta == 0``.
        advantages: (N,) one advantage per completion.
        mask: (N, T) 1 for completion tokens, 0 for padding and everything after EOS.
        importance_sampling: ``"token"`` ratios (GRPO) or ``"sequence"``: one ratio per completion,
            exp of the mean token log-ratio (GSPO, arXiv 2507.18071, eq. 7).
    Returns:
        The scalar loss and metrics: clip fractions (low/high), mean KL, mean ratio.
    """
    if beta > 0 and ref_logps is None:
        raise ValueError("grpo_loss: ref_logps is required when beta > 0")
    mask = mask.to(logps.dtype)
    lengths = mask.sum(dim=1).clamp(min=1)  # (N,)
    log_ratio = logps - old_logps  # (N, T)
    if importance_sampling == "sequence":
        log_ratio = ((log_ratio * mask).sum(dim=1) / lengths).unsqueeze(1).expand_as(logps)  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    adv = advantages.unsqueeze(1)  # (N, 1)

    unclipped = ratio * adv  # (N, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv  # (N, T)
    per_token = -torch.min(unclipped, clipped)  # (N, T)
    kl = None
    if beta > 0:
        assert ref_logps is not None
        delta = ref_logps - logps  # (N, T)
        kl = torch.exp(delta) - delta - 1  # (N, T) k3 estimator, >= 0
        per_token = per_token + beta * kl

    if loss_type == "grpo":
        loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (logps.shape[0] * (max_tokens or logps.shape[1]))
    else:
        raise ValueError(f"loss_type must be 'grpo', 'dapo' or 'dr_grpo'; got {loss_type!r}")

    with torch.no_grad():
        n_tokens = mask.sum().clamp(min=1)
        low = ((ratio < 1 - eps_low) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype)
        metrics = {
            "clip_low": ((low * mask).sum() / n_tokens).item(),
            "clip_high": ((high * mask).sum() / n_tokens).item(),
            "ratio_mean": ((ratio * mask).sum() / n_tokens).item(),
            "kl": 0.0 if kl is None else ((kl * mask).sum() / n_tokens).item(),
        }
    return loss, metrics


def microbatch_weight(
    loss_type: LossType, mb_mask: torch.Tensor, *, total_seqs: int, total_tokens: int
) -> float:
    """Factor that turns a micro-batch's ``grpo_loss`` into its share of the full batch's loss.

    With it, the gradients accumulated over micro-batches (of any sizes, including micro-batches
    that leave out zero-advantage completions) equal the gradient of the full batch's loss.
    """
    if loss_type == "dapo":
        return float(mb_mask.sum().item()) / max(total_tokens, 1)
    return mb_mask.shape[0] / total_seqs
