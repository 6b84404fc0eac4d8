"""Experiment trackers: the same metrics, completions and steering events in Trackio, TensorBoard and
Weights & Biases (``GRPOConfig.report_to``). Each tracker is a callback in a module of its own,
imported only when chosen; a chosen tracker that is not installed stops the run before any model is
loaded, with the pip package to install."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from grpo_lite.callbacks import Callback
from grpo_lite.config import TRACKER_NAMES, GRPOConfig

# name in report_to -> (our module, the package it imports, what to pip install)
TRACKERS = {
    "trackio": ("grpo_lite.trackers.trackio_log", "trackio", "trackio"),
    "tensorboard": ("grpo_lite.trackers.tensorboard_log", "tensorboard", "tensorboard"),
    "wandb": ("grpo_lite.trackers.wandb_log", "wandb", "wandb"),
}
assert tuple(TRACKERS) == TRACKER_NAMES, (
    "a tracker named in config.TRACKER_NAMES has no module here, or the reverse"
)


def check_installed(report_to: Sequence[str]) -> None:
    """Raise ImportError naming the pip package of every chosen tracker that is not installed."""
    missing = [TRACKERS[name][2] for name in report_to if importlib.util.find_spec(TRACKERS[name][1]) is None]
    if missing:
        raise ImportError(
            f"GRPOConfig.report_to={tuple(report_to)!r} needs {', '.join(missing)}, not installed here: "
            f"pip install {' '.join(missing)}"
        )


def make_trackers(cfg: GRPOConfig, run_dir: Path) -> list[Callback]:
    """One callback per tracker in ``cfg.report_to`` (their modules imported only now)."""
    check_installed(cfg.report_to)
    return [importlib.import_module(TRACKERS[name][0]).Tracker(cfg, run_dir) for name in cfg.report_to]
