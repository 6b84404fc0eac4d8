"""The run directory: never mix two runs' files; on resume, keep the log up to the checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from grpo_lite.callbacks import read_metrics
from grpo_lite.checkpoint import latest_checkpoint
from grpo_lite.config import GRPOConfig

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "adapter", "summary.json", "reward_curve.png")


def resolve_resume(run_dir: Path, resume_from: str | Path | None) -> Path | None:
    """The checkpoint to resume: a folder, ``"latest"`` (newest complete one), or None."""
    if resume_from is None:
        return None
    resume = latest_checkpoint(run_dir) if str(resume_from) == "latest" else Path(resume_from)
    if resume is None:
        raise FileNotFoundError(f"no complete checkpoint to resume in {run_dir / 'checkpoints'}")
    return resume


def prepare_run_dir(run_dir: Path, cfg: GRPOConfig, *, overwrite: bool) -> None:
    """Create the run directory; a previous run there is refused unless ``overwrite``, then removed."""
    previous = [name for name in RUN_FILES if (run_dir / name).exists()]
    if previous and not overwrite:
        raise FileExistsError(
            f"{run_dir} holds a previous run ({', '.join(previous)}); pass overwrite=True "
            "(--overwrite) to replace it, or resume it"
        )
    for name in previous:
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")


def open_run_dir(
    run_dir: Path, cfg: GRPOConfig, resume: Path | None, *, overwrite: bool
) -> dict[str, Any] | None:
    """Ready ``run_dir`` for training; returns its lineage (None for a run that is not a branch).
    No checkpoint: a new run (:func:`prepare_run_dir`). Another run's checkpoint: a branch of it
    (:func:`grpo_lite.branching.start_branch`). This run's own checkpoint: nothing to do."""
    from grpo_lite.branching import is_branch_start, read_lineage, start_branch

    if resume is None:
        prepare_run_dir(run_dir, cfg, overwrite=overwrite)
        return None
    if is_branch_start(resume, run_dir):
        return start_branch(resume, run_dir, cfg)
    return read_lineage(run_dir)


def truncate_metrics_log(run_dir: Path, step: int) -> list[dict[str, Any]]:
    """Keep the logged steps up to ``step``: later ones belong to the interrupted attempt."""
    kept = [m for m in read_metrics(run_dir / "metrics.jsonl") if m["step"] <= step]
    with (run_dir / "metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(m) + "\n" for m in kept)
    return kept
