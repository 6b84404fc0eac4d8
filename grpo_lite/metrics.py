"""One step's measurements, gathered in one place into one flat dict."""

from __future__ import annotations

import math
import resource
from typing import Any

import torch

from grpo_lite.advantages import equal_reward_fraction
from grpo_lite.rollout import Rollout, Sampling


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on a GPU, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_metrics(
    *,
    step: int,
    rollout: Rollout,
    scores: Any,
    rewards: torch.Tensor,
    adv: torch.Tensor,
    group_size: int,
    update: dict[str, float],
    times: dict[str, float],
    sampling: Sampling,
    lr: float,
    device: torch.device,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Rewards (total and per function), advantages, the update's loss metrics, lengths, timings,
    memory, learning rate and the sampling settings in force; plus ``changes`` applied at this
    step's boundary and the tracebacks of reward functions that raised."""
    lengths = rollout.lengths.float()  # (N,)
    valid = rewards[~torch.isnan(rewards)]
    m: dict[str, Any] = {
        "step": step,
        "reward": valid.mean().item() if len(valid) else math.nan,
        "reward_std": valid.std().item() if len(valid) > 1 else 0.0,
        **scores.metrics(),
        "advantage_mean": adv.mean().item(),
        "advantage_std": adv.std().item(),
        "advantage_abs_mean": adv.abs().mean().item(),
        "equal_reward_groups": equal_reward_fraction(rewards, group_size),
        **update,
        "completion_len_mean": lengths.mean().item(),
        "completion_len_max": lengths.max().item(),
        "truncated_frac": rollout.truncated.float().mean().item(),
        "tokens_per_sec": float(lengths.sum()) / max(times["generate"] - rollout.tool_seconds, 1e-9),
        **{f"time/{k}": v for k, v in times.items()},
        "time/step": sum(times.values()),
        "peak_mem_mb": peak_memory_mb(device),
        "lr": lr,
        **sampling.to_dict(),
    }
    m |= tool_metrics(rollout)
    if changes:
        m["changes"] = changes
    if scores.errors:
        m["reward_error_tracebacks"] = scores.errors
    return m


def tool_metrics(rollout: Rollout) -> dict[str, float]:
    """With tools: calls per completion, the share of calls that failed (0 with no call), and the
    seconds the rollout waited for answers with nothing else to decode (``tokens_per_sec`` leaves
    them out; calls run while other rows decode)."""
    columns = rollout.tool_columns()
    if not columns:
        return {}
    calls, failures = sum(columns["tool_calls"]), sum(columns["tool_failures"])
    return {
        "tools/calls_per_completion": calls / len(columns["tool_calls"]),
        "tools/failure_rate": failures / calls if calls else 0.0,
        "tools/seconds": rollout.tool_seconds,
    }
