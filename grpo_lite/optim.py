"""The optimizer and learning-rate schedule for the LoRA weights."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from grpo_lite.config import GRPOConfig
from grpo_lite.policy.precision import LossScaler

log = logging.getLogger(__name__)


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: GRPOConfig, device: torch.device
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (bitsandbytes' paged 8-bit AdamW on CUDA, to keep optimizer state small) with warmup and
    ``cfg.lr_scheduler``; one scheduler step per optimizer step (max_steps x num_iterations in all)."""
    from transformers import get_scheduler

    if not params:
        raise ValueError("the model has no trainable parameters (expected LoRA adapters)")
    if device.type == "cuda":
        import bitsandbytes as bnb

        optimizer: torch.optim.Optimizer = bnb.optim.PagedAdamW8bit(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.max_steps * cfg.num_iterations,
    )
    return optimizer, scheduler


def clipped_step(
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: LossScaler,
    *,
    loss: float,
    max_grad_norm: float,
    device: torch.device,
    step: int,
) -> dict[str, float]:
    """Unscale (float16), clip to ``max_grad_norm`` (0: no clipping) and step optimizer and schedule.

    A non-finite loss or gradient norm skips the update: nothing is applied, the schedule does not
    advance, and in float16 the loss scale is halved for the next try. Returns ``grad_norm``,
    ``update_skipped``, ``time/optimizer`` and, in float16, the ``loss_scale`` the step ran with.
    """
    max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    scale = {"loss_scale": scaler.scale_value} if scaler.enabled else {}
    scaler.unscale(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        scaler.step(optimizer, finite=False)
        optimizer.zero_grad(set_to_none=True)
        log.warning(
            "step %d: non-finite loss (%s) or gradient norm (%s): update skipped", step, loss, grad_norm
        )
        return {"grad_norm": grad_norm, "update_skipped": 1.0, "time/optimizer": 0.0} | scale
    t0 = time.perf_counter()
    scaler.step(optimizer, finite=True)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the step's kernels are asynchronous: time them whole
    return {"grad_norm": grad_norm, "update_skipped": 0.0, "time/optimizer": time.perf_counter() - t0} | scale
