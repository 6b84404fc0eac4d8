"""Rewind and branch: a new run started from a checkpoint of another, which remembers where it came from.

A branch is a run directory of its own (default ``RUN/branches/step-N-K``) with ``lineage.json`` (the
parent's run directory and step, the checkpoint, and the parent's own lineage if it is a branch too),
the parent's ``metrics.jsonl`` up to step N (so its curves continue), then its own steps N+1, N+2 …
It starts from everything the checkpoint holds: adapter, optimizer, scheduler (so the learning rate
in force then), loss scaler, RNG, sampling settings, and the reward functions as they were then
(their saved sources, with their weights). The parent's directory is only read.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpo_lite.checkpoint import is_complete, latest_checkpoint
from rewards import Combined, NamedReward

if TYPE_CHECKING:
    from grpo_lite.config import GRPOConfig
    from grpo_lite.trainer import GRPOTrainer

LINEAGE = "lineage.json"
log = logging.getLogger(__name__)


def complete_steps(run_dir: Path) -> list[int]:
    """The steps of a run's complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    steps = [p.name.removeprefix("step-") for p in root.glob("step-*")] if root.is_dir() else []
    return sorted(int(s) for s in steps if s.isdigit() and is_complete(root / f"step-{s}"))


def checkpoint_of(run_dir: Path, step: int | str | Path) -> Path:
    """The complete checkpoint for ``step``: a step number, ``"latest"``, or a checkpoint folder."""
    run_dir = Path(run_dir)
    if isinstance(step, Path) or (isinstance(step, str) and step != "latest" and not step.isdigit()):
        path: Path | None = Path(step)
    elif step == "latest":
        path = latest_checkpoint(run_dir)
    else:
        path = run_dir / "checkpoints" / f"step-{int(step)}"
    if path is None or not is_complete(path):
        raise FileNotFoundError(
            f"cannot branch from step {step!s}: no complete checkpoint {path or ''} in {run_dir / 'checkpoints'}; "
            f"complete checkpoints: steps {complete_steps(run_dir) or 'none'}"
        )
    return path


def default_branch_dir(run_dir: Path, step: int) -> Path:
    """``RUN/branches/step-N-K`` with the first K not taken."""
    k = 1
    while (Path(run_dir) / "branches" / f"step-{step}-{k}").exists():
        k += 1
    return Path(run_dir) / "branches" / f"step-{step}-{k}"


def read_lineage(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / LINEAGE
    return json.loads(path.read_text()) if path.exists() else None


def start_branch(checkpoint: Path, run_dir: Path, cfg: GRPOConfig) -> dict[str, Any]:
    """Make ``run_dir`` (absent or empty) a branch of the run that wrote ``checkpoint``: its config,
    ``lineage.json`` and the parent's metrics up to the checkpoint's step. Returns the lineage."""
    run_dir, checkpoint = Path(run_dir), Path(checkpoint)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(
            f"cannot branch into {run_dir}: it is not empty (holds {sorted(p.name for p in run_dir.iterdir())[:5]}); "
            "give an absent or empty output directory"
        )
    state = json.loads((checkpoint / "state.json").read_text())
    parent = checkpoint.resolve().parent.parent
    lineage: dict[str, Any] = {
        "parent_run_dir": str(parent),
        "parent_step": int(state["step"]),
        "checkpoint": str(checkpoint.resolve()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if read_lineage(parent):
        lineage["parent_lineage"] = read_lineage(parent)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    (run_dir / LINEAGE).write_text(json.dumps(lineage, indent=2) + "\n")
    if (checkpoint / "metrics.jsonl").exists():
        shutil.copyfile(checkpoint / "metrics.jsonl", run_dir / "metrics.jsonl")
    return lineage


def is_branch_start(checkpoint: Path, run_dir: Path) -> bool:
    """Resuming ``checkpoint`` into ``run_dir`` starts a branch: the checkpoint is another run's."""
    return Path(checkpoint).resolve().parent.parent != Path(run_dir).resolve()


def rewards_at(state: dict[str, Any], current: Combined) -> Combined:
    """The reward functions in force when the checkpoint was written, with their weights: the current
    function where its source is the saved one, else the saved source compiled."""
    from grpo_lite.reward_source import RewardSourceError, compile_reward

    sources, origins = state.get("reward_sources", {}), state.get("reward_origins", {})
    items = []
    for saved in state["rewards"]:
        name, source = saved["name"], sources.get(saved["name"], "")
        now = current.rewards[current.names.index(name)] if name in current.names else None
        original = _importable(origins.get(name), source)
        if now is not None and now.source == source:
            fn = now.fn
        elif original is not None:  # a function of a module (a built-in reward): its module's globals too
            fn = original
        else:
            try:
                fn = compile_reward(source, name)
            except RewardSourceError as err:
                raise ValueError(
                    f"cannot restore reward {name!r} from the checkpoint's saved source: {err}"
                ) from err
        items.append(NamedReward(fn, name, float(saved["weight"]), source))
    return Combined(items)


def reward_origin(fn: Any) -> str | None:
    """``module:qualname`` of a reward defined in an importable module (None for one compiled from
    the editor or defined in a notebook), saved with checkpoints so a branch can import it again."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or getattr(fn, "__grpo_source__", None):
        return None
    return f"{module}:{qualname}"


def _importable(origin: str | None, source: str) -> Any:
    """The function at ``origin`` if it imports and its source is still ``source``, else None."""
    if not origin:
        return None
    import importlib

    from rewards import source_of

    module, _, qualname = origin.partition(":")
    try:
        fn: Any = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError):
        return None
    return fn if source_of(fn) == source else None


def restore_rewards(state: dict[str, Any], current: Combined, *, branch: bool, where: Path) -> Combined:
    """The rewards to go on with after loading a checkpoint: a branch takes the ones in force then
    (:func:`rewards_at`); a resumed run keeps the ones it was given, with a warning for each that
    differs from the checkpoint's."""
    if branch:
        return rewards_at(state, current)
    for name, source in state.get("reward_sources", {}).items():
        if name in current.names and current.rewards[current.names.index(name)].source != source:
            log.warning("reward %r differs from the one in force at %s; the new one is used", name, where)
    return current


def branch(parent: GRPOTrainer, step: int | str | Path, output_dir: str | Path | None) -> GRPOTrainer:
    """See :meth:`GRPOTrainer.branch`."""
    from grpo_lite.callbacks import ProgressBar
    from grpo_lite.trainer import GRPOTrainer

    checkpoint = checkpoint_of(parent.run_dir, step)
    at = int(json.loads((checkpoint / "state.json").read_text())["step"])
    target = Path(output_dir) if output_dir is not None else default_branch_dir(parent.run_dir, at)
    # its own run in the trackers: the parent's name and the branch's folder (e.g. "sums-step-40-1")
    run_name = f"{parent.cfg.run_name or parent.run_dir.resolve().name}-{target.name}"
    return GRPOTrainer(
        parent.cfg.replace(output_dir=str(target), run_name=run_name),
        parent.data.rows,
        parent.rewards,
        model=parent.model,
        tokenizer=parent.tokenizer,
        resume_from=checkpoint,
        progress=any(isinstance(cb, ProgressBar) for cb in parent.callbacks),
    )
