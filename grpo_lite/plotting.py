"""Reward curves as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_rewards(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Total reward and one curve per reward function against the step, the held-out measures where the
    run evaluated them (``eval/NAME``); marks steered steps."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [_num(m.get("reward")) for m in history], label="total reward", linewidth=2)
    names = sorted({k for m in history for k in m if k.startswith("rewards/") and k.endswith("/mean")})
    for key in names:
        ax.plot(steps, [_num(m.get(key)) for m in history], label=key.split("/")[1], alpha=0.7)
    held_out = sorted({k for m in history for k in m if k.startswith("eval/") and k != "eval/seconds"})
    for key in held_out:  # held-out evaluation while training (held_out.py): its points beside the reward
        points = [(m["step"], float(m[key])) for m in history if isinstance(m.get(key), (int, float))]
        ax.plot(*zip(*points, strict=True), "^--", label=f"held-out {key.split('/', 1)[1]}")
    for m in history:
        if m.get("changes"):
            ax.axvline(m["step"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
