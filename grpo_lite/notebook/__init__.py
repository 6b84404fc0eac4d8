"""The notebook UI: a live dashboard bound to a trainer. ``grpo_lite`` never imports this package."""

from grpo_lite.alarms import Alarm, check_alarms
from grpo_lite.notebook.dashboard import Dashboard
from grpo_lite.notebook.editor import RewardSourceError, apply_reward, compile_reward, try_reward

__all__ = [
    "Alarm",
    "Dashboard",
    "RewardSourceError",
    "apply_reward",
    "check_alarms",
    "compile_reward",
    "try_reward",
]
