"""The one configuration of a grpo-lite run: a frozen dataclass, checked at construction.

Defaults fit a free Colab T4 (16 GB) training a 0.5B-1.5B model in 4-bit with LoRA.
Every check raises a ``ValueError`` that names the field and the values it accepts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grpo_lite.config_checks import BUILTIN_TOOLS, SAMPLING_RULES, TRACKER_NAMES, check_config

# Every variant's name, defined once here; the math modules import the ones they take.
LossType = Literal["grpo", "dapo", "dr_grpo"]
ImportanceLevel = Literal["token", "sequence"]
AdvantageScale = Literal["group", "batch", "none"]
Baseline = Literal["mean", "leave_one_out"]
Backend = Literal["auto", "transformers", "unsloth"]
Scheduler = Literal["constant", "linear", "cosine"]
ComputeDtype = Literal["auto", "bfloat16", "float16", "float32"]
RolloutWeights = Literal["auto", "merged", "adapter"]
Sampler = Literal["grpo_lite", "transformers"]
ToolFormat = Literal["auto", "hermes", "plain"]
PromptOrder = Literal["uniform", "curriculum"]
WarmStart = Literal["off", "own", "solutions"]


@dataclass(frozen=True)
class GRPOConfig:
    model: str
    """Hugging Face Hub id (``"Qwen/Qwen2.5-0.5B-Instruct"``) or local path of a causal language model, or
    a named offline model: ``"smollm2-135m-instruct"`` (from the package index, no Hub; ``offline.py``)."""

    output_dir: str = "runs/grpo"
    """Run directory: config, metrics.jsonl, checkpoints/, adapter/ (see the README's "The run directory")."""

    backend: Backend = "auto"
    """``"transformers"``; ``"unsloth"`` (needs a CUDA GPU and the package); ``"auto"`` picks Unsloth when it
    is installed and a CUDA GPU is present, else transformers."""

    adapter: str | None = None
    """An existing LoRA adapter (peft layout) to continue training. The reference stays the *base*
    model: adapters disabled means no adapter at all, not this starting adapter."""

    # ---- model loading -------------------------------------------------------------------------
    load_in_4bit: bool = True
    """Load the base weights in 4-bit NF4 with double quantization (bitsandbytes). False: full precision."""

    lora_rank: int = 16
    """LoRA rank r. 8-32 is typical; higher learns more and costs more memory."""

    lora_alpha: int = 32
    """LoRA scaling numerator; the update is scaled by alpha / rank. Commonly 2 x rank."""

    lora_dropout: float = 0.0
    """Dropout on the LoRA input, in [0, 1). 0 keeps the policy's log-probs deterministic."""

    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """Modules that get LoRA: ``"all-linear"`` (every linear layer but the output head) or module names."""

    compute_dtype: ComputeDtype = "auto"
    """dtype of the activations, attention, KV cache, embeddings and output head: ``"auto"`` picks
    bfloat16 on GPUs that support it (Ampere and newer), float16 on older ones (a T4), float32 on the
    CPU. LoRA weights, their gradients, the optimizer state, softmax and the loss stay float32;
    float16 adds dynamic loss scaling."""

    gradient_checkpointing: bool = True
    """Recompute activations in backward instead of storing them: much less memory, ~30% more time."""

    # ---- data and sampling ---------------------------------------------------------------------
    prompt_column: str = "prompt"
    """Dataset column holding the prompt: a string (used as is) or a list of chat messages (chat template)."""

    prompts_per_step: int = 4
    """B: prompts sampled per training step."""

    group_size: int = 8
    """G: completions sampled per prompt; advantages are relative within each group. At least 2."""

    micro_batch_size: int = 8
    """Completions per forward/backward; gradients accumulate over B x G / micro_batch_size passes."""

    max_prompt_tokens: int = 512
    """Prompts longer than this are cut from the left (the end of a prompt matters most)."""

    max_new_tokens: int = 256
    """Most tokens sampled per completion; a completion that reaches it without EOS is 'truncated'."""

    temperature: float = 1.0
    """Sampling temperature (> 0). The log-probs of the loss use the same temperature."""

    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""

    top_k: int = 0
    """Keep only the k most likely tokens; 0 turns it off."""

    stop_strings: tuple[str, ...] = ()
    """Generation stops after any of these strings, in addition to the EOS token."""

    # ---- tools ---------------------------------------------------------------------------------
    tools: tuple[str, ...] = ()
    """Built-in tools the model may call mid-answer: ``("python",)`` runs the code it writes in
    ``rewards``' sandbox (namespaces, no network, limits) and gives it what the code printed. Your own
    Python functions go to ``GRPOTrainer(tools=[...])``. The tools' answers are masked out of the loss."""

    tool_format: ToolFormat = "auto"
    """How calls are written: ``"hermes"`` (``<tool_call>{json}</tool_call>``, Qwen2.5/Qwen3 chat
    templates, schemas through the template), ``"plain"`` (a fenced python block, its output in a fenced
    output block; models without a tool-calling template, such as SmolLM2), ``"auto"``: hermes when the
    chat template knows ``<tool_call>``, else plain."""

    max_tool_calls: int = 4
    """Tool calls per completion; a call past it ends the completion unrun. Steerable mid-run."""

    tool_timeout: float = 5.0
    """Seconds one tool call may take (wall clock; the sandbox's CPU limit too); then it answers
    "timed out" and counts as failed."""

    tool_output_chars: int = 800
    """A tool's answer is cut to this many characters (saying how much was cut)."""

    rollout_weights: RolloutWeights = "auto"
    """What samples the rollouts: ``"merged"``, a copy of every linear layer in the compute dtype with
    the LoRA folded in (refreshed before every rollout; fast, costs that copy's memory);
    ``"adapter"``, the 4-bit model with its LoRA layers; ``"auto"``, merged when the memory planner
    says the copy fits. Log-probs for the loss always come from the adapter model."""

    sampler: Sampler = "grpo_lite"
    """Decode loop: ``"grpo_lite"`` (one prefill per prompt shared by its G samples, Gumbel-max
    sampling, no per-token work the loss does not need) or ``"transformers"`` (``model.generate``)."""

    compile_rollouts: bool = False
    """Decode with a static KV cache and a compiled decode step (``torch.compile``, mode
    ``reduce-overhead``: CUDA graphs on a GPU), for merged rollouts (``rollout_weights``); with
    ``sampler="transformers"``, ``generate``'s static cache (transformers compiles it on a GPU).
    The first rollout of each batch shape compiles (seconds to a minute); finished rows stay in the
    static batch. Off by default: no gain on the CPU (measured), not yet measured on a GPU
    (benchmarks/RESULTS.md)."""

    # ---- objective -----------------------------------------------------------------------------
    loss_type: LossType = "grpo"
    """Normalisation: ``"grpo"`` (per-sequence mean, DeepSeekMath eq. 3), ``"dapo"`` (token-level
    mean), ``"dr_grpo"`` (sum / (N x max_new_tokens), Dr. GRPO)."""

    importance_sampling: ImportanceLevel = "token"
    """``"token"``: one ratio per token (GRPO); ``"sequence"``: the length-normalised sequence ratio (GSPO)."""

    advantage_scale: AdvantageScale = "group"
    """Divide advantages by the group's std (``"group"``), the batch's (``"batch"``), or not (``"none"``, Dr. GRPO)."""

    advantage_baseline: Baseline = "mean"
    """Baseline subtracted from each reward: the group mean, or the mean of the *other* G-1 (RLOO)."""

    beta: float = 0.0
    """Weight of the KL penalty to the reference (base with adapters off). 0 skips the reference pass;
    DeepSeekMath used 0.04."""

    eps_low: float = 0.2
    """Lower clip range: the ratio is clipped at 1 - eps_low. In [0, 1)."""

    eps_high: float = 0.2
    """Upper clip range: the ratio is clipped at 1 + eps_high (DAPO's clip-higher uses 0.28)."""

    num_iterations: int = 1
    """mu: updates per batch of rollouts. With 1 the old log-probs are the detached current ones."""

    # ---- seeking signal where the reward is sparse ---------------------------------------------
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (arXiv 2503.14476, section 3.2; ``grpo_lite/dynamic.py``): groups whose
    rewards all tie (no signal) are set aside and groups for further prompts are drawn and scored in
    the same step, until ``prompts_per_step`` groups carry signal or ``max_extra_rounds`` further
    draws were made; the step trains on the groups with signal (none found: no update that step)."""

    max_extra_rounds: int = 3
    """With ``dynamic_sampling``: further draws of ``prompts_per_step`` prompts a step may make (>= 0)."""

    prompt_order: PromptOrder = "uniform"
    """``"uniform"``: each epoch in a seeded random order; ``"curriculum"``: each epoch easiest first, by
    the data's ``difficulty`` column (numbers, lower = easier) or else by each row's recent pass rate
    (``grpo_lite/difficulty.py``)."""

    rest_tied_after: int = 0
    """Rest a row whose group tied (solved by every completion or by none) on this many visits in a
    row: the stream passes over it the next ``rest_epochs`` times it comes round; 0: never rest."""

    rest_epochs: int = 1
    """How many times a rested row is passed over before it comes back (>= 1)."""

    warm_start: WarmStart = "off"
    """Before GRPO, a short supervised phase of the LoRA on right answers (``grpo_lite/warm_start.py``):
    ``"own"``, the model's own (``warm_start_prompts`` prompts sampled and scored first; rejection
    sampling / STaR), or ``"solutions"``, the data's ``solution_column``; ``"off"``: none."""

    warm_start_steps: int = 20
    """Optimizer steps of the warm start, ``warm_start_batch`` examples each."""

    warm_start_batch: int = 8
    """Examples per warm-start step (> 0)."""

    warm_start_prompts: int = 64
    """With ``warm_start="own"``: training prompts sampled (G completions each) to find right answers."""

    solution_column: str = "solution"
    """With ``warm_start="solutions"``: the column holding a worked answer per row."""

    solve_threshold: float = 1.0
    """A completion counts as solving its prompt when its total reward is at least this (the pass
    rates of the difficulty record, the dashboard's histogram)."""

    # ---- optimisation --------------------------------------------------------------------------
    learning_rate: float = 1e-5
    """AdamW learning rate for the LoRA weights."""

    weight_decay: float = 0.0
    """AdamW weight decay (>= 0)."""

    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm; 0 turns clipping off."""

    lr_scheduler: Scheduler = "constant"
    """Learning-rate schedule after warmup."""

    warmup_steps: int = 0
    """Steps of linear warmup from 0 to learning_rate."""

    max_steps: int = 200
    """Training steps (one step = B prompts x G completions, one optimizer update per iteration)."""

    # ---- bookkeeping ---------------------------------------------------------------------------
    seed: int = 0
    """Seeds data order, sampling and LoRA init. Same seed on CPU = same run."""

    save_steps: int = 50
    """Write a checkpoint every this many steps (and at the end, and on Ctrl-C); 0: only those two."""

    reward_timeout: float = 10.0
    """Seconds each reward function may take on a step's batch (and the editor's Test). Past it, the
    function scores None for that batch, an alarm names it and the line it was running, training
    goes on; after 3 steps in a row its weight is set to 0 (recorded as a change). Raise it for
    slow rewards, e.g. ``code_unit_tests`` over many completions that loop until their own limit."""

    keep_checkpoints: int = 0
    """Keep the newest this many complete checkpoints (older ones are deleted once a new one is
    complete); 0 keeps all. The newest complete one and any written on interrupt are never deleted."""

    eval_every: int = 0
    """Held-out evaluation every this many steps and at the last (``grpo_lite/held_out.py``): one greedy
    completion per eval row, each eval measure's share of 1.0 as ``eval/NAME`` in the metrics; with
    it, the best checkpoint is kept (``RUN/best.json``). 0: never. Needs eval rows (``eval_dataset``)."""

    eval_max_rows: int = 0
    """Evaluate on the first this many eval rows (for speed); 0: all of them."""

    best_measure: str = ""
    """The eval measure whose score picks the best checkpoint; "": the first measure."""

    logprob_chunk_tokens: int = 0
    """Completion tokens whose logits are materialised at once in the log-prob pass; 0 picks a size
    that keeps one chunk near 64 MB whatever the vocabulary."""

    pack_prompts: bool = False
    """Log-prob passes compute each prompt once for all its completions in the micro-batch (one
    sequence ``[prompt, completion 1, ..., completion k]``, completions kept apart by the attention
    mask; ``grpo_lite/packing.py``): the same log-probs for fewer tokens when prompts are long next to
    completions. Measured on the CPU only; not with Unsloth (its attention takes no custom mask)."""

    device: str | None = None
    """``"cuda"``, ``"cpu"``...; None picks CUDA when available."""

    # ---- experiment trackers -----------------------------------------------------------------------
    report_to: tuple[str, ...] = ()
    """Experiment trackers that get every step's metrics, completions tables and steering events:
    any of ``"trackio"``, ``"tensorboard"``, ``"wandb"`` (each needs its package; a name alone is
    read as a one-tuple). Offline by default: Trackio stores locally, W&B runs offline unless
    ``WANDB_MODE`` says otherwise, TensorBoard writes ``RUN/tensorboard``."""

    run_name: str | None = None
    """The run's name in the trackers; None: the run directory's name."""

    log_completions_every: int = 10
    """Every this many steps, log a table of prompts, completions, each reward, total and advantage
    to the trackers; 0: never."""

    def __post_init__(self) -> None:
        check_config(self)  # each field against what it accepts (config_checks.py)

    # ---- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GRPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"GRPOConfig has no field(s) {unknown}; known fields: {sorted(known)}")
        tuples = {"stop_strings", "lora_target_modules", "report_to", "tools"}
        values: dict[str, Any] = {
            k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)

    def save(self, path: str | Path) -> None:
        """Write as JSON, or YAML when the name ends in .yaml/.yml."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GRPOConfig:
        """Read a config written by :meth:`save` (JSON or YAML, chosen by the file name)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of GRPOConfig fields, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> GRPOConfig:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)


def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal under it), read from this module's source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(GRPOConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        is_field = isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if is_field and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())  # type: ignore[union-attr]
    return docs


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


__all__ = ["BUILTIN_TOOLS", "SAMPLING_RULES", "TRACKER_NAMES", "GRPOConfig"]
