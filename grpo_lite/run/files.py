"""Reading what a run left on disk: whether a checkpoint is complete, its state, the metrics log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REQUIRED = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.pt", "state.json")


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint folder with every required file and a readable state.json."""
    if not all((checkpoint / name).is_file() for name in REQUIRED):
        return False
    try:
        json.loads((checkpoint / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state.json (step, sampling, rewards, config, how the run trained)."""
    return dict(json.loads((Path(checkpoint) / "state.json").read_text()))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """A metrics log (``metrics.jsonl``) as a list of dicts; [] when there is none. A last line that a
    kill cut short is skipped (a bad line before it is an error: the log was damaged otherwise)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(
                    f"{path}: line {i + 1} is not JSON (the log was damaged): {line[:80]!r}"
                ) from None
    return out
