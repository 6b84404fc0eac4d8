"""What a trainer writes into a checkpoint and reads back on resume or branch.

``RUN/checkpoints/step-N`` holds the adapter, ``trainer_state`` (optimizer, scheduler, loss
scaler, RNG: ``trainer.pt``) and ``state`` (``state.json``: the sampling settings, rewards with
weights, sources and where each came from, the config, and how the run trains). The files and
their atomic writing are ``checkpoint.py``'s; this module decides what goes in them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpo_lite import branching
from grpo_lite.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from grpo_lite.rundir import truncate_metrics_log


def save(trainer: Any, interrupted: bool = False) -> Path:
    """Write ``RUN/checkpoints/step-N`` for the trainer's current step, then keep the newest
    ``cfg.keep_checkpoints`` (one written on interrupt is always kept)."""
    rewards = trainer.rewards.rewards
    return save_checkpoint(
        trainer.run_dir,
        trainer.step,
        keep=trainer.cfg.keep_checkpoints,
        model=trainer.model,
        tokenizer=trainer.tokenizer,
        trainer_state={
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": rng_state(),
        },
        state={
            "sampling": trainer.sampling.to_dict(),
            "rewards": [{"name": r.name, "weight": r.weight} for r in rewards],
            "reward_sources": {r.name: r.source for r in rewards},
            "reward_origins": {r.name: branching.reward_origin(r.fn) for r in rewards},
            "config": trainer.cfg.to_dict(),
            "interrupted": interrupted,
            **trainer.run_facts(),
        },
    )


def resume(trainer: Any, path: Path) -> None:
    """Bring the trainer to checkpoint ``path``: adapter, optimizer, scheduler, scaler, RNG, step,
    sampling settings, rewards in force (re-imported or compiled for a branch), metrics log cut there."""
    state, trainer_state = load_checkpoint(path, trainer.model)
    trainer.optimizer.load_state_dict(trainer_state["optimizer"])
    trainer.scheduler.load_state_dict(trainer_state["scheduler"])
    trainer.scaler.load_state_dict(trainer_state.get("scaler", {}))
    set_rng_state(trainer_state["rng"])
    trainer.step = int(state["step"])
    for key, value in state["sampling"].items():
        setattr(trainer.sampling, key, value)
    trainer.rewards = branching.restore_rewards(
        state, trainer.rewards, branch=branching.is_branch_start(path, trainer.run_dir), where=path
    )
    trainer.history = truncate_metrics_log(trainer.run_dir, trainer.step)
