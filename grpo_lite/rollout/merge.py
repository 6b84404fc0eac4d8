"""Rows of rollouts picked and joined: the groups a step keeps from several draws (dynamic sampling).

A joined rollout is what one rollout of the same completions would be, up to padding: prompts are
left-padded to the widest (positions are computed from the attention mask, so the extra padding
changes nothing), completions right-padded to the longest, the masks 0 on the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from grpo_lite.rollout.generate import Rollout


def select_rows(rollout: Rollout, idx: Sequence[int]) -> Rollout:
    """The rows ``idx`` of ``rollout``, in that order."""
    at = torch.as_tensor(list(idx), dtype=torch.long, device=rollout.completion_ids.device)
    return Rollout(
        prompt_ids=rollout.prompt_ids[at],
        prompt_mask=rollout.prompt_mask[at],
        completion_ids=rollout.completion_ids[at],
        completion_mask=rollout.completion_mask[at],
        truncated=rollout.truncated[at],
        completions=[rollout.completions[i] for i in idx],
        prompt_texts=[rollout.prompt_texts[i] for i in idx],
        tool_mask=None if rollout.tool_mask is None else rollout.tool_mask[at],
        exchanges=None if rollout.exchanges is None else [rollout.exchanges[i] for i in idx],
        tool_seconds=rollout.tool_seconds,
    )


def concat_rollouts(rollouts: Sequence[Rollout], *, pad_id: int) -> Rollout:
    """One rollout holding every row of ``rollouts``, in order; tool seconds add up."""
    if len(rollouts) == 1:
        return rollouts[0]
    P = max(r.prompt_ids.shape[1] for r in rollouts)
    T = max(r.completion_ids.shape[1] for r in rollouts)

    def left(x: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(x, (P - x.shape[1], 0), value=value)

    def right(x: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(x, (0, T - x.shape[1]), value=value)

    tools = rollouts[0].tool_mask is not None
    return Rollout(
        prompt_ids=torch.cat([left(r.prompt_ids, pad_id) for r in rollouts]),
        prompt_mask=torch.cat([left(r.prompt_mask, 0) for r in rollouts]),
        completion_ids=torch.cat([right(r.completion_ids, pad_id) for r in rollouts]),
        completion_mask=torch.cat([right(r.completion_mask, 0) for r in rollouts]),
        truncated=torch.cat([r.truncated for r in rollouts]),
        completions=[c for r in rollouts for c in r.completions],
        prompt_texts=[t for r in rollouts for t in r.prompt_texts],
        tool_mask=torch.cat([right(r.tool_mask, 0) for r in rollouts]) if tools else None,  # type: ignore[arg-type]
        exchanges=[e for r in rollouts for e in r.exchanges] if tools else None,  # type: ignore[union-attr]
        tool_seconds=sum(r.tool_seconds for r in rollouts),
    )
