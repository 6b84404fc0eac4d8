"""Checkpoints: written to a temporary folder, then renamed, so a half-written one is never loaded.

``RUN/checkpoints/step-N/`` holds the adapter in peft layout (``adapter_config.json``,
``adapter_model.safetensors``) with the tokenizer, ``trainer_state.pt`` (optimizer, scheduler, RNG
states), ``state.json`` (step, sampling settings in force, reward names and weights), the config,
a copy of ``metrics.jsonl`` up to step N and ``rewards/NAME.py``, the source of each reward function.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

REQUIRED = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.pt", "state.json")


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


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Write ``run_dir/checkpoints/step-{step}`` atomically; returns its path. Each source in
    ``state["reward_sources"]`` is also written to ``rewards/NAME.py``. Then, with ``keep`` > 0,
    older checkpoints are pruned (:func:`prune_checkpoints`) — only once this one is complete."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(trainer_state, tmp / "trainer_state.pt")
        (tmp / "rewards").mkdir()
        for name, src in state.get("reward_sources", {}).items():
            (tmp / "rewards" / f"{name}.py").write_text(src)
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            shutil.copyfile(metrics, tmp / "metrics.jsonl")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
        if final.exists():  # the same step saved again (e.g. stop right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep:
        prune_checkpoints(run_dir, keep)
    return final


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep``; returns what was deleted. Never
    deleted: the newest complete one, one written on interrupt (``state.json`` says
    ``"interrupted": true``), and anything incomplete (a save in progress, a crashed one: kept to
    look at, ignored on resume)."""
    root = Path(run_dir) / "checkpoints"
    complete = []
    for path in root.glob("step-*"):
        suffix = path.name.removeprefix("step-")
        if suffix.isdigit() and is_complete(path):
            complete.append((int(suffix), path))
    complete.sort(reverse=True)
    deleted = []
    for _, path in complete[max(keep, 1) :]:
        if json.loads((path / "state.json").read_text()).get("interrupted"):
            continue
        shutil.rmtree(path)
        deleted.append(path)
    return deleted


def is_complete(path: Path) -> bool:
    """A checkpoint folder with every required file and a readable state.json."""
    if not all((path / name).is_file() for name in REQUIRED):
        return False
    try:
        json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run; incomplete ones are skipped with a warning."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    steps = []
    for path in root.glob("step-*"):
        suffix = path.name.removeprefix("step-")
        if suffix.isdigit():
            steps.append((int(suffix), path))
    for _, path in sorted(steps, reverse=True):
        if is_complete(path):
            return path
        warnings.warn(f"ignoring incomplete checkpoint {path} (missing or unreadable files)", stacklevel=2)
    return None


def load_checkpoint(path: Path, model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the adapter weights into ``model``; return (state.json contents, trainer_state)."""
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
