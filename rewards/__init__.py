"""Reward functions for GRPO with TRL's signature ``fn(prompts, completions, **columns) -> list[float | None]``.

This package never imports grpo_lite: TRL users import it as it is.
"""

from rewards.combine import Combined, NamedReward, RewardFunctionError, Scores, combine, source_of

__all__ = ["Combined", "NamedReward", "RewardFunctionError", "Scores", "combine", "source_of"]
