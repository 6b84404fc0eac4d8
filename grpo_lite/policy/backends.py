"""Which library loads the model: transformers + peft (everywhere) or Unsloth (CUDA GPUs only).

Unsloth refuses to import without an NVIDIA GPU and patches transformers when imported, so it must
be imported *before* transformers. grpo-lite never imports it unless the Unsloth backend is chosen
(explicitly, or by ``"auto"`` on a CUDA machine where it is installed), and imports it first thing
when it is. Everything after loading (rollout, chunked log-probs, reference with adapters disabled,
loss, checkpoints, export) is shared: there is no second trainer.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

import torch

from grpo_lite.config import GRPOConfig
from grpo_lite.policy.offline import resolve_model
from grpo_lite.policy.precision import DTYPES

log = logging.getLogger(__name__)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def cuda_available() -> bool:
    return torch.cuda.is_available()


def unsloth_installed() -> bool:
    """Whether the package is installed, found without importing it (importing needs a GPU)."""
    return importlib.util.find_spec("unsloth") is not None


def resolve_backend(requested: str) -> str:
    """``"transformers"`` or ``"unsloth"`` for a requested ``GRPOConfig.backend``.

    ``"auto"``: Unsloth when it is installed and a CUDA GPU is present, else transformers (quietly).
    ``"unsloth"`` without either: one error naming what is missing, before any heavy work.
    """
    if requested == "transformers":
        return "transformers"
    gpu, package = cuda_available(), unsloth_installed()
    if requested == "auto":
        return "unsloth" if gpu and package else "transformers"
    if requested != "unsloth":
        raise ValueError(
            f"GRPOConfig.backend must be one of ['auto', 'transformers', 'unsloth']; got {requested!r}"
        )
    missing = [what for what, ok in (("a CUDA GPU", gpu), ("the unsloth package", package)) if not ok]
    if missing:
        raise RuntimeError(
            f"GRPOConfig.backend='unsloth' needs {' and '.join(missing)}; "
            + ("Unsloth runs only on NVIDIA GPUs. " if not gpu else "")
            + ("Install it with `pip install grpo-lite[unsloth]`. " if not package else "")
            + "Use backend='auto' or 'transformers' to train without it."
        )
    return "unsloth"


def load_with_unsloth(cfg: GRPOConfig) -> tuple[Any, Any]:
    """Load through ``FastLanguageModel`` with the same LoRA settings and Unsloth's gradient checkpointing."""
    if "transformers" in sys.modules and "unsloth" not in sys.modules:
        log.warning(
            "transformers was imported before Unsloth, so Unsloth cannot patch it fully (slower, more memory). "
            "Restart the kernel/process and import grpo_lite (or unsloth) before transformers."
        )
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=cfg.adapter or resolve_model(cfg.model),
        max_seq_length=cfg.max_prompt_tokens + cfg.max_new_tokens,
        load_in_4bit=cfg.load_in_4bit,
        dtype=None if cfg.compute_dtype == "auto" else DTYPES[cfg.compute_dtype],  # None: Unsloth picks
    )
    if not cfg.adapter:
        target = cfg.lora_target_modules
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=ALL_LINEAR if target == "all-linear" else list(target),
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
            random_state=cfg.seed,
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
