"""What samples the rollouts: the policy itself, or a merged copy of it in the compute dtype.

Batched 4-bit matmuls dequantize every weight at every generated token, and every LoRA-wrapped
layer adds two small matmuls and an add per token: the slowest road to a rollout (bitsandbytes'
fast 4-bit kernels serve batch size 1 only). ``"merged"`` samples instead from a copy of each linear
layer in the compute dtype with the LoRA folded in,

    W_merged = dequantize(W_nf4) + scaling * B @ A        (peft's ``get_delta_weight``)

rewritten in place before every rollout, so it always holds the weights of the latest optimizer
step. Everything that is not a LoRA-wrapped or quantized linear layer (embeddings, norms, head,
rotary tables) is shared with the policy, not copied. Log-probs for the loss always come from the
peft model; the copy only samples.

``"auto"`` picks merged when the memory planner says the copy fits next to everything else
(``memory.plan_for_config``), adapter otherwise; the trainer records the choice in every step's
metrics (``rollout_weights``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from grpo_lite.logprobs import base_lm
from grpo_lite.policy.memory import device_memory_gb

log = logging.getLogger(__name__)


def _is_lora_layer(module: nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "get_base_layer")


class MergedRollout:
    """A sampling copy of ``model`` (a peft model) with every LoRA-wrapped linear layer merged.

    ``current()`` rewrites the merged weights from the policy's present LoRA and base weights and
    returns the copy; call it right before each rollout.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        from transformers import AutoModelForCausalLM

        self.policy, self.dtype = model, dtype
        lm: Any = base_lm(model)
        with torch.device("meta"):  # the architecture only; every tensor is set below
            copy: Any = AutoModelForCausalLM.from_config(
                lm.config, dtype=dtype, attn_implementation=lm.config._attn_implementation
            )
        device = next(model.parameters()).device
        self.merged_layers: list[tuple[Any, nn.Linear]] = []  # (policy layer, its merged copy)
        for name, module in copy.named_modules():
            source = lm.get_submodule(name)
            if isinstance(module, nn.Linear) and (_is_lora_layer(source) or _quantized(source)):
                module.weight = nn.Parameter(
                    torch.empty(module.weight.shape, dtype=dtype, device=device), requires_grad=False
                )
                base = source.get_base_layer() if _is_lora_layer(source) else source
                if module.bias is not None:
                    module.bias = nn.Parameter(base.bias.detach().to(dtype), requires_grad=False)
                self.merged_layers.append((source, module))
                continue
            for key, _ in list(module.named_parameters(recurse=False)):  # shared, not copied
                shared = getattr(source, key)
                if shared.dtype != dtype or not shared.is_floating_point():
                    _check_float(shared, name, source)
                    shared = nn.Parameter(shared.detach().to(dtype), requires_grad=False)
                module._parameters[key] = shared
            for key, _ in list(module.named_buffers(recurse=False)):  # rotary tables and the like
                module._buffers[key] = getattr(source, key)
        copy.generation_config = lm.generation_config
        copy.eval()
        self.model = copy
        self.current()

    @torch.no_grad()
    def current(self) -> nn.Module:
        """The copy with W = dequantize(base) + LoRA delta of the active adapters, as of now."""
        for source, target in self.merged_layers:
            base = source.get_base_layer() if _is_lora_layer(source) else source
            weight = _dequantized(base)  # (out, in); may be the base weight itself: never written to
            deltas = []
            if _is_lora_layer(source) and not getattr(source, "disable_adapters", False):
                deltas = [source.get_delta_weight(a) for a in source.active_adapters if a in source.lora_A]
            if len(deltas) == 1 and target.weight.dtype == torch.float32:
                # the common case in one pass: base + scaling * B @ A, summed in float32 into the copy
                torch.add(weight.float(), deltas[0].float(), out=target.weight)
                continue
            weight = weight.to(torch.float32, copy=True)
            for delta in deltas:
                weight += delta.float()  # scaling * B @ A
            target.weight.copy_(weight)  # into the compute dtype
        return self.model

    @property
    def copy_bytes(self) -> int:
        return sum(t.weight.numel() * t.weight.element_size() for _, t in self.merged_layers)


