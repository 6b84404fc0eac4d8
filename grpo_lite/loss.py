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

import torch

from grpo_lite.config import ImportanceLevel, LossType


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the tokens where ``mask`` is 1 (0 when there are none); a 0-d tensor."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def policy_objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    importance_sampling: ImportanceLevel = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The per-token loss l_t of DeepSeekMath eq. 3 (see the module docstring), before any normalisation.

    Args:
        logps: (N, T) log-probs of the sampled tokens under the current policy (with grad).
        old_logps: (N, T) the same under the policy that sampled them (no grad).
        ref_logps: (N, T) under the reference model, or None when ``beta == 0``.
        advantages: (N,) one advantage per completion.
        mask: (N, T) 1 for the tokens the model wrote, 0 for padding (used by the sequence-level ratio).
        importance_sampling: ``"token"`` ratios (GRPO) or ``"sequence"``: one ratio per completion,
            exp of the mean token log-ratio (GSPO, arXiv 2507.18071, eq. 7).
    Returns:
        (N, T) per-token loss, and (N, T) terms for the metrics: ratio, kl, clip_low, clip_high.
    """
    if beta > 0 and ref_logps is None:
        raise ValueError("grpo_loss: ref_logps is required when beta > 0")
    log_ratio = logps - old_logps  # (N, T)
    if importance_sampling == "sequence":
        lengths = mask.sum(dim=1).clamp(min=1)  # (N,)
        log_ratio = ((log_ratio * mask).sum(dim=1) / lengths).unsqueeze(1).expand_as(logps)  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    adv = advantages.unsqueeze(1)  # (N, 1)
    unclipped = ratio * adv  # (N, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv  # (N, T)
    per_token = -torch.min(unclipped, clipped)  # (N, T)
    kl = torch.zeros_like(per_token)
    if beta > 0:
        assert ref_logps is not None
        delta = ref_logps - logps  # (N, T)
        kl = torch.exp(delta) - delta - 1  # (N, T) k3 estimator, >= 0
        per_token = per_token + beta * kl
    terms = {
        "ratio": ratio.detach(),
        "kl": kl.detach(),
        "clip_low": ((ratio < 1 - eps_low) & (adv < 0)).to(logps.dtype),
        "clip_high": ((ratio > 1 + eps_high) & (adv > 0)).to(logps.dtype),
    }
    return per_token, terms


def agg_loss(
    per_token: torch.Tensor, mask: torch.Tensor, loss_type: LossType, *, max_tokens: int | None = None
) -> torch.Tensor:
    """The one place where the normalisations differ (module docstring): grpo, dapo or dr_grpo.

    Args:
        per_token: (N, T) loss per token; mask: (N, T) 1 for the tokens that count.
        max_tokens: dr_grpo's constant length (default: T).
    """
    masked = per_token * mask  # (N, T)
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if loss_type == "dapo":
        return masked.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token.shape[0] * (max_tokens or per_token.shape[1]))
    raise ValueError(f"loss_type must be 'grpo', 'dapo' or 'dr_grpo'; got {loss_type!r}")


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
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`policy_objective` normalised by :func:`agg_loss`; shapes as there.

    Returns:
        The scalar loss and 0-d tensor metrics (token means: clip_low, clip_high, ratio_mean, kl);
        kept on the device, so a caller syncs them once per step, not once per micro-batch.
    """
    mask = mask.to(logps.dtype)
    per_token, terms = policy_objective(
        logps, old_logps, ref_logps, advantages, mask,
        eps_low=eps_low, eps_high=eps_high, beta=beta, importance_sampling=importance_sampling,
    )  # fmt: skip
    loss = agg_loss(per_token, mask, loss_type, max_tokens=max_tokens)
    metrics = {name: masked_mean(value, mask) for name, value in terms.items()}
    metrics["ratio_mean"] = metrics.pop("ratio")
    return loss, metrics


def microbatch_weight(
    loss_type: LossType, mb_mask: torch.Tensor, *, total_seqs: int, total_tokens: int
) -> float:
    """Factor that turns a micro-batch's ``grpo_loss`` into its share of the full batch's loss.

    With it, the gradients accumulated over micro-batches (of any sizes, including micro-batches
    that leave out zero-advantage completions) equal the gradient of the full batch's loss.
    """
    if loss_type == "dapo":
        return float(mb_mask.sum()) / max(total_tokens, 1)
    return mb_mask.shape[0] / total_seqs
