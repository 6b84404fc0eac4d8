"""What a run needs, built once for a new run, a resumed one and a branch alike: the data stream, the
combined reward, held-out rows, sampling settings and steering; the policy (and its reference: the
same base with adapters off), tools, the compute dtype and loss scaler, the optimizer and schedule,
what samples the rollouts; the run folder and lineage, the listeners. ``trainer.py`` keeps the step.
``t``: the trainer whose attributes are set."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from grpo_lite.callbacks import Callback, JsonlLogger, ProgressBar
from grpo_lite.data import PromptData
from grpo_lite.held_out import HeldOut
from grpo_lite.optim import make_optimizer
from grpo_lite.policy.backends import resolve_backend
from grpo_lite.policy.model import load_policy, trainable_parameters
from grpo_lite.policy.precision import LossScaler, dtype_name, resolve_compute_dtype
from grpo_lite.rollout import Sampling
from grpo_lite.rollout.weights import compiled_in_force, rollout_sampler
from grpo_lite.run import RunDir, TrainerState, read_state
from grpo_lite.run.atomic import replacing_folder, temp_path
from grpo_lite.steering import Steering
from grpo_lite.tools import tool_use
from grpo_lite.trackers import make_trackers
from grpo_lite.warm_start import check_warm_start, record_from_state, warm_start_facts
from rewards import Combined, combine


def assemble(
    t: Any, cfg: Any, train_dataset: Any, reward_funcs: Any, *, reward_weights: Sequence[float] | None,
    callbacks: Sequence[Callback], model: Any, tokenizer: Any, resume_from: str | Path | None, overwrite: bool,
    progress: bool, tools: Sequence[Callable[..., Any] | str], eval_dataset: Any, eval_measures: Any,
) -> None:  # fmt: skip
    """Set on ``t`` everything a run needs (see the module docstring); bad settings and data are refused
    before any model loads. A checkpoint to resume (or branch from) is restored last."""
    t.cfg, t.run_dir = cfg, Path(cfg.output_dir)
    trackers = make_trackers(cfg, t.run_dir)  # before any model loads: a missing package fails fast
    t.data = PromptData(train_dataset, prompt_column=cfg.prompt_column, seed=cfg.seed, order=cfg.prompt_order,
                        rest_tied_after=cfg.rest_tied_after, rest_epochs=cfg.rest_epochs,
                        solve_threshold=cfg.solve_threshold)  # fmt: skip
    check_warm_start(cfg, t.data.rows)  # a solution column the data lacks: refused before loading
    t.rewards = (
        reward_funcs if isinstance(reward_funcs, Combined) else combine(*reward_funcs, weights=reward_weights)
    )
    t.held_out = HeldOut.build(cfg, eval_dataset, eval_measures, t.rewards, tools=bool(cfg.tools or tools))
    t.sampling = Sampling.of(cfg)
    t.steering = Steering(lambda: t.rewards.names,
                          lambda source: check_warm_start(cfg.replace(warm_start=source), t.data.rows))  # fmt: skip
    t.step, t.interrupted_at, t._optimizer_steps_taken = 0, None, 0
    t.warm_started = None  # what the warm start did (warm_start.json)
    t.history, t.last_rollout = [], None
    torch.manual_seed(cfg.seed)  # LoRA init
    t.backend = resolve_backend(cfg.backend) if model is None else "preloaded"
    if model is None:
        model, tokenizer = load_policy(cfg)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    t.model, t.tokenizer = model, tokenizer
    t._tool_functions = tuple(tools)  # a branch gets them too
    t.tools = tool_use(cfg.tools, tools, cfg, tokenizer)  # None: no tools
    t.device = next(model.parameters()).device
    t.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, t.device)
    t.scaler = LossScaler(t.compute_dtype, t.device)  # float16 only: dynamic loss scaling
    t.optimizer, t.scheduler = make_optimizer(trainable_parameters(model), cfg, t.device)
    # what samples the rollouts: the policy, or its merged 16-bit copy where the planner finds room
    t.rollout_weights, t.sampler_model = rollout_sampler(
        cfg, model, t.device, t.compute_dtype, backend=t.backend
    )
    t.folder = RunDir(t.run_dir)  # the run's layout on disk: checkpoints, metrics, lineage
    resume = t.folder.resume_point(resume_from)
    # a new run, a branch (a checkpoint of another run: lineage recorded), or this run resumed
    t.lineage = t.folder.open(cfg, resume, overwrite=overwrite)
    t.callbacks = [JsonlLogger(t.run_dir / "metrics.jsonl"), *callbacks, *trackers]
    if progress:
        t.callbacks.append(ProgressBar())
    if resume is not None:
        restore(t, resume)


def state_of(t: Any) -> TrainerState:
    """The objects a checkpoint captures, as they are now (``run/state.py``)."""
    return TrainerState(t.model, t.tokenizer, t.optimizer, t.scheduler, t.scaler, t.sampling, t.data)


def restore(t: Any, checkpoint: Path) -> None:
    """Bring ``t`` to ``checkpoint`` (``run/state.py``); the metrics log is cut at its step."""
    branch = t.folder.is_branch_start(checkpoint)
    t.step, t.rewards = state_of(t).restore(checkpoint, rewards=t.rewards, branch=branch)
    t.warm_started = record_from_state(read_state(checkpoint))  # done before that checkpoint, if at all
    t.history = t.folder.truncate_metrics(t.step)
    t.held_out.restore(t)  # the best among this folder's own checkpoints up to here


def run_facts(t: Any) -> dict[str, Any]:
    """How this run trains, in every step's metrics, checkpoint and the card: backend, dtype, rollouts."""
    return {
        "backend": t.backend,
        "compute_dtype": dtype_name(t.compute_dtype),
        "rollout_weights": t.rollout_weights,
        "compiled_rollouts": compiled_in_force(t.cfg, t.sampler_model),
    } | warm_start_facts(t.warm_started)