class AdapterRollout:
    """Sample from the policy itself (4-bit base + LoRA layers): no copy, the slower road."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def current(self) -> nn.Module:
        return self.model


def _quantized(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and not weight.is_floating_point()


def _check_float(tensor: torch.Tensor, name: str, module: nn.Module) -> None:
    if not tensor.is_floating_point():
        raise TypeError(
            f"rollout_weights='merged' cannot copy layer {name!r} of type {type(module).__name__}: "
            f"its weight is {tensor.dtype}, a quantization it does not know; use rollout_weights='adapter'"
        )


def _dequantized(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as a float tensor (bitsandbytes 4/8-bit through peft's helper)."""
    from peft.utils.integrations import dequantize_module_weight

    weight = dequantize_module_weight(layer)
    if not weight.is_floating_point():
        raise TypeError(
            f"rollout_weights='merged' cannot dequantize a {type(layer).__name__} layer "
            f"({weight.dtype} weight); use rollout_weights='adapter'"
        )
    return weight


def choose_rollout_weights(cfg: Any, model: nn.Module, device: torch.device, dtype: torch.dtype) -> str:
    """``"merged"`` or ``"adapter"`` for ``cfg.rollout_weights``, decided by the memory planner.

    The budget is the GPU's memory, or the machine's RAM on the CPU. ``"merged"`` asked for where
    the planner says the copy cannot fit: a warning with the numbers, then the adapter path.
    """
    from grpo_lite.policy.memory import plan_for_config
    from grpo_lite.policy.precision import dtype_name

    if cfg.rollout_weights == "adapter":
        return "adapter"
    budget = device_memory_gb(device)  # the GPU's memory, or the machine's RAM on the CPU
    planned = cfg.replace(rollout_weights="merged", compute_dtype=dtype_name(dtype))
    plan = plan_for_config(planned, gpu_gb=budget, model_config=model.config)
    if plan.fits:
        return "merged"
    if cfg.rollout_weights == "merged":
        log.warning(
            "rollout_weights='merged': the planner estimates %.2f GB with the %.2f GB rollout copy, more than "
            "the %.1f GB available; sampling from the adapter model instead",
            plan.peak_gb, plan.parts["rollout copy (merged)"], budget,
        )  # fmt: skip
    return "adapter"


def make_rollout_weights(
    model: nn.Module, *, choice: str, dtype: torch.dtype
) -> MergedRollout | AdapterRollout:
    """``"merged"`` or ``"adapter"`` (``"auto"`` is decided before, by ``choose_rollout_weights``).

    A layer the merge does not understand (an unknown quantization, DoRA) falls back to the
    adapter path with a warning that names it.
    """
    if choice == "adapter":
        return AdapterRollout(model)
    unsupported = [
        type(m).__name__
        for m in model.modules()
        if _is_lora_layer(m) and any(getattr(m, "use_dora", {}).values())
    ]
    if unsupported:
        log.warning(
            "rollout_weights='merged' does not merge DoRA layers (%s); sampling from the adapter model",
            unsupported[0],
        )
        return AdapterRollout(model)
    try:
        return MergedRollout(model, dtype)
    except TypeError as err:
        log.warning("%s; sampling from the adapter model instead", err)
        return AdapterRollout(model)


def rollout_sampler(
    cfg: Any, model: nn.Module, device: torch.device, dtype: torch.dtype, *, backend: str
) -> tuple[str, MergedRollout | AdapterRollout]:
    """The trainer's one call: ``("merged" | "adapter", what samples)`` for ``cfg.rollout_weights``.
    A model loaded by Unsloth (``backend``) samples through Unsloth's own fast path: adapter."""
    choice = "adapter" if backend == "unsloth" else choose_rollout_weights(cfg, model, device, dtype)
    sampler = make_rollout_weights(model, choice=choice, dtype=dtype)
    chosen = "merged" if isinstance(sampler, MergedRollout) else "adapter"
    if cfg.compile_rollouts and cfg.sampler == "grpo_lite" and chosen == "adapter":
        log.warning("compile_rollouts applies to merged rollouts; the adapter model decodes without it")
    return chosen, sampler


def compiled_in_force(cfg: Any, sampler: MergedRollout | AdapterRollout) -> bool:
    """Whether ``compile_rollouts`` is in force now: with grpo-lite's loop, merged rollouts whose
    compiled step has not failed (``decode.decode`` falls back and marks the model); with
    ``sampler="transformers"``, ``generate``'s static cache."""
    if not cfg.compile_rollouts:
        return False
    if cfg.sampler == "transformers":
        return True
    return isinstance(sampler, MergedRollout) and not getattr(
        sampler.model, "_grpo_lite_compile_failed", False
    )
