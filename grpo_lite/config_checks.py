"""What each GRPOConfig field accepts, checked at construction: every check raises a ``ValueError``
that names the field and the values it accepts. The tracker and tool names and the sampling rules
(which steering applies again to a change made mid-run) live here, below the config."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any, Literal

BUILTIN_TOOLS = ("python",)
TRACKER_NAMES = (
    "trackio",
    "tensorboard",
    "wandb",
)  # report_to's choices; grpo_lite/trackers says how each logs

# The sampling settings' rules, for the config and for every change steering makes mid-run.
SAMPLING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "temperature": (lambda v: v > 0, "> 0"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": (lambda v: v >= 0, ">= 0 (0 = off)"),
    "max_new_tokens": (lambda v: v > 0, "> 0"),
    "max_tool_calls": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
}


def _check(cfg: Any, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"GRPOConfig.{name} must be {allowed}; got {getattr(cfg, name)!r}")


def _check_literals(cfg: Any) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if typing.get_origin(hints[f.name]) is Literal:
            allowed = typing.get_args(hints[f.name])
            _check(cfg, f.name, getattr(cfg, f.name) in allowed, f"one of {list(allowed)}")


def check_config(cfg: Any) -> None:
    """Every field of ``cfg`` (a GRPOConfig, being constructed) against what it accepts."""
    _check_literals(cfg)
    _check_numbers(cfg)
    _check_names_and_tools(cfg)
    _check_signal_fields(cfg)


def _check_numbers(cfg: Any) -> None:
    _check_literals(cfg)
    _check(cfg, "model", bool(cfg.model), "a non-empty model id or path")
    _check(cfg, "group_size", cfg.group_size >= 2, ">= 2 (a group needs a baseline)")
    for name in ("prompts_per_step", "micro_batch_size", "max_prompt_tokens"):
        _check(cfg, name, getattr(cfg, name) > 0, "> 0")
    _check(cfg, "max_steps", cfg.max_steps > 0, "> 0")
    total = cfg.prompts_per_step * cfg.group_size
    _check(
        cfg,
        "micro_batch_size",
        total % cfg.micro_batch_size == 0,
        f"a divisor of prompts_per_step x group_size = {total}",
    )
    for name, (ok, allowed) in SAMPLING_RULES.items():
        _check(cfg, name, ok(getattr(cfg, name)), allowed)
    _check(cfg, "learning_rate", cfg.learning_rate > 0, "> 0")
    _check(cfg, "weight_decay", cfg.weight_decay >= 0, ">= 0")
    _check(cfg, "max_grad_norm", cfg.max_grad_norm >= 0, ">= 0 (0 = no clipping)")
    _check(cfg, "beta", cfg.beta >= 0, ">= 0")
    _check(cfg, "eps_low", 0 <= cfg.eps_low < 1, "in [0, 1)")
    _check(cfg, "eps_high", cfg.eps_high >= 0, ">= 0")
    _check(cfg, "num_iterations", cfg.num_iterations >= 1, ">= 1")
    _check(cfg, "lora_rank", cfg.lora_rank > 0, "> 0")
    _check(cfg, "lora_alpha", cfg.lora_alpha > 0, "> 0")
    _check(cfg, "lora_dropout", 0 <= cfg.lora_dropout < 1, "in [0, 1)")
    _check(cfg, "warmup_steps", cfg.warmup_steps >= 0, ">= 0")
    _check(cfg, "save_steps", cfg.save_steps >= 0, ">= 0 (0 = only at the end)")
    _check(
        cfg,
        "reward_timeout",
        cfg.reward_timeout > 0 and math.isfinite(cfg.reward_timeout),
        "a finite number of seconds > 0",
    )
    _check(cfg, "keep_checkpoints", cfg.keep_checkpoints >= 0, ">= 0 (0 = keep all)")
    _check(cfg, "logprob_chunk_tokens", cfg.logprob_chunk_tokens >= 0, ">= 0 (0 = automatic)")
    _check(
        cfg,
        "eval_every",
        isinstance(cfg.eval_every, int) and cfg.eval_every >= 0,
        "an integer >= 0 (0 = never)",
    )
    _check(cfg, "eval_max_rows", isinstance(cfg.eval_max_rows, int) and cfg.eval_max_rows >= 0,
           "an integer >= 0 (0 = all rows)")  # fmt: skip


def _check_names_and_tools(cfg: Any) -> None:
    if isinstance(cfg.report_to, str):  # report_to="wandb", as TRL users write it
        object.__setattr__(cfg, "report_to", (cfg.report_to,) if cfg.report_to != "none" else ())
    _check(cfg, "report_to", all(t in TRACKER_NAMES for t in cfg.report_to) and len(set(cfg.report_to)) == len(cfg.report_to),
           f"a tuple of distinct names from {list(TRACKER_NAMES)}")  # fmt: skip
    object.__setattr__(cfg, "tools", (cfg.tools,) if isinstance(cfg.tools, str) else tuple(cfg.tools))
    _check(
        cfg,
        "tools",
        all(t in BUILTIN_TOOLS for t in cfg.tools),
        f"built-in tool names from {list(BUILTIN_TOOLS)}",
    )
    _check(cfg, "tool_timeout", 0 < cfg.tool_timeout <= 600, "in (0, 600] seconds")
    _check(cfg, "tool_output_chars", cfg.tool_output_chars > 0, "> 0")
    _check(cfg, "sampler", not cfg.tools or cfg.sampler == "grpo_lite",
           "'grpo_lite' when tools are on (the tool loop is grpo-lite's decode loop)")  # fmt: skip
    _check(cfg, "log_completions_every", cfg.log_completions_every >= 0, ">= 0 (0 = never)")
    _check(cfg, "compile_rollouts", isinstance(cfg.compile_rollouts, bool), "True or False")


def _check_signal_fields(cfg: Any) -> None:
    """The fields of seeking signal where the reward is sparse (dynamic sampling, difficulty, warm start)."""
    _check(cfg, "dynamic_sampling", isinstance(cfg.dynamic_sampling, bool), "True or False")
    _check(cfg, "rest_tied_after", isinstance(cfg.rest_tied_after, int) and cfg.rest_tied_after >= 0,
           "an integer >= 0 (0 = never rest)")  # fmt: skip
    _check(
        cfg,
        "rest_epochs",
        isinstance(cfg.rest_epochs, int) and cfg.rest_epochs >= 1,
        "an integer >= 1",
    )
    finite = isinstance(cfg.solve_threshold, (int, float)) and math.isfinite(cfg.solve_threshold)
    _check(cfg, "solve_threshold", finite, "a finite number")
    _check(cfg, "warm_start_steps", isinstance(cfg.warm_start_steps, int) and cfg.warm_start_steps > 0,
           "an integer > 0")  # fmt: skip
    _check(cfg, "warm_start_batch", isinstance(cfg.warm_start_batch, int) and cfg.warm_start_batch > 0,
           "an integer > 0")  # fmt: skip
    _check(cfg, "warm_start_prompts", isinstance(cfg.warm_start_prompts, int) and cfg.warm_start_prompts > 0,
           "an integer > 0")  # fmt: skip
    _check(cfg, "max_extra_rounds", isinstance(cfg.max_extra_rounds, int) and cfg.max_extra_rounds >= 0,
           "an integer >= 0")  # fmt: skip
