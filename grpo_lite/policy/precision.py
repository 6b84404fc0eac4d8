"""Mixed precision: which dtype each tensor is in, and dynamic loss scaling for float16.

With a 16-bit compute dtype C (bfloat16 on Ampere and newer GPUs, float16 on a T4):

| tensor                                                   | dtype           |
|----------------------------------------------------------|-----------------|
| base linear weights                                      | NF4, matmul in C |
| embeddings, output head, norms' weights                  | C (not upcast)  |
| residual stream, attention, KV cache                     | C               |
| norms' statistics, softmax / log-softmax, loss            | float32         |
| LoRA weights, their gradients, the optimizer state       | float32         |

transformers' RMSNorm computes its statistics in float32 and returns the input's dtype; peft's LoRA
layers run their two small matmuls in the LoRA weights' float32 and cast back to C; the chunked
log-prob code (``logprobs.py``) computes the softmax in float32. What peft's
``prepare_model_for_kbit_training`` would do on top — cast embeddings, norms and head to float32,
which makes the whole residual stream and KV cache float32 — is left out here (``prepare_for_training``).

float16 has a narrow exponent: small gradients of the activations underflow to zero. ``LossScaler``
multiplies the loss by a dynamic scale before backward (torch.amp.GradScaler), unscales the LoRA
gradients before clipping, and skips an update whose gradients overflowed (counted in
``update_skipped``), halving the scale; bfloat16 and float32 need none of this.
"""

from __future__ import annotations

from typing import Any

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_compute_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``GRPOConfig.compute_dtype`` on ``device``.

    ``"auto"``: bfloat16 on GPUs that support it, float16 on older ones (T4), float32 on the CPU.
    An explicit dtype is honoured everywhere (bitsandbytes and torch run 16-bit on the CPU too), but
    bfloat16 on a GPU without it is refused, naming the GPU and the alternative.
    """
    if requested == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if requested == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise ValueError(
            f"GRPOConfig.compute_dtype='bfloat16' is not supported by this GPU ({name}); "
            "use compute_dtype='float16' (with loss scaling) or 'auto'"
        )
    return DTYPES[requested]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def prepare_for_training(model: Any, dtype: torch.dtype, *, gradient_checkpointing: bool) -> Any:
    """Freeze the base, keep what is not quantized in the compute dtype, set up checkpointing.

    peft's ``prepare_model_for_kbit_training`` without its float32 upcast: embeddings, norms and the
    head stay in ``dtype`` (so the residual stream and KV cache do too). With gradient checkpointing
    the embeddings' output requires grad, so that checkpointed segments of a frozen base still
    propagate gradients to the LoRA weights.
    """
    for param in model.parameters():
        param.requires_grad = False
        if param.is_floating_point() and param.dtype != dtype:  # a checkpoint stored in another dtype
            param.data = param.data.to(dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model.config.use_cache = False  # generation turns it back on per call
    return model


class LossScaler:
    """Dynamic loss scaling for float16 (torch.amp.GradScaler); a pass-through for other dtypes.

    Usage per optimizer step: ``scaler.scale(loss).backward()`` for each micro-batch, then
    ``scaler.unscale(optimizer)`` before clipping, then ``scaler.step(optimizer, finite)``.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, *, init_scale: float = 2.0**16) -> None:
        self.enabled = dtype == torch.float16
        self._scaler = torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=self.enabled)
        if self.enabled:  # the scale exists from the start: a first step whose completions were all
            self._scaler.scale(torch.zeros((), device=device))  # skipped scales no loss, then unscales

    @property
    def scale_value(self) -> float:
        return float(self._scaler.get_scale()) if self.enabled else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self._scaler.scale(loss) if self.enabled else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale (in place); records whether any is inf/NaN."""
        if self.enabled:
            self._scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, finite: bool) -> bool:
        """Step unless the gradients overflowed; update the scale. Returns True if the step was taken."""
        if not self.enabled:
            if finite:
                optimizer.step()
            return finite
        if finite:  # the clipped norm is finite exactly when unscale found no inf/NaN
            self._scaler.step(optimizer)
        self._scaler.update()  # halves the scale after an overflow, grows it after a run of good steps
        return finite

    def state_dict(self) -> dict[str, Any]:
        return self._scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.enabled and state:
            self._scaler.load_state_dict(state)
