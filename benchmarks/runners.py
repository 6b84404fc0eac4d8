"""How one training run is measured, for both trainers: grpo-lite's and TRL's GRPOTrainer.

Each runner trains for ``steps`` steps with the given GRPOConfig settings and returns, per step:
the wall-clock time at each optimizer-step end (``step_ends``), the mean reward, the tokens
generated, and the seconds spent generating, in no-grad log-prob passes (reference / old policy),
in the optimizer step, and the rest (``policy``: forward + backward, scoring, logging). Used by
``compare_trl.py`` and ``gpu.py``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARMUP = 1  # steps left out of the timing in each run (first-call allocation and lazy init)


def peak_memory_mb() -> float:
    """CUDA max allocated where a GPU is, else the process's peak RSS (grpo_lite.metrics)."""
    import torch

    from grpo_lite.metrics import peak_memory_mb as peak

    return peak(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def run_grpo_lite(
    model: str,
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    reward: Callable[..., Any],
    steps: int,
    out: Path,
    after: Callable[[Any, Any], Any] | None = None,
    fp32_stream: bool = False,
) -> dict[str, Any]:
    """Train with grpo-lite; per step: wall-clock end, reward, and where the time went; then
    ``after(model, tokenizer)`` if given (its result under "after"). ``fp32_stream``: the path before
    16-bit activations (see :func:`upcast_like_peft`), for comparison."""
    from grpo_lite import GRPOConfig, GRPOTrainer
    from grpo_lite.callbacks import Callback
    from grpo_lite.policy.model import load_policy

    ends: list[float] = []

    class Clock(Callback):
        def on_train_begin(self, trainer: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
            ends.append(time.perf_counter())

    cfg = GRPOConfig(model=model, output_dir=str(out), max_steps=steps, **settings)
    preloaded: dict[str, Any] = {}
    if fp32_stream:
        policy, tokenizer = load_policy(cfg)
        preloaded = {"model": upcast_like_peft(policy), "tokenizer": tokenizer}
    trainer = GRPOTrainer(cfg, rows, [reward], callbacks=[Clock()], progress=False, **preloaded)
    history = trainer.train()
    n = cfg.prompts_per_step * cfg.group_size
    parts = {k: [h[f"time/{k}"] for h in history] for k in ("generate", "reference", "optimizer")}
    return {
        "step_ends": ends,
        "rewards": [h["reward"] for h in history],
        "gen_tokens": [h["completion_len_mean"] * n for h in history],
        "parts": with_policy(parts, ends),
        "after": after(trainer.model, trainer.tokenizer) if after else None,
        "compiled_rollouts": [bool(h.get("compiled_rollouts")) for h in history],
    }


def upcast_like_peft(model: Any) -> Any:
    """Cast every 16-bit parameter that is not 4-bit to float32, as peft's
    ``prepare_model_for_kbit_training`` does (and grpo-lite did before ``precision.py``): embeddings,
    norms and head in fp32, so the residual stream, attention and KV cache run in fp32 too."""
    import torch

    for param in model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ != "Params4bit":
            param.data = param.data.float()
    return model


def run_trl(
    model: str,
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    reward: Callable[..., Any],
    steps: int,
    out: Path,
    after: Callable[[Any, Any], Any] | None = None,
    at_seconds: float | None = None,
    stop_at_seconds: bool = False,
) -> dict[str, Any]:
    """Train with TRL's GRPOTrainer at the same settings; the same per-step measurements.

    Generation, the no-grad log-prob passes (reference) and the optimizer step are timed by wrapping
    TRL's own methods and by its optimizer callbacks (instrumentation only: nothing it computes
    changes); policy = the rest of the step.

    ``at_seconds`` (with ``after``): also ``after(model, tokenizer)`` at the end of the first step that
    ends ``at_seconds`` or more after training began (under "at_seconds": that result, the step and
    the seconds), the clock stopped while it runs; at the end if no step gets there. With
    ``stop_at_seconds`` training ends there (``steps`` is then only an upper bound).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, BitsAndBytesConfig
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    from grpo_lite import GRPOConfig

    cfg = GRPOConfig(model=model, output_dir=str(out), max_steps=steps, **settings)
    args = _trl_args(cfg, out)
    dtype = torch.bfloat16 if args["bf16"] else torch.float16 if args["fp16"] else torch.float32
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)  # fmt: skip
    clock = _trl_clock(at_seconds if after else None, stop=stop_at_seconds)
    trainer = TRLTrainer(
        model=model,
        reward_funcs=[reward],
        args=TRLConfig(**args),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model, padding_side="left"),
        peft_config=LoraConfig(
            task_type="CAUSAL_LM", r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
            target_modules="all-linear",
        ),
        quantization_config=quant,
        callbacks=[clock],
    )  # fmt: skip
    gen_tokens = _time_trl_passes(trainer, clock.events, clock.now)
    if after:
        clock.evaluate = lambda: after(trainer.model, trainer.processing_class)
    trainer.train()
    parts = {k: _per_step(clock.events, clock.ends, k) for k in ("generate", "reference", "optimizer")}
    stopped = stop_at_seconds and clock.at is not None
    result = (
        clock.at["after"] if stopped else after(trainer.model, trainer.processing_class) if after else None
    )  # type: ignore[index]
    if at_seconds is not None and after and clock.at is None:  # trained to the end within the time
        clock.at = {"after": result, "step": steps, "seconds": clock.ends[-1] - clock.ends[0]}
    return {
        "step_ends": clock.ends,
        "rewards": clock.rewards,
        "gen_tokens": gen_tokens,
        "parts": with_policy(parts, clock.ends),
        "after": result,
        "at_seconds": clock.at,
    }


def _trl_args(cfg: Any, out: Path) -> dict[str, Any]:
    """TRL GRPOConfig arguments: ours mapped by scale_out.trl_args, plus device, precision, no saving."""
    import torch

    from grpo_lite.apps.scale_out import trl_args

    cuda = torch.cuda.is_available()
    args = trl_args(cfg) | {
        "output_dir": str(out),
        "save_strategy": "no",
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "fp16": cuda and not torch.cuda.is_bf16_supported(),
        "disable_tqdm": True,
    }
    if cuda:  # grpo-lite's optimizer on CUDA (grpo_lite.optim); on the CPU both use torch's AdamW
        args["optim"] = "paged_adamw_8bit"
    return args


def _sync() -> None:
    """Wait for queued CUDA work, so a wall-clock interval holds the kernels it launched."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _trl_clock(at_seconds: float | None = None, *, stop: bool = False) -> Any:
    """A TRL callback that records step ends, optimizer-step times and the logged rewards; with
    ``at_seconds``, calls ``evaluate`` once at the first step end that far into training (the time it
    takes left out of the clock: later step ends are shifted back by it)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.rewards: list[float] = []
            self.events: list[tuple[str, float, float]] = []  # (part, end time, seconds)
            self.paused = 0.0  # seconds spent in ``evaluate``, off the clock
            self.at: dict[str, Any] | None = None
            self.evaluate: Callable[[], Any] | None = None

        def now(self) -> float:
            return time.perf_counter() - self.paused

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.ends.append(self.now())

        def on_step_end(self, args: Any, state: Any, control: Any, **k: Any) -> None:
            _sync()
            self.ends.append(self.now())
            elapsed = self.ends[-1] - self.ends[0]
            if at_seconds is not None and self.evaluate and self.at is None and elapsed >= at_seconds:
                start, model = time.perf_counter(), k["model"]
                training = model.training
                model.eval()
                self.at = {"after": self.evaluate(), "step": state.global_step, "seconds": elapsed}
                model.train(training)
                self.paused += time.perf_counter() - start
                control.should_training_stop = stop

        def on_pre_optimizer_step(self, *a: Any, **k: Any) -> None:
            _sync()
            self.t0 = self.now()

        def on_optimizer_step(self, *a: Any, **k: Any) -> None:
            _sync()
            self.events.append(("optimizer", self.now(), self.now() - self.t0))

        def on_log(
            self, _args: Any, _state: Any, _control: Any, logs: dict[str, float] | None = None, **k: Any
        ):
            if logs and "reward" in logs:
                self.rewards.append(logs["reward"])

    return Clock()


def _time_trl_passes(
    trainer: Any, events: list[tuple[str, float, float]], now: Callable[[], float] = time.perf_counter
) -> list[int]:
    """Wrap TRL's generation and its no-grad log-prob passes to time them into ``events`` (on the
    clock ``now``); returns the list that will hold the tokens generated at each generation."""
    import torch

    gen_tokens: list[int] = []
    generate_inner, logps_inner = trainer._generate_single_turn, trainer._get_per_token_logps_and_entropies

    def timed(part: str, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
        _sync()
        t0 = now()
        result = fn(*a, **k)
        _sync()
        events.append((part, now(), now() - t0))
        return result

    def timed_generate(*a: Any, **k: Any) -> Any:
        completion_ids, logprobs = timed("generate", generate_inner, *a, **k)
        gen_tokens.append(sum(len(c) for c in completion_ids))
        return completion_ids, logprobs

    def timed_logps(*a: Any, **k: Any) -> Any:
        if torch.is_grad_enabled():  # the policy pass: part of "policy"
            return logps_inner(*a, **k)
        return timed("reference", logps_inner, *a, **k)

    trainer._generate_single_turn = timed_generate
    trainer._get_per_token_logps_and_entropies = timed_logps
    return gen_tokens


def with_policy(parts: dict[str, list[float]], ends: list[float]) -> dict[str, list[float]]:
    """Add "policy": each step's wall-clock time less its generate, reference and optimizer parts
    (the policy forward + backward, plus scoring and logging), measured the same way for both."""
    steps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return parts | {"policy": [s - sum(v[i] for v in parts.values()) for i, s in enumerate(steps)]}


def _per_step(events: list[tuple[str, float, float]], ends: list[float], part: str) -> list[float]:
    """Seconds of ``part`` inside each step (events binned by the step they ended in)."""
    return [
        sum(s for p, t, s in events if p == part and a < t <= b) for a, b in zip(ends, ends[1:], strict=False)
    ]


def step_parts(run: dict[str, Any]) -> dict[str, Any]:
    """One run's medians over its timed steps (the first WARMUP left out): seconds per step and per
    part, generated tokens per second of generation, and its peak memory."""
    ends = run["step_ends"][WARMUP:]
    timed = slice(WARMUP, None)
    gen = run["parts"]["generate"][timed]
    return {
        "step_seconds_median": statistics.median(b - a for a, b in zip(ends, ends[1:], strict=False)),
        "parts_median": {k: statistics.median(v[timed]) for k, v in run["parts"].items()},
        "gen_tokens_per_sec": sum(run["gen_tokens"][timed]) / sum(gen),
        "peak_mem_mb": run["peak_mem_mb"],
        "compiled_rollouts": all(run.get("compiled_rollouts", [])[timed] or [False]),  # every timed step
    }


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {os.cpu_count()} cores, {cpu}"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("torch", "transformers", "peft", "bitsandbytes", "trl", "grpo-lite")
    found = {}
    for n in names:
        try:
            found[n] = md.version(n)
        except md.PackageNotFoundError:  # grpo-lite run from a checkout without installing it
            found[n] = "source checkout" if n == "grpo-lite" else "not installed"
    return found
