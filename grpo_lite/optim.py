"""The optimizer and learning-rate schedule for the LoRA weights."""

from __future__ import annotations

from typing import Any

import torch

from grpo_lite.config import GRPOConfig


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
