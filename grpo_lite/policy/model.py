"""Loading the policy: a causal LM in 4-bit NF4 (or full precision) with trainable LoRA adapters.

The reference model is the same object with its adapters disabled (``logprobs.adapters_disabled``):
no second copy of the weights is ever loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from grpo_lite.config import GRPOConfig
from grpo_lite.policy.backends import load_with_unsloth, resolve_backend
from grpo_lite.policy.offline import resolve_model
from grpo_lite.policy.precision import prepare_for_training, resolve_compute_dtype

log = logging.getLogger(__name__)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``; every other record passes."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


# bitsandbytes tries, at import on CPUs with AVX512-BF16, to fetch an optional CPU kernel from the Hub
# through the `kernels` package (a transformers dependency since 5.25); where that fails (no `kernels`,
# or offline with nothing cached) it logs this and uses its own CPU kernels: nothing for a user to do.
# Offline, `kernels` first logs that it skips the kernel's publisher check. Both are filtered on their
# loggers before bitsandbytes is imported; every other message of theirs still shows.
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
BNB_KERNEL_TRUST_MESSAGE = "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessage(BNB_KERNELS_MESSAGE))
logging.getLogger("kernels._internals.hf_hub").addFilter(_DropMessage(BNB_KERNEL_TRUST_MESSAGE))


def pick_device(cfg: GRPOConfig) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_model_exists(name: str) -> None:
    """Fail early and clearly when a model is neither a local folder nor reachable on the Hub."""
    if Path(name).exists():
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # a malformed id: let the loader below raise its own message
        cached = None
    if offline and not isinstance(cached, str):
        raise FileNotFoundError(
            f"model {name!r} was not found locally (no such folder, not in the Hugging Face cache) "
            "and HF_HUB_OFFLINE is set, so it cannot be downloaded"
        )


def load_tokenizer(name: str) -> Any:
    """The tokenizer of a local folder, a Hub id or a named offline model (``offline.resolve_model``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    tokenizer.padding_side = "left"  # generation appends on the right of every prompt
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    name: str, *, load_in_4bit: bool, device: torch.device, dtype: torch.dtype | None = None
) -> Any:
    """The base causal LM alone (no LoRA): 4-bit NF4 + double quantization, or full precision; what is
    not quantized (embeddings, norms, head) in ``dtype``, the compute dtype (default: ``"auto"``'s).
    ``name``: a local folder, a Hub id, or a named offline model (``offline.resolve_model``)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    name = resolve_model(name)
    _check_model_exists(name)
    dtype = dtype or resolve_compute_dtype("auto", device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model: Any = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if load_in_4bit:
        keep_cpu_4bit_layout(model)
    else:
        model.to(device)
    return model


def load_policy(cfg: GRPOConfig) -> tuple[Any, Any]:
    """Load ``cfg.model`` with LoRA adapters ready to train; returns ``(peft_model, tokenizer)``.

    The backend (``backends.resolve_backend``) is transformers + peft, or Unsloth on a CUDA GPU.

    - 4-bit: bitsandbytes NF4 with double quantization; the compute dtype from ``cfg.compute_dtype``
      (``precision.resolve_compute_dtype``), kept by embeddings, norms and head too (see
      ``precision.py`` for what runs in which dtype). Works on the CPU too (bitsandbytes >= 0.45),
      in float32, bfloat16 and float16, which is the path the tests exercise.
    - LoRA through peft on ``cfg.lora_target_modules``; a starting adapter from ``cfg.adapter`` is
      loaded trainable. Either way the reference is the *base* (adapters disabled).
    - Gradient checkpointing on when ``cfg.gradient_checkpointing``, with inputs requiring grad
      so that checkpointed segments of a frozen base still propagate gradients to LoRA.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if resolve_backend(cfg.backend) == "unsloth":
        return load_with_unsloth(cfg)
    device = pick_device(cfg)
    dtype = resolve_compute_dtype(cfg.compute_dtype, device)
    model = load_base_model(cfg.model, load_in_4bit=cfg.load_in_4bit, device=device, dtype=dtype)
    tokenizer = load_tokenizer(cfg.adapter if cfg.adapter and _has_tokenizer(cfg.adapter) else cfg.model)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    with _quiet_renamed_api():
        model = prepare_for_training(model, dtype, gradient_checkpointing=cfg.gradient_checkpointing)

    if cfg.adapter:
        model = PeftModel.from_pretrained(model, cfg.adapter, is_trainable=True)
    else:
        target = cfg.lora_target_modules
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=target if isinstance(target, str) else list(target),
            task_type="CAUSAL_LM",
        )
        with _quiet_renamed_api():
            model = get_peft_model(model, lora)
    return model, tokenizer


@contextlib.contextmanager
def _quiet_renamed_api() -> Iterator[None]:
    """peft still calls transformers' gradient-checkpointing methods under their old names, which
    warn at every load; the warning is theirs to fix and tells a user nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")
        yield


def keep_cpu_4bit_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a Linear4bit's weight the first time it
    runs in eval mode (storing absmax in bf16) and unpacks it whenever a state dict is taken, e.g.
    when peft saves the adapter. That round trip re-quantizes absmax, so the *base* weights drift a
    little at every rollout/checkpoint cycle and the reference stops being the base. Keeping the
    standard layout costs some CPU generation speed and nothing on a GPU.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            setattr(module, "support_avx512bf16_for_cpu", False)  # noqa: B010 (not a declared attribute)


def _has_tokenizer(folder: str | None) -> bool:
    return folder is not None and (Path(folder) / "tokenizer_config.json").exists()


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
