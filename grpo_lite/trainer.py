"""The GRPO training loop: roll out -> score -> advantages -> update -> log, one step at a time.

The math lives in pure functions (``advantages``, ``loss``, ``logprobs``); this module only calls
them in order, keeps the optimizer and the run directory, and hands one metrics dict per step to
its listeners. Shapes: B prompts, G completions each, N = B*G, T completion tokens.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from grpo_lite.advantages import group_advantages
from grpo_lite.alarms import check_alarms
from grpo_lite.backends import resolve_backend
from grpo_lite.callbacks import Callback, JsonlLogger, ProgressBar
from grpo_lite.config import GRPOConfig
from grpo_lite.data import PromptData, reward_columns
from grpo_lite.dynamic import Draw, no_update, seek_signal
from grpo_lite.held_out import HeldOut
from grpo_lite.logprobs import adapters_disabled, completion_logprobs
from grpo_lite.loss import grpo_loss, masked_mean, microbatch_weight
from grpo_lite.metrics import step_metrics
from grpo_lite.model import load_policy, trainable_parameters
from grpo_lite.optim import clipped_step, make_optimizer
from grpo_lite.precision import LossScaler, dtype_name, resolve_compute_dtype
from grpo_lite.rollout import Rollout, Sampling, generate, is_chat
from grpo_lite.rollout.weights import compiled_in_force, rollout_sampler
from grpo_lite.run import RunDir, TrainerState, read_state, rng_state, set_rng_state
from grpo_lite.run.atomic import replacing_folder, temp_path
from grpo_lite.scan import scan
from grpo_lite.steering import Steering, weights_in_force
from grpo_lite.tools import tool_use
from grpo_lite.trackers import make_trackers
from grpo_lite.warm_start import check_warm_start, record_from_state, warm_start, warm_start_facts
from rewards import Combined, NamedReward, combine

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
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        trackers = make_trackers(cfg, self.run_dir)  # before any model loads: a missing package fails fast
        self.data = PromptData(train_dataset, prompt_column=cfg.prompt_column, seed=cfg.seed, order=cfg.prompt_order,
                               rest_tied_after=cfg.rest_tied_after, rest_epochs=cfg.rest_epochs,
                               solve_threshold=cfg.solve_threshold)  # fmt: skip
        check_warm_start(cfg, self.data.rows)  # a solution column the data lacks: refused before loading
        self.rewards = (
            reward_funcs
            if isinstance(reward_funcs, Combined)
            else combine(*reward_funcs, weights=reward_weights)
        )
        self.held_out = HeldOut.build(
            cfg, eval_dataset, eval_measures, self.rewards, tools=bool(cfg.tools or tools)
        )
        self.sampling = Sampling.of(cfg)
        self.steering = Steering(
            lambda: self.rewards.names,
            lambda source: check_warm_start(cfg.replace(warm_start=source), self.data.rows),
        )
        self.step = 0
        self.interrupted_at: Path | None = None  # the checkpoint written when Ctrl-C stopped the run
        self._optimizer_steps_taken = 0
        self.warm_started: dict[str, Any] | None = None  # what the warm start did (warm_start.json)
        self.history: list[dict[str, Any]] = []
        self.last_rollout: dict[str, Any] | None = None
        torch.manual_seed(cfg.seed)  # LoRA init
        self.backend = resolve_backend(cfg.backend) if model is None else "preloaded"
        if model is None:
            model, tokenizer = load_policy(cfg)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with the model")
        self.model, self.tokenizer = model, tokenizer
        self._tool_functions = tuple(tools)  # a branch gets them too
        self.tools = tool_use(cfg.tools, tools, cfg, tokenizer)  # None: no tools
        self.device = next(model.parameters()).device
        self.compute_dtype = resolve_compute_dtype(cfg.compute_dtype, self.device)
        self.scaler = LossScaler(self.compute_dtype, self.device)  # float16 only: dynamic loss scaling
        self.optimizer, self.scheduler = make_optimizer(trainable_parameters(model), cfg, self.device)
        # what samples the rollouts: the policy, or its merged 16-bit copy where the planner finds room
        self.rollout_weights, self.sampler_model = rollout_sampler(
            cfg, model, self.device, self.compute_dtype, backend=self.backend
        )
        self.folder = RunDir(self.run_dir)  # the run's layout on disk: checkpoints, metrics, lineage
        resume = self.folder.resume_point(resume_from)
        # a new run, a branch (a checkpoint of another run: lineage recorded), or this run resumed
        self.lineage = self.folder.open(cfg, resume, overwrite=overwrite)
        self.callbacks: list[Callback] = [JsonlLogger(self.run_dir / "metrics.jsonl"), *callbacks, *trackers]
        if progress:
            self.callbacks.append(ProgressBar())
        if resume is not None:
            self._resume(resume)

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
                metrics |= self.held_out.measure(
                    self
                )  # eval/NAME when due, off the step's clock (held_out.py)
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
            self._plot()
        for cb in list(self.callbacks):  # a copy: the dashboard may move itself to a branch here
            cb.on_train_end(self)
        return self.history

    def train_step(self, changes: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GRPO step; returns its metrics (also kept in ``self.history``)."""
        cfg = self.cfg
        # 1-2. roll out B prompts x G and score them; with dynamic sampling, draw more until B groups
        #      carry signal and keep those (dynamic.py)
        draw, drawn = self._draw_step()
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
        ref_logps = self._logps_no_grad(rollout, extents, reference=True) if cfg.beta > 0 and trains else None
        old_logps = (
            self._logps_no_grad(rollout, extents, reference=False)
            if cfg.num_iterations > 1 and trains
            else None
        )
        t_ref = time.perf_counter()
        # 5. update: mu optimizer steps on this batch
        update: dict[str, float] = {} if trains else no_update()
        for iteration in range(cfg.num_iterations if trains else 0):
            entropy = (
                {"entropy": update["entropy"]} if iteration else {}
            )  # the first pass's: before any update
            update = (
                self._update(
                    rollout, (lengths, extents), adv, old_logps, ref_logps, with_entropy=not iteration
                )
                | entropy
            )
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

    # ---- pieces of a step ------------------------------------------------------------------------
    def _draw_step(self) -> tuple[Draw, dict[str, float]]:
        """The step's scored rollout, and its figures (dynamic sampling: draws, kept groups)."""
        B = self.cfg.prompts_per_step
        first = self._draw(B)
        if not self.cfg.dynamic_sampling:
            return first, {"time/generate": first.rollout_seconds, "time/score": first.score_seconds}
        return seek_signal(first, lambda: self._draw(B), want=B, max_extra_rounds=self.cfg.max_extra_rounds,
                           pad_id=self.tokenizer.pad_token_id)  # fmt: skip

    def _draw(self, n: int) -> Draw:
        """The next ``n`` prompts of the stream, G completions each with the sampling settings in force
        (sampled by the policy or its merged copy, brought up to the latest update: rollout/weights.py),
        scored by every reward function once, errors isolated."""
        t0 = time.perf_counter()
        indices = self.data.take(n)
        rows = [self.data.rows[i] for i in indices]
        prompts = [row[self.cfg.prompt_column] for row in rows]
        rollout = generate(
            self.sampler_model.current(), self.tokenizer, prompts, group_size=self.cfg.group_size,
            sampling=self.sampling, max_prompt_tokens=self.cfg.max_prompt_tokens, stop_strings=self.cfg.stop_strings,
            sampler=self.cfg.sampler, compiled=self.cfg.compile_rollouts, tools=self.tools,
        )  # fmt: skip
        t_gen = time.perf_counter()
        scores, scored = self._score(prompts, rows, rollout)
        draw = Draw(indices, rows, rollout, scores, scored, t_gen - t0, time.perf_counter() - t_gen)
        self.data.visited(indices, draw.rewards, self.cfg.group_size)  # each row's pass rate (difficulty.py)
        return draw

    def _score(
        self, prompts: list[Any], rows: list[dict[str, Any]], rollout: Rollout
    ) -> tuple[Any, dict[str, Any]]:
        """Every reward function once (errors isolated); returns the scores and what they were given."""
        G = self.cfg.group_size
        completions = rollout.for_rewards(chat=is_chat(prompts[0]))  # with tools: the whole exchange
        columns = reward_columns(rows, prompt_column=self.cfg.prompt_column, group_size=G)
        columns |= rollout.tool_columns()  # with tools: tool_calls and tool_failures per completion
        repeated = [p for p in prompts for _ in range(G)]  # (N,) each prompt once per completion
        scored = {"prompts": repeated, "completions": completions, "columns": columns, "group_size": G}
        scores = self.rewards.score(repeated, completions, time_limit=self.cfg.reward_timeout,
                                    stop=lambda: self.steering.stop_requested, **columns)  # fmt: skip
        self.steering.watch_timeouts(scores.timed_out)  # 3 steps in a row: weight 0 from the next step
        return scores, scored

    def _logps_no_grad(self, rollout: Rollout, extents: torch.Tensor, *, reference: bool) -> torch.Tensor:
        """(N, T) log-probs without grad: of the base (adapters off) or of the current policy."""
        out = torch.zeros(rollout.completion_mask.shape, dtype=torch.float32, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for idx in self._micro_batches(torch.arange(rollout.completion_ids.shape[0])):
                ids, attn, mask, T = rollout.rows(idx, extents)
                with adapters_disabled(self.model) if reference else torch.no_grad():
                    logps, _ = self._completion_logprobs(ids, attn, mask)
                out[idx, :T] = logps.float()
        finally:
            self.model.train(was_training)
        return out

    def _update(
        self,
        rollout: Rollout,
        sizes: tuple[torch.Tensor, torch.Tensor],
        adv: torch.Tensor,
        old_logps: torch.Tensor | None,
        ref_logps: torch.Tensor | None,
        *,
        with_entropy: bool,
    ) -> dict[str, float]:
        """Accumulate gradients over micro-batches and take one optimizer step (or skip a bad one).
        ``sizes``: (N,) the model's tokens and the completions' extents (tools' answers included) on
        the CPU, so that no micro-batch waits on the device; the metrics stay tensors until one sync."""
        cfg, (lengths, extents) = self.cfg, sizes
        N = lengths.shape[0]
        # With beta = 0 a zero-advantage completion contributes exactly zero gradient: skip its passes.
        keep = torch.arange(N) if cfg.beta > 0 else torch.nonzero(adv.cpu() != 0).flatten()
        self.model.train()
        total_tokens = int(lengths.sum())
        sums: dict[str, torch.Tensor] = {}  # token-weighted sums of the micro-batches' metrics
        loss_sum = torch.zeros((), device=self.device)
        for idx in self._micro_batches(keep):
            ids, attn, mask, T = rollout.rows(idx, extents)
            logps, entropy = self._completion_logprobs(
                ids, attn, mask, with_entropy=with_entropy
            )  # (n, T) each
            old = old_logps[idx, :T] if old_logps is not None else logps.detach()
            ref = ref_logps[idx, :T] if ref_logps is not None else None
            loss, m = grpo_loss(
                logps, old, ref, adv[idx], mask,
                eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta, loss_type=cfg.loss_type,
                max_tokens=cfg.max_new_tokens, importance_sampling=cfg.importance_sampling,
            )  # fmt: skip
            weight = microbatch_weight(cfg.loss_type, lengths[idx], total_seqs=N, total_tokens=total_tokens)
            self.scaler.scale(loss * weight).backward()
            loss_sum = loss_sum + loss.detach().float() * weight
            if entropy is not None:
                m["entropy"] = masked_mean(entropy.detach(), mask)
            tokens = float(lengths[idx].sum())
            for k, v in m.items():
                sums[k] = sums.get(k, 0) + v.float() * tokens
        if not len(keep):  # every gradient is exactly 0: step with zeros, as the full computation would
            for p in trainable_parameters(self.model):
                p.grad = torch.zeros_like(p)
        names = list(sums)
        loss_total, *values = torch.stack([loss_sum, *(sums[k] for k in names)]).tolist()  # the one sync
        kept_tokens = max(float(lengths[keep].sum()), 1.0)
        metrics = {k: v / kept_tokens for k, v in zip(names, values, strict=True)}
        metrics |= {"loss": loss_total, "skipped_compute_frac": 1 - len(keep) / N}
        metrics.setdefault("entropy", math.nan)
        return metrics | self._optimizer_step(loss_total)

    def _optimizer_step(self, loss: float) -> dict[str, float]:
        """Unscale, clip and step (optim.clipped_step); a non-finite loss or gradient skips the update."""
        out = clipped_step(
            trainable_parameters(self.model), self.optimizer, self.scheduler, self.scaler, loss=loss,
            max_grad_norm=self.cfg.max_grad_norm, device=self.device, step=self.step + 1,
        )  # fmt: skip
        self._optimizer_steps_taken += int(not out["update_skipped"])
        return out

    def _completion_logprobs(
        self, ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, *, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs at the sampling temperature in force (see logprobs.completion_logprobs);
        packed by prompt where asked, but with Unsloth, whose attention takes no custom mask."""
        return completion_logprobs(self.model, ids, attn, mask, temperature=self.sampling.temperature,
                                   chunk_tokens=self.cfg.logprob_chunk_tokens, with_entropy=with_entropy,
                                   pack=self.cfg.pack_prompts and self.backend != "unsloth")  # fmt: skip

    def _micro_batches(self, indices: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(indices, self.cfg.micro_batch_size)) if len(indices) else []

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

    # ---- optimizer, run directory, checkpoints -----------------------------------------------------
    def run_facts(self) -> dict[str, Any]:
        """How this run trains, in every step's metrics, checkpoint and the card: backend, dtype, rollouts."""
        return {
            "backend": self.backend,
            "compute_dtype": dtype_name(self.compute_dtype),
            "rollout_weights": self.rollout_weights,
            "compiled_rollouts": compiled_in_force(self.cfg, self.sampler_model),
        } | warm_start_facts(self.warm_started)

    def save_checkpoint(self, interrupted: bool = False) -> Path:
        """Write ``RUN/checkpoints/step-N`` (atomic) for the current step, then keep the newest
        ``cfg.keep_checkpoints`` (one written on interrupt is always kept); ``run/state.py``."""
        return self.state.save(
            self.folder, self.step, rewards=self.rewards, config=self.cfg.to_dict(), facts=self.run_facts(),
            keep=self.cfg.keep_checkpoints, interrupted=interrupted,
        )  # fmt: skip

    @property
    def state(self) -> TrainerState:
        """The objects a checkpoint captures, as they are now (``run/state.py``)."""
        return TrainerState(
            self.model, self.tokenizer, self.optimizer, self.scheduler, self.scaler, self.sampling, self.data
        )

    def _resume(self, checkpoint: Path) -> None:
        """Bring this run to ``checkpoint`` (``run/state.py``); the metrics log is cut at its step."""
        branch = self.folder.is_branch_start(checkpoint)
        self.step, self.rewards = self.state.restore(checkpoint, rewards=self.rewards, branch=branch)
        self.warm_started = record_from_state(
            read_state(checkpoint)
        )  # done before that checkpoint, if at all
        self.history = self.folder.truncate_metrics(self.step)
        self.held_out.restore(self)  # the best among this folder's own checkpoints up to here

    def branch(self, step: int | str | Path = "latest", output_dir: str | Path | None = None) -> GRPOTrainer:
        """Rewind to the checkpoint of ``step`` (a number, ``"latest"`` or a checkpoint folder) and
        start a new run from it in ``output_dir`` (default ``RUN/branches/step-N-K``): its adapter,
        optimizer, scheduler, RNG, sampling settings, and the reward functions and weights in force
        then; metrics continue at N+1; ``lineage.json`` and the adapter's card name the parent. This
        run's files are left as they are; its model object is shared with the branch (which loads the
        checkpoint's adapter into it), so continue this run by resuming it, not through this object."""
        checkpoint = self.folder.find_checkpoint(step)
        at = int(read_state(checkpoint)["step"])
        target = Path(output_dir) if output_dir is not None else self.folder.new_branch_dir(at)
        # its own run in the trackers: the parent's name and the branch's folder (e.g. "sums-step-40-1")
        run_name = f"{self.cfg.run_name or self.run_dir.resolve().name}-{target.name}"
        return GRPOTrainer(
            self.cfg.replace(output_dir=str(target), run_name=run_name), self.data.rows, self.rewards,
            model=self.model, tokenizer=self.tokenizer, resume_from=checkpoint, tools=self._tool_functions,
            progress=any(isinstance(cb, ProgressBar) for cb in self.callbacks),
            eval_dataset=self.held_out.rows or None, eval_measures=self.held_out.measures or None,
        )  # fmt: skip

    def save_adapter(self, directory: str | Path) -> Path:
        """The adapter in peft layout, the tokenizer, ``grpo_lite.json`` (config, rewards with weights
        and source, final metrics) and a model card (``export.save_trained_adapter``)."""
        from grpo_lite.export import save_trained_adapter

        with replacing_folder(Path(directory)) as tmp:  # complete under its name, or the old one (atomic.py)
            save_trained_adapter(tmp, self)
        return Path(directory)

    def _plot(self) -> None:
        from grpo_lite.plotting import plot_rewards

        if self.history:
            tmp = temp_path(self.run_dir / "reward_curve.png")
            plot_rewards(self.history, tmp)
            os.replace(tmp, self.run_dir / "reward_curve.png")
