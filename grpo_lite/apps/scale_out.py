"""Hand a run over to TRL's GRPOTrainer + accelerate: same rewards, data, LoRA and GRPO settings.

``scale_out(cfg, output, ...)`` writes a folder with ``train_trl.py`` (builds TRL's GRPOConfig and
GRPOTrainer from ours and imports the reward functions unchanged), ``trl_args.json`` (the mapped
settings), an accelerate config (plus a DeepSpeed JSON when asked) and a README with the launch
command and every setting that TRL cannot express. We do not build a distributed trainer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpo_lite.apps.scale_out_files import DEEPSPEED_STAGES, TRAIN_SCRIPT, accelerate_yaml, deepspeed_json
from grpo_lite.config import GRPOConfig
from grpo_lite.export import atomic_folder
from grpo_lite.policy.offline import resolve_model

TRL_TESTED = ">=1.16,<2"  # the TRL versions this mapping was checked against
VLLM_MODES = ("server", "colocate")
log = logging.getLogger(__name__)

# Our field -> TRL GRPOConfig field (value unchanged).
SAME_VALUE = {
    "group_size": "num_generations",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_new_tokens": "max_completion_length",
    "beta": "beta",
    "eps_low": "epsilon",
    "eps_high": "epsilon_high",
    "loss_type": "loss_type",
    "advantage_scale": "scale_rewards",
    "importance_sampling": "importance_sampling_level",
    "num_iterations": "num_iterations",
    "learning_rate": "learning_rate",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "lr_scheduler": "lr_scheduler_type",
    "warmup_steps": "warmup_steps",
    "max_steps": "max_steps",
    "seed": "seed",
    "save_steps": "save_steps",
    "gradient_checkpointing": "gradient_checkpointing",
}
# Our fields with no TRL equivalent, and what happens to them.
NO_EQUIVALENT = {
    "advantage_baseline": "TRL always subtracts the group mean; 'leave_one_out' (RLOO) is not available",
    "max_prompt_tokens": "dropped: TRL 1.x does not truncate prompts; keep prompts short in the data",
    "stop_strings": "dropped: TRL stops at EOS only",
    "logprob_chunk_tokens": "dropped: TRL computes log-probs its own way",
    "pack_prompts": "dropped: TRL computes log-probs its own way",
    "backend": "dropped: TRL loads with transformers (Unsloth has its own TRL patches)",
    "device": "dropped: accelerate places the model",
    "adapter": "dropped: TRL starts a fresh LoRA on the base model",
    "prompts_per_step": "mapped through the batch sizes: prompts_per_step x group_size completions per step",
    "rollout_weights": "dropped: TRL samples from the peft model (or from vLLM with --vllm)",
    "compile_rollouts": "mapped to TRL's cache_implementation='static' (transformers compiles its decode step on a GPU)",
    "sampler": "dropped: TRL samples with transformers' generate (or vLLM with --vllm)",
    "compute_dtype": "mapped to TRL's bf16 / fp16 flags when not 'auto' (then TRL picks)",
    "report_to": "mapped to TRL's report_to (TRL logs metrics its own way; W&B runs online unless WANDB_MODE=offline)",
    "reward_timeout": "dropped: TRL calls reward functions without a time limit",
    "keep_checkpoints": "mapped to TRL's save_total_limit when > 0",
    "run_name": "mapped to TRL's run_name when set (TRL names the run after its output dir otherwise)",
    "log_completions_every": "mapped to TRL's log_completions (on or off: TRL logs them at every logging step)",
    "tools": "refused when set: TRL runs tools in the trainer's process, and grpo-lite hands no model-written code to it",
    "tool_format": "dropped (used only with tools, which scale-out refuses)",
    "max_tool_calls": "dropped (used only with tools, which scale-out refuses)",
    "tool_timeout": "dropped (used only with tools, which scale-out refuses)",
    "tool_output_chars": "dropped (used only with tools, which scale-out refuses)",
    "eval_every": "not carried: TRL's evaluation scores the rewards on an eval set (eval_strategy), not greedy "
    "held-out measures; measure its checkpoints with `python -m grpo_lite eval`",
    "eval_max_rows": "not carried (held-out evaluation is not carried)",
    "best_measure": "not carried: TRL keeps checkpoints by recency (or metric_for_best_model on its eval loss)",
    "dynamic_sampling": "not carried: TRL has no dynamic sampling; the TRL run trains on every group drawn, "
    "tied groups too (their advantage is 0, so they only dilute the batch), and draws no further prompts",
    "max_extra_rounds": "not carried (used only with dynamic_sampling, which TRL does not have)",
    "prompt_order": "not carried: TRL serves the data in a shuffled order of its own (no curriculum)",
    "rest_tied_after": "not carried: TRL has no per-prompt difficulty record; every row stays in rotation",
    "rest_epochs": "not carried (used only with rest_tied_after, which TRL does not have)",
    "solve_threshold": "not carried (grpo-lite's difficulty record only)",
    "warm_start": "not carried: TRL's GRPOTrainer has no supervised phase; run TRL's SFTTrainer on the right "
    "answers first, or hand over a grpo-lite run after its warm start (adapter=)",
    "warm_start_steps": "not carried (used only with warm_start)",
    "warm_start_batch": "not carried (used only with warm_start)",
    "warm_start_prompts": "not carried (used only with warm_start)",
    "solution_column": "not carried (used only with warm_start)",
}


def trl_args(
    cfg: GRPOConfig, *, num_gpus: int = 1, trl_fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """TRL GRPOConfig keyword arguments for ``cfg``. Raises if the installed TRL lacks a field we map
    to (TRL renames fields between versions: that must fail loudly, not silently)."""
    if cfg.tools:
        raise ValueError(
            f"GRPOConfig.tools={list(cfg.tools)}: scale-out does not hand runs with tools to TRL (its tools run "
            "in the trainer's process, without grpo-lite's sandbox); train with tools on one GPU"
        )
    total = cfg.prompts_per_step * cfg.group_size  # completions per optimizer step
    per_step = cfg.micro_batch_size * num_gpus
    if total % per_step:
        raise ValueError(
            f"prompts_per_step x group_size = {total} completions must split evenly over "
            f"{num_gpus} GPU(s) x micro_batch_size {cfg.micro_batch_size}"
        )
    if cfg.lr_scheduler == "constant" and cfg.warmup_steps:
        scheduler = "constant_with_warmup"
    else:
        scheduler = cfg.lr_scheduler
    args = {trl: getattr(cfg, ours) for ours, trl in SAME_VALUE.items()}
    args |= {
        "lr_scheduler_type": scheduler,
        "per_device_train_batch_size": cfg.micro_batch_size,
        "gradient_accumulation_steps": total // per_step,
        "save_steps": cfg.save_steps or cfg.max_steps,
        "logging_steps": 1,
        "report_to": list(cfg.report_to) or "none",
        "log_completions": cfg.log_completions_every > 0,
    }
    if cfg.run_name:
        args["run_name"] = cfg.run_name
    if cfg.compile_rollouts:
        args["cache_implementation"] = "static"
    if cfg.keep_checkpoints:
        args["save_total_limit"] = cfg.keep_checkpoints
    if cfg.compute_dtype != "auto":  # TRL's mixed precision flags; "auto" leaves TRL's own choice
        args |= {"bf16": cfg.compute_dtype == "bfloat16", "fp16": cfg.compute_dtype == "float16"}
    known = set(trl_fields if trl_fields is not None else _installed_trl_fields())
    missing = sorted(set(args) - known)
    if missing:
        raise RuntimeError(
            f"the installed TRL has no GRPOConfig field(s) {missing}; this mapping was tested with trl{TRL_TESTED}"
        )
    return args


def _installed_trl_fields() -> list[str]:
    from trl import GRPOConfig as TRLConfig

    return [f.name for f in dataclasses.fields(TRLConfig)]


def reward_imports(rewards: Sequence[Callable[..., Any]], folder: Path) -> list[tuple[str, str]]:
    """(module, name) for each reward. Ones a fresh interpreter can import are imported from where
    they live; the others (defined in a notebook, a script, a test) have their source written to
    ``folder/user_rewards.py``."""
    out, written = [], []
    for fn in rewards:
        module, name = getattr(fn, "__module__", None), getattr(fn, "__name__", None)
        if not name or name == "<lambda>":
            raise ValueError(f"reward {fn!r} needs a name (a def, not a lambda) to be imported by TRL")
        if module and module != "__main__" and _importable_fresh(module, name, folder):
            out.append((module, name))
            continue
        from rewards import source_of

        source = source_of(fn)
        if source.startswith("# source not available"):
            raise ValueError(
                f"reward {name!r}: cannot import it (module {module!r}) and its source is not available"
            )
        written.append(source)
        out.append(("user_rewards", name))
    if written:
        header = '"""Reward functions written out from the notebook or script that defined them."""\n\n'
        (folder / "user_rewards.py").write_text(
            header + "\n\n".join(textwrap.dedent(s) for s in written) + "\n"
        )
    return out


def _importable_fresh(module: str, name: str, folder: Path) -> bool:
    """Whether a fresh interpreter started in ``folder`` (as the launch will be) can import it: a
    module this process reached only through its own sys.path (a notebook, a test) does not count."""
    code = f"import importlib; assert hasattr(importlib.import_module({module!r}), {name!r})"
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True).returncode == 0


# grpo-lite's ways of seeking signal where the reward is sparse: TRL has none of them
SEEKING_SIGNAL = ("dynamic_sampling", "prompt_order", "rest_tied_after", "warm_start")


def not_carried(cfg: GRPOConfig) -> list[str]:
    """The seeking-signal settings that are on in ``cfg``, each with what the TRL run does instead."""
    defaults = GRPOConfig(model=cfg.model)
    return [f"{k}={getattr(cfg, k)!r} is not carried: {NO_EQUIVALENT[k]}"
            for k in SEEKING_SIGNAL if getattr(cfg, k) != getattr(defaults, k)]  # fmt: skip


def scale_out(
    cfg: GRPOConfig,
    output: str | Path,
    *,
    dataset: str,
    rewards: Sequence[Callable[..., Any]],
    reward_weights: Sequence[float] | None = None,
    num_gpus: int = 1,
    deepspeed: str | None = None,
    vllm: str | None = None,
) -> Path:
    """Write the TRL + accelerate folder for this run; returns its path."""
    if deepspeed is not None and deepspeed not in DEEPSPEED_STAGES:
        raise ValueError(f"--deepspeed must be one of {sorted(DEEPSPEED_STAGES)}; got {deepspeed!r}")
    if vllm is not None and vllm not in VLLM_MODES:
        raise ValueError(f"--vllm must be one of {list(VLLM_MODES)}; got {vllm!r}")
    if num_gpus < 1:
        raise ValueError(f"--num-gpus must be >= 1; got {num_gpus}")
    for line in not_carried(cfg):  # said, never dropped silently (also in the folder's README)
        log.warning("scale-out: %s", line)
    args = trl_args(cfg, num_gpus=num_gpus)
    if vllm:
        args |= {"use_vllm": True, "vllm_mode": vllm}
    output = Path(output)
    with atomic_folder(output) as tmp:
        imports = reward_imports(rewards, tmp)
        args["reward_weights"] = list(reward_weights) if reward_weights else [1.0] * len(imports)
        args["output_dir"] = "outputs"
        spec = {"model": resolve_model(cfg.model), "dataset": dataset, "prompt_column": cfg.prompt_column, "load_in_4bit": cfg.load_in_4bit,
                "lora": {"r": cfg.lora_rank, "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
                         "target_modules": cfg.lora_target_modules if isinstance(cfg.lora_target_modules, str) else list(cfg.lora_target_modules)},
                "rewards": imports, "trl_args": args}  # fmt: skip
        (tmp / "run_spec.json").write_text(json.dumps(spec, indent=2) + "\n")
        (tmp / "train_trl.py").write_text(TRAIN_SCRIPT)
        (tmp / "accelerate_config.yaml").write_text(accelerate_yaml(num_gpus, deepspeed))
        if deepspeed:
            (tmp / f"deepspeed_{deepspeed}.json").write_text(
                json.dumps(deepspeed_json(deepspeed), indent=2) + "\n"
            )
        cfg.save(tmp / "grpo_lite_config.yaml")
        (tmp / "README.md").write_text(_readme(cfg, num_gpus, deepspeed, vllm))
    return output


def _readme(cfg: GRPOConfig, num_gpus: int, deepspeed: str | None, vllm: str | None) -> str:
    launch = "accelerate launch --config_file accelerate_config.yaml train_trl.py"
    lines = ["# This run on TRL + accelerate", "", f"Generated by grpo-lite from `{cfg.model}`; tested with trl{TRL_TESTED}.", "",
             "```bash", f'pip install "trl{TRL_TESTED}" accelerate peft bitsandbytes grpo-lite' + (" deepspeed" if deepspeed else "") + (" vllm" if vllm else "")]  # fmt: skip
    if vllm == "server":
        lines += [
            f"CUDA_VISIBLE_DEVICES={num_gpus} trl vllm-serve --model {cfg.model} &   # generation on its own GPU"
        ]
    lines += [launch, "```", "", "On one machine without GPUs, `python train_trl.py` runs the same script on the CPU.", "",
              "## Settings", "", "| grpo-lite | TRL |", "|---|---|"]  # fmt: skip
    lines += [f"| `{ours}` = {getattr(cfg, ours)!r} | `{trl}` |" for ours, trl in SAME_VALUE.items()]
    lines += ["", "## Settings with no TRL equivalent", "", "| grpo-lite | what happens |", "|---|---|"]
    lines += [f"| `{k}` = {getattr(cfg, k)!r} | {v} |" for k, v in NO_EQUIVALENT.items()]
    return "\n".join(lines) + "\n"
