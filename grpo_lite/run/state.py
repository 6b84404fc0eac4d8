"""``TrainerState``: what a checkpoint captures and a resume or branch restores, as explicit objects.

A checkpoint (``RunDir.write_checkpoint``) holds the adapter (peft layout), ``trainer_state.pt``
(optimizer, scheduler, loss scaler, RNG) and ``state.json`` (step, sampling settings in force, the
rewards with weights, sources and origins, the config, how the run trains). Checkpoints written
before this module existed load the same way (tests/fixtures/checkpoint-v1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grpo_lite.rollout import Sampling
from grpo_lite.run.files import REQUIRED, is_complete
from grpo_lite.run.rewards import restore_rewards, reward_origin
from grpo_lite.run.rundir import RunDir
from rewards import Combined


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainerState:
    """The objects a run's progress lives in. ``save`` writes them as step ``step``'s checkpoint;
    ``restore`` loads a checkpoint into them and returns the step and the rewards to go on with."""

    model: Any  # the peft model: only its adapter weights are saved and loaded
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # precision.LossScaler
    sampling: Sampling
    prompts: Any = None  # data.PromptData: the prompt stream's cursor

    def save(
        self,
        run_dir: RunDir,
        step: int,
        *,
        rewards: Combined,
        config: dict[str, Any],
        facts: dict[str, Any],
        keep: int = 0,
        interrupted: bool = False,
    ) -> Path:
        """Write ``checkpoints/step-{step}`` (atomic), then keep the newest ``keep`` (0: all; one written
        on interrupt is always kept). ``facts``: how the run trains (backend, dtype, rollouts)."""
        return run_dir.write_checkpoint(
            step,
            keep=keep,
            model=self.model,
            tokenizer=self.tokenizer,
            trainer_state={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
            },
            state={
                "sampling": self.sampling.to_dict(),
                "rewards": [{"name": r.name, "weight": r.weight} for r in rewards.rewards],
                "reward_sources": {r.name: r.source for r in rewards.rewards},
                "reward_origins": {r.name: reward_origin(r.fn) for r in rewards.rewards},
                "config": config,
                "interrupted": interrupted,
                **({"prompts": self.prompts.state_dict()} if self.prompts is not None else {}),
                **facts,
            },
        )

    def restore(self, checkpoint: Path, *, rewards: Combined, branch: bool) -> tuple[int, Combined]:
        """Load ``checkpoint``: adapter, optimizer, scheduler, scaler, RNG and sampling settings into these
        objects. Returns its step and the rewards to go on with (a branch: those in force then)."""
        state, trainer_state = load_checkpoint(checkpoint, self.model)
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.scaler.load_state_dict(trainer_state.get("scaler", {}))
        set_rng_state(trainer_state["rng"])
        for key, value in state["sampling"].items():
            setattr(self.sampling, key, value)
        step = int(state["step"])
        if self.prompts is not None:  # checkpoints before the cursor: step s started at s * B
            served = {"served": step * int(state["config"].get("prompts_per_step", 0))}
            self.prompts.load_state_dict(state.get("prompts", served))
        return step, restore_rewards(state, rewards, branch=branch, where=checkpoint)


def load_checkpoint(path: Path, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the adapter weights into ``model``; return (state.json contents, trainer_state)."""
    import json

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete grpo-lite checkpoint (needs {list(REQUIRED)})")
    device = next(model.parameters()).device
    weights = load_file(str(path / "adapter_model.safetensors"), device=str(device))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(
            f"{path}: adapter weights do not fit this model (unexpected keys {unexpected[:3]}...)"
        )
    state = json.loads((path / "state.json").read_text())
    trainer_state = torch.load(path / "trainer_state.pt", weights_only=False)
    return state, trainer_state
