"""Group-relative advantages (DeepSeekMath, arXiv 2402.03300, section 4.1.2).

Shapes: B prompts, G completions per prompt; rewards arrive flat as (B*G,), ordered group by group
(the G completions of prompt 0, then those of prompt 1, ...).
"""

from __future__ import annotations

import torch

from grpo_lite.config import AdvantageScale, Baseline


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale: AdvantageScale = "group",
    baseline: Baseline = "mean",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantage of each completion relative to the others sampled for the same prompt.

    ``A_i = (r_i - baseline_i) / (std + eps)`` where the baseline is the group mean (GRPO) or the
    mean of the other G-1 rewards of the group (RLOO, Ahmadian et al. 2024), and std is that of the
    group (``scale="group"``, GRPO), of the whole batch (``"batch"``), or 1 (``"none"``, Dr. GRPO,
    arXiv 2503.20783). Stds use Bessel's correction.

    NaN rewards mark completions with no reward at all: they get advantage 0 and are left out of
    their group's statistics.

    Args:
        rewards: (B*G,) float rewards, group by group.
        group_size: G.
    Returns:
        (B*G,) advantages, same dtype as ``rewards``.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be a flat tensor whose length is a multiple of group_size={group_size}; "
            f"got shape {tuple(rewards.shape)}"
        )
    r = rewards.view(-1, group_size)  # (B, G)
    valid = ~torch.isnan(r)  # (B, G)
    r0 = torch.where(valid, r, torch.zeros_like(r))  # (B, G)
    count = valid.sum(dim=1, keepdim=True)  # (B, 1)
    mean = r0.sum(dim=1, keepdim=True) / count.clamp(min=1)  # (B, 1)

    if baseline == "mean":
        centered = r0 - mean  # (B, G)
    elif baseline == "leave_one_out":
        others = (count - 1).clamp(min=1)
        centered = r0 - (r0.sum(dim=1, keepdim=True) - r0) / others  # (B, G)
    else:
        raise ValueError(f"baseline must be 'mean' or 'leave_one_out'; got {baseline!r}")

    if scale == "group":
        sq = torch.where(valid, (r0 - mean) ** 2, torch.zeros_like(r0)).sum(dim=1, keepdim=True)
        std = (sq / (count - 1).clamp(min=1)).sqrt()  # (B, 1)
        adv = centered / (std + eps)
    elif scale == "batch":
        adv = centered / (r[valid].std() + eps) if int(valid.sum()) > 1 else centered
    elif scale == "none":
        adv = centered
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none'; got {scale!r}")
    return torch.where(valid, adv, torch.zeros_like(adv)).view(-1)  # (B*G,)


def equal_reward_fraction(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose G rewards are all equal: such groups carry no learning signal."""
    r = rewards.view(-1, group_size)  # (B, G)
    same = (r == r[:, :1]) | (torch.isnan(r) & torch.isnan(r[:, :1]))
    return same.all(dim=1).float().mean().item()
