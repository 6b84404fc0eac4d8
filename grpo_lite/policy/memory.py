"""Will it fit? Peak memory of a grpo-lite run, estimated from the model's config alone (no weights).

``plan_memory("Qwen/Qwen2.5-1.5B-Instruct", group_size=8, max_new_tokens=512, prompt_len=256,
lora_rank=16, load_in_4bit=True, micro_batch=8, gpu_gb=15)`` returns a :class:`MemoryPlan`: the peak
broken into weights, LoRA + gradients + optimizer state, activations, generation KV cache and the
log-prob chunk, a verdict for that GPU and, when it does not fit, the changes that would.

The estimate follows what the engine does (``model.load_policy``, ``rollout.generate``,
``logprobs.completion_logprobs``):

- 4-bit NF4 with double quantization stores 4.127 bits per weight of every linear layer but the
  output head; the embeddings, the output head and the norms are not quantized and stay in the
  compute dtype (``precision.prepare_for_training``): 2 bytes in bfloat16/float16, 4 in float32.
- LoRA weights and their gradients are fp32; AdamW keeps two fp32 moments per weight (bitsandbytes'
  8-bit AdamW on CUDA: two bytes). float16's loss scaler holds two scalars: nothing to count.
- Generation samples all ``prompts_per_step x group_size`` completions at once: the KV cache holds
  K and V for every layer, key-value head and position, in the compute dtype; the sampler holds the
  last position's logits in the compute dtype and up to three fp32 buffers of the same size (the
  noise; with top-k/top-p also the scaled, filtered copy and its sort).
- ``rollout_weights="merged"`` keeps a copy of every linear layer in the compute dtype, resident
  for the whole run (embeddings, norms and head are shared, not copied).
- The training pass runs ``micro_batch`` sequences of ``prompt_len + max_new_tokens`` tokens; with
  gradient checkpointing it keeps each layer's input and recomputes one layer at a time.
- Log-probs never materialise the full logits: one slice of about 64 MB (``logprobs.CHUNK_BYTES``).

Checked against tensors measured on the CPU (tests/test_memory.py): weights, LoRA and KV cache to a
few percent, activations (the tensors autograd saves) within the tolerance the test states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grpo_lite.logprobs import CHUNK_BYTES
from grpo_lite.policy.shape import ModelShape, load_shape

GB = 2**30
NF4_BYTES_PER_WEIGHT = 4.127 / 8  # 4-bit codes + double-quantized absmax (8-bit per 64, fp32 per 256 blocks)
CUDA_CONTEXT_GB = 0.5  # CUDA context + allocator slack that no tensor accounts for
T4_GB = 15.0  # a free Colab T4, as PyTorch reports it


@dataclass
class MemoryPlan:
    """An estimate of peak memory, in GB, with its parts and a verdict."""

    parts: dict[str, float]
    peak_gb: float
    gpu_gb: float
    fits: bool
    settings: dict[str, Any]
    suggestions: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        width = max(len(k) for k in self.parts)
        lines = [f"{k:<{width}}  {v:6.2f} GB" for k, v in self.parts.items()]
        if "rollout_weights" in self.settings:
            lines.append(f"(rollout weights: {self.settings['rollout_weights']})")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(
            f"{'estimated peak':<{width}}  {self.peak_gb:6.2f} GB -> {verdict} on a {self.gpu_gb:g} GB GPU"
        )
        if self.suggestions:
            lines.append("to make it fit: " + "; or ".join(self.suggestions))
        return "\n".join(lines)


def estimate_parts(
    shape: ModelShape,
    *,
    group_size: int,
    max_new_tokens: int,
    prompt_len: int,
    lora_rank: int,
    load_in_4bit: bool,
    micro_batch: int,
    prompts_per_step: int = 1,
    gradient_checkpointing: bool = True,
    device: str = "cuda",
    compute_dtype: str = "auto",
    rollout_weights: str = "adapter",
) -> dict[str, float]:
    """Each part of the peak, in bytes.

    ``device`` sets the optimizer (8-bit AdamW on ``"cuda"``, fp32 AdamW on ``"cpu"``) and what
    ``compute_dtype="auto"`` means (16-bit on a GPU, fp32 on the CPU).
    """
    act = compute_bytes(compute_dtype, device)
    h, i, L, V = shape.hidden, shape.intermediate, shape.layers, shape.vocab
    linear = shape.linear_params * (NF4_BYTES_PER_WEIGHT if load_in_4bit else act)
    embeddings = shape.embedding_params * act  # embeddings, head (and norms) stay in the compute dtype
    lora = shape.lora_params(lora_rank)
    adam_state = 2 if device == "cuda" else 8  # 8-bit paged AdamW on CUDA, fp32 AdamW on the CPU
    seq = prompt_len + max_new_tokens
    tokens = micro_batch * seq
    # Per token and layer, what backward needs: the inputs of the norms, attention projections, MLP
    # projections (gate/up share one, down takes I), q/k/v/attention output, the MLP's gate, up and
    # activation outputs, and LoRA's rank-r intermediates. Counted in values of the compute dtype.
    per_layer_token = 10 * h + 4 * i + 14 * lora_rank
    one_layer = tokens * per_layer_token * act
    final_norm_input = tokens * h * 4  # the final norm keeps its float32 upcast for backward
    if gradient_checkpointing:  # each layer's input kept, one layer's activations recomputed at a time
        activations = L * tokens * h * act + one_layer + final_norm_input
    else:
        activations = L * one_layer + final_norm_input
    dequantized = (max(a * b for a, b in shape.linear_shapes()) * act) if load_in_4bit else 0
    completion_tokens = micro_batch * max_new_tokens
    gathered = completion_tokens * h * act  # the completion positions' hidden states, and their grad
    logprob = CHUNK_BYTES * 3 + 2 * gathered  # one slice of logits, its softmax and its grad
    n_gen = prompts_per_step * group_size
    kv = 2 * L * shape.kv_heads * shape.head_dim * seq * n_gen * act
    generation = kv + n_gen * V * (act + 4 * 3)  # + last-position logits and the sampler's fp32 copies
    return {
        "weights": linear + embeddings,
        "lora + grads + optimizer": lora * (4 + 4 + adam_state),
        "rollout copy (merged)": shape.linear_params * act if rollout_weights == "merged" else 0,
        "activations (training pass)": activations + dequantized,
        "log-prob chunk": logprob,
        "generation (KV cache)": generation,
    }


def compute_bytes(compute_dtype: str, device: str = "cuda") -> int:
    """Bytes per value of the compute dtype (``GRPOConfig.compute_dtype``; "auto" as on ``device``)."""
    if compute_dtype == "auto":
        return 2 if device == "cuda" else 4
    sizes = {"bfloat16": 2, "float16": 2, "float32": 4}
    if compute_dtype not in sizes:
        raise ValueError(f"compute_dtype must be one of ['auto', *{list(sizes)}]; got {compute_dtype!r}")
    return sizes[compute_dtype]


def plan_memory(
    model: Any,
    *,
    group_size: int = 8,
    max_new_tokens: int = 256,
    prompt_len: int = 256,
    lora_rank: int = 16,
    load_in_4bit: bool = True,
    micro_batch: int = 8,
    gpu_gb: float = T4_GB,
    prompts_per_step: int = 1,
    gradient_checkpointing: bool = True,
    compute_dtype: str = "auto",
    rollout_weights: str = "adapter",
) -> MemoryPlan:
    """Estimate peak GPU memory of a grpo-lite run and say whether it fits on ``gpu_gb``.

    Args:
        model: Hub id or local path (only config.json is read), a transformers config, or a ModelShape.
        group_size: G, completions per prompt.
        max_new_tokens: the longest completion.
        prompt_len: the longest prompt, in tokens.
        lora_rank: LoRA rank on every linear layer.
        load_in_4bit: NF4 base weights (else the compute dtype).
        micro_batch: sequences per forward/backward (``GRPOConfig.micro_batch_size``).
        gpu_gb: the GPU's memory (a free Colab T4: 15).
        prompts_per_step: B; generation samples B x G completions at once.
        gradient_checkpointing: recompute activations in backward.
        compute_dtype: ``GRPOConfig.compute_dtype``; "auto" is 16-bit (a GPU).
        rollout_weights: "merged" adds the 16-bit rollout copy of the linear layers; "adapter" none.
    Returns:
        A MemoryPlan: parts and peak in GB, the verdict, and changes that would make it fit.

    Training and generation never hold their working memory at the same time, so the peak is the
    weights and LoRA state plus the larger of the two, plus ``CUDA_CONTEXT_GB``. Its parts are
    checked against tensors measured on the CPU (tests/test_memory.py); ``benchmarks/gpu.py``
    prints it beside the measured CUDA peak.
    """
    if gpu_gb <= 0:
        raise ValueError(f"gpu_gb must be > 0; got {gpu_gb!r}")
    settings: dict[str, Any] = dict(
        group_size=group_size, max_new_tokens=max_new_tokens, prompt_len=prompt_len, lora_rank=lora_rank,
        load_in_4bit=load_in_4bit, micro_batch=micro_batch, prompts_per_step=prompts_per_step,
        gradient_checkpointing=gradient_checkpointing, compute_dtype=compute_dtype,
        rollout_weights=rollout_weights,
    )  # fmt: skip
    _check_settings(settings)
    shape = load_shape(model)
    peak, parts = _peak(shape, settings)
    fits = peak <= gpu_gb
    suggestions = [] if fits else _suggestions(shape, settings, gpu_gb)
    return MemoryPlan(
        parts=parts, peak_gb=peak, gpu_gb=gpu_gb, fits=fits, settings=settings, suggestions=suggestions
    )


def _check_settings(settings: dict[str, Any]) -> None:
    compute_bytes(settings["compute_dtype"])  # refuses an unknown dtype
    if settings["rollout_weights"] not in ("merged", "adapter"):
        raise ValueError(
            f"rollout_weights must be 'merged' or 'adapter'; got {settings['rollout_weights']!r}"
        )
    for name in (
        "group_size",
        "max_new_tokens",
        "prompt_len",
        "lora_rank",
        "micro_batch",
        "prompts_per_step",
    ):
        if settings[name] <= 0:
            raise ValueError(f"{name} must be > 0; got {settings[name]!r}")


def plan_for_config(
    cfg: Any, *, gpu_gb: float | None = None, prompt_len: int | None = None, model_config: Any = None
) -> MemoryPlan:
    """:func:`plan_memory` with the settings of a GRPOConfig.

    ``gpu_gb`` defaults to the memory of the current CUDA GPU, or 15 GB (a free Colab T4) without
    one; ``prompt_len`` to ``cfg.max_prompt_tokens``; ``model_config`` (a loaded model's config) to
    ``cfg.model``'s config.json. ``rollout_weights="auto"`` is planned as merged when that fits and
    as adapter otherwise: the plan's ``settings["rollout_weights"]`` is what the trainer will use.
    """
    if gpu_gb is None:
        import torch

        gpu_gb = device_memory_gb(torch.device("cuda")) if torch.cuda.is_available() else T4_GB
    compute_dtype = cfg.compute_dtype
    if compute_dtype == "auto" and cfg.device == "cpu":
        compute_dtype = "float32"
    settings = dict(
        group_size=cfg.group_size, max_new_tokens=cfg.max_new_tokens, prompt_len=prompt_len or cfg.max_prompt_tokens,
        lora_rank=cfg.lora_rank, load_in_4bit=cfg.load_in_4bit, micro_batch=cfg.micro_batch_size, gpu_gb=gpu_gb,
        prompts_per_step=cfg.prompts_per_step, gradient_checkpointing=cfg.gradient_checkpointing,
        compute_dtype=compute_dtype,
    )  # fmt: skip
    source = model_config if model_config is not None else cfg.model
    if cfg.rollout_weights in ("merged", "adapter"):
        return plan_memory(source, rollout_weights=cfg.rollout_weights, **settings)
    merged = plan_memory(source, rollout_weights="merged", **settings)
    return merged if merged.fits else plan_memory(source, rollout_weights="adapter", **settings)


def device_memory_gb(device: Any) -> float:
    """A CUDA device's memory, or the machine's RAM for ``cpu`` (what a CPU run can use), in GB."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory / GB
    import os

    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB


def _peak(shape: ModelShape, settings: dict[str, Any]) -> tuple[float, dict[str, float]]:
    parts = estimate_parts(shape, **settings)
    train = parts["activations (training pass)"] + parts["log-prob chunk"]
    resident = parts["weights"] + parts["lora + grads + optimizer"] + parts["rollout copy (merged)"]
    peak = resident + max(train, parts["generation (KV cache)"]) + CUDA_CONTEXT_GB * GB
    gb = {k: v / GB for k, v in parts.items()} | {"CUDA context + slack": CUDA_CONTEXT_GB}
    return peak / GB, gb


def _suggestions(shape: ModelShape, settings: dict[str, Any], gpu_gb: float) -> list[str]:
    """Single changes, in the order that costs the least learning, that bring the peak under gpu_gb."""
    candidates: list[tuple[str, Any]] = []
    if settings["rollout_weights"] == "merged":  # no effect on learning: rollouts only get slower
        candidates.append(("rollout_weights", "adapter"))
    if not settings["gradient_checkpointing"]:
        candidates.append(("gradient_checkpointing", True))
    if not settings["load_in_4bit"]:
        candidates.append(("load_in_4bit", True))
    for name in ("micro_batch", "prompts_per_step", "max_new_tokens", "group_size", "prompt_len"):
        floor = 2 if name == "group_size" else 1 if name in ("micro_batch", "prompts_per_step") else 32
        value = settings[name] // 2
        while value >= floor:
            candidates.append((name, value))
            value //= 2
    out, changed = [], set()
    for name, value in candidates:
        if name in changed:
            continue
        peak, _ = _peak(shape, settings | {name: value})
        if peak <= gpu_gb:
            out.append(f"{name} {settings[name]} -> {value} (est. {peak:.1f} GB)")
            changed.add(name)  # the largest value of each setting that fits
    if not out:
        out.append(
            "no single change of micro_batch, prompts_per_step, max_new_tokens or group_size fits: "
            "combine them, or use a smaller model"
        )
    return out
