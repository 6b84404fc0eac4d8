"""The GRPO training loop: roll out -> score -> advantages -> update -> log, one step at a time.

The math lives in pure functions (``advantages``, ``loss``, ``logprobs``); this module only calls
them in order, keeps the optimizer and the run directory, and hands one metrics dict per step to
its listeners. Shapes: B prompts, G completions each, N = B*G, T completion tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from grpo_lite.advantages import group_advantages
from grpo_lite.alarms import check_alarms
from grpo_lite.assembly import assemble, branch_of, plot, run_facts, save_adapter, state_of
from grpo_lite.callbacks import Callback
from grpo_lite.config import GRPOConfig
from grpo_lite.data import PromptData
from grpo_lite.draw import draw_step
from grpo_lite.dynamic import no_update
from grpo_lite.held_out import HeldOut
from grpo_lite.metrics import step_metrics
from grpo_lite.policy.precision import LossScaler
from grpo_lite.rollout import Sampling
from grpo_lite.run import RunDir, rng_state, set_rng_state
from grpo_lite.scan import scan
from grpo_lite.steering import Steering, weights_in_force
from grpo_lite.update import logps_no_grad, policy_update
from grpo_lite.warm_start import warm_start
from rewards import Combined, NamedReward

log = logging.getLogger(__name__)


class GRPOTrainer:
    """Trains LoRA adapters with GRPO. ``GRPOTrainer(cfg, rows, reward_funcs=[...]).train()``.

    Args:
        cfg: the run's configuration.
        train_dataset: rows (dicts, a ``datasets.Dataset`` or a local file) with ``cfg.prompt_column``;
            other columns reach the reward functions as keyword lists.
        reward_funcs: reward functions with TRL's signature, or an already combined reward.
        reward_weights: one weight per function (default 1.0 each).
        callbacks: listeners; a JSONL logger is always added, a progress bar unless ``progress=False``.
        model, tokenizer: an already loaded policy (peft model); else loaded from ``cfg``.
        resume_from: a checkpoint folder, or ``"latest"`` for the newest complete one in the run dir.
        overwrite: replace a previous run in ``cfg.output_dir`` instead of refusing.
        tools: functions the model may call mid-answer (type hints and a docstring), with the
            built-ins named in ``cfg.tools`` (``"python"``: the sandbox); see ``grpo_lite/tools``.
        eval_dataset: held-out rows, evaluated every ``cfg.eval_every`` steps (``held_out.py``).
        eval_measures: functions (or built-in reward names) whose 1.0 means right; default: the rewards.
    """

    # what a run holds, set by assembly.assemble
    cfg: GRPOConfig
    run_dir: Path
    data: PromptData  # the prompt stream, its cursor and each row's pass rate
    rewards: Combined  # the reward functions and weights in force
    held_out: HeldOut  # eval rows, measures, schedule, the best checkpoint
    sampling: Sampling  # the sampling settings in force
    steering: Steering
    step: int
    interrupted_at: Path | None  # the checkpoint written when Ctrl-C stopped the run
    _optimizer_steps_taken: int
    warm_started: dict[str, Any] | None  # what the warm start did (warm_start.json)
    history: list[dict[str, Any]]
    last_rollout: dict[str, Any] | None
    backend: str
    model: Any  # the policy: the 4-bit base with LoRA adapters (the reference: adapters off)
    tokenizer: Any
    _tool_functions: tuple[Any, ...]
    tools: Any  # rollout.turns.ToolUse, or None
    device: torch.device
    compute_dtype: torch.dtype
    scaler: LossScaler
    optimizer: Any
    scheduler: Any
    rollout_weights: str
    sampler_model: Any  # what samples the rollouts (rollout/weights.py)
    folder: RunDir
    lineage: dict[str, Any] | None
    callbacks: list[Callback]

    def __init__(
        self,
        cfg: GRPOConfig,
        train_dataset: Any,
        reward_funcs: Sequence[Callable[..., Any] | NamedReward] | Combined,
        *,
        reward_weights: Sequence[float] | None = None,
        callbacks: Sequence[Callback] = (),
        model: Any = None,
        tokenizer: Any = None,
        resume_from: str | Path | None = None,
        overwrite: bool = False,
        progress: bool = True,
        tools: Sequence[Callable[..., Any] | str] = (),
        eval_dataset: Any = None,
        eval_measures: Any = None,
    ) -> None:
        assemble(self, cfg, train_dataset, reward_funcs, reward_weights=reward_weights, callbacks=callbacks,
                 model=model, tokenizer=tokenizer, resume_from=resume_from, overwrite=overwrite, progress=progress,
                 tools=tools, eval_dataset=eval_dataset, eval_measures=eval_measures)  # fmt: skip

    # ---- the loop --------------------------------------------------------------------------------
    def train(self) -> list[dict[str, Any]]:
        """Run until ``cfg.max_steps`` or a stop request; Ctrl-C stops cleanly with a checkpoint."""
        self.steering.stop_requested = False  # a stopped run can be continued by calling train() again
        if self.step == 0 and self.cfg.warm_start != "off" and self.warm_started is None:
            self.warm_started = warm_start(self)  # a supervised phase on right answers first (warm_start.py)
        for cb in self.callbacks:
            cb.on_train_begin(self)
        step_at_start, rng_at_step_start, data_at_step_start = self.step, rng_state(), self.data.state_dict()
        try:
            while self.step < self.cfg.max_steps and not self.steering.stop_requested:
                step_at_start, data_at_step_start = self.step, self.data.state_dict()
                rng_at_step_start = rng_state()  # rewound to on Ctrl-C: the next step replays exactly
                changes = self._step_boundary()
                if self.steering.stop_requested:
                    break
                metrics = self.train_step(changes)
                metrics |= self.held_out.measure(self)  # eval/NAME when due, off the clock (held_out.py)
                self._emit(metrics)
                if self.cfg.save_steps and self.step % self.cfg.save_steps == 0:
                    self.save_checkpoint()
                self.held_out.keep_best(self, metrics)  # a better held-out score: that step's checkpoint kept
        except KeyboardInterrupt:
            if self.step == step_at_start and self._optimizer_steps_taken:  # the update landed: step done
                self.step += 1
                log.warning("step %d was interrupted after its update; its metrics are not logged", self.step)
            elif self.step == step_at_start:  # model and optimizer hold the last completed step
                set_rng_state(rng_at_step_start)
                self.data.load_state_dict(data_at_step_start)  # the step's prompts are drawn again
            path = self.interrupted_at = self.save_checkpoint(interrupted=True)
            log.warning("interrupted at step %d; checkpoint in %s (resume with resume_from=%r)",
                        self.step, path, str(path))  # fmt: skip
            self.steering.stop()
        else:
            self.save_checkpoint()
            self.save_adapter(self.run_dir / "adapter")
            plot(self)
        for cb in list(self.callbacks):  # a copy: the dashboard may move itself to a branch here
            cb.on_train_end(self)
        return self.history

    def train_step(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GRPO step; returns its metrics (also kept in ``self.history``)."""
        cfg = self.cfg
        # 1-2. roll out B prompts x G and score them; with dynamic sampling, draw more until B groups
        #      carry signal and keep those (dynamic.py)
        draw, drawn = draw_step(self)
        rollout, scores, scored = draw.rollout, draw.scores, draw.scored
        rewards = draw.rewards  # (N,), NaN = no reward at all
        t_score = time.perf_counter()
        # 3. advantages, relative to each prompt's group
        adv = group_advantages(
            rewards, cfg.group_size, scale=cfg.advantage_scale, baseline=cfg.advantage_baseline
        )
        # (N,) the model's tokens and where each completion ends, on the CPU: micro-batches never wait
        lengths, extents = torch.stack([rollout.lengths, rollout.extents]).cpu()
        adv = adv.to(self.device)  # (N,)
        trains = drawn.get("dynamic/groups_kept", 1) > 0  # dynamic sampling found no signal: no update
        # 4. reference (adapters off) and old log-probs, both without grad
        ref_logps = logps_no_grad(self, rollout, extents, reference=True) if cfg.beta > 0 and trains else None
        again = cfg.num_iterations > 1 and trains  # mu > 1: the ratio is against the policy before the step
        old_logps = logps_no_grad(self, rollout, extents, reference=False) if again else None
        t_ref = time.perf_counter()
        # 5. update: mu optimizer steps on this batch
        update: dict[str, float] = {} if trains else no_update()
        for iteration in range(cfg.num_iterations if trains else 0):
            entropy = {"entropy": update["entropy"]} if iteration else {}  # the first pass's: before updates
            update = policy_update(self, rollout, (lengths, extents), adv, old_logps, ref_logps,
                                   with_entropy=not iteration) | entropy  # fmt: skip
        self.step += 1
        self._optimizer_steps_taken = 0
        t_end = time.perf_counter()
        times = {"generate": drawn.pop("time/generate"), "score": drawn.pop("time/score"),
                 "reference": t_ref - t_score, "train": t_end - t_ref}  # fmt: skip
        # the latest step's completions with their scores, as the rewards saw them (the notebook's
        # completions panel; its reward editor re-scores them), published whole: another thread reads it
        self.last_rollout = scored | {"step": self.step, "per_function": scores.per_function,
                                      "reward": rewards.tolist(), "advantage": adv.tolist()}  # fmt: skip
        metrics = self.run_facts() | weights_in_force(self.rewards) | step_metrics(
            step=self.step, rollout=rollout, scores=scores, rewards=rewards, adv=adv, group_size=cfg.group_size,
            update=update, times=times, sampling=self.sampling, lr=self.scheduler.get_last_lr()[0],
            device=self.device, changes=changes or {},
        ) | drawn | self.data.difficulty.metrics()  # fmt: skip
        # the alarms this step sets off, checked once here for every listener (dashboard, trackers)
        return metrics | {"alarms": [asdict(a) for a in check_alarms([*self.history, metrics])]}

    def scan(self, prompts: int = 32, *, progress: bool = True) -> dict[str, Any]:
        """The pre-flight scan of the next ``prompts`` prompts (scan.py): signal, ties, lengths, a verdict;
        the run is left as it was. Also in ``RUN/scan.json``."""
        return scan(self, prompts=prompts, progress=progress)

    # ---- the step boundary -----------------------------------------------------------------------
    def _step_boundary(self) -> dict[str, Any]:
        """Let listeners steer, wait while paused, apply what was requested; returns the changes."""
        for cb in self.callbacks:
            cb.on_step_boundary(self)
        while self.steering.paused and not self.steering.stop_requested:
            time.sleep(0.05)
            for cb in self.callbacks:
                cb.on_step_boundary(self)
        requested = self.steering.take()
        self.rewards, changes = requested.apply(self.sampling, self.rewards, self.scheduler)
        if requested.warm_start:  # the no_signal alarm's remedy: a supervised phase, then GRPO goes on
            self.warm_started = warm_start(self, requested.warm_start)
            changes["warm_start"] = {k: self.warm_started[k] for k in ("source", "examples", "steps")}
        return changes

    def _emit(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        for cb in self.callbacks:
            cb.on_step_end(self, metrics)

    # ---- the run on disk (assembly.py) -----------------------------------------------------------
    def run_facts(self) -> dict[str, Any]:
        """How this run trains, in every step's metrics, checkpoint and the card: backend, dtype, rollouts."""
        return run_facts(self)

    def save_checkpoint(self, interrupted: bool = False) -> Path:
        """Write ``RUN/checkpoints/step-N`` (atomic) for the current step, then keep the newest
        ``cfg.keep_checkpoints`` (the best and one written on interrupt are always kept); ``run/state.py``."""
        return state_of(self).save(
            self.folder, self.step, rewards=self.rewards, config=self.cfg.to_dict(), facts=self.run_facts(),
            keep=self.cfg.keep_checkpoints, interrupted=interrupted,
        )  # fmt: skip

    def branch(self, step: int | str | Path = "latest", output_dir: str | Path | None = None) -> GRPOTrainer:
        """Rewind to the checkpoint of ``step`` (a number, ``"latest"``, ``"best"`` or a checkpoint folder)
        and start a new run from it in ``output_dir`` (default ``RUN/branches/step-N-K``): its adapter,
        optimizer, scheduler, RNG, sampling settings, and the reward functions and weights in force
        then; metrics continue at N+1; ``lineage.json`` and the adapter's card name the parent. This
        run's files are left as they are; its model object is shared with the branch (which loads the
        checkpoint's adapter into it), so continue this run by resuming it, not through this object."""
        return branch_of(self, step, output_dir)

    def save_adapter(self, directory: str | Path) -> Path:
        """The adapter in peft layout, the tokenizer, ``grpo_lite.json`` (config, rewards with weights
        and source, final metrics) and a model card (``export.save_trained_adapter``)."""
        return save_adapter(self, directory)
