"""grpo-lite: GRPO with 4-bit LoRA on one GPU, in a notebook you can steer while it trains."""

from grpo_lite.advantages import group_advantages
from grpo_lite.config import GRPOConfig
from grpo_lite.loss import grpo_loss
from grpo_lite.memory import plan_memory
from grpo_lite.trainer import GRPOTrainer

__all__ = ["GRPOConfig", "GRPOTrainer", "group_advantages", "grpo_loss", "plan_memory"]
__version__ = "0.1.0"