def branch_of(t: Any, step: int | str | Path, output_dir: str | Path | None) -> Any:
    """A new trainer of ``t``'s class started from ``t``'s checkpoint of ``step`` in ``output_dir``
    (default ``RUN/branches/step-N-K``), sharing its model object, data, rewards, tools and eval rows."""
    checkpoint = t.folder.find_checkpoint(step)
    at = int(read_state(checkpoint)["step"])
    target = Path(output_dir) if output_dir is not None else t.folder.new_branch_dir(at)
    # its own run in the trackers: the parent's name and the branch's folder (e.g. "sums-step-40-1")
    run_name = f"{t.cfg.run_name or t.run_dir.resolve().name}-{target.name}"
    return type(t)(
        t.cfg.replace(output_dir=str(target), run_name=run_name), t.data.rows, t.rewards,
        model=t.model, tokenizer=t.tokenizer, resume_from=checkpoint, tools=t._tool_functions,
        progress=any(isinstance(cb, ProgressBar) for cb in t.callbacks),
        eval_dataset=t.held_out.rows or None, eval_measures=t.held_out.measures or None,
    )  # fmt: skip


def save_adapter(t: Any, directory: str | Path) -> Path:
    """The adapter in peft layout, the tokenizer, ``grpo_lite.json`` and a model card
    (``export.save_trained_adapter``), complete under its name or the old one (``run/atomic.py``)."""
    from grpo_lite.export import save_trained_adapter

    with replacing_folder(Path(directory)) as tmp:
        save_trained_adapter(tmp, t)
    return Path(directory)


def plot(t: Any) -> None:
    """``RUN/reward_curve.png``, written whole."""
    from grpo_lite.plotting import plot_rewards

    if t.history:
        tmp = temp_path(t.run_dir / "reward_curve.png")
        plot_rewards(t.history, tmp)
        os.replace(tmp, t.run_dir / "reward_curve.png")
