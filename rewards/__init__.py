"""Reward functions for GRPO with TRL's signature ``fn(prompts, completions, **columns) -> list[float | None]``.

This package never imports grpo_lite: TRL users import it as it is.
"""

from rewards.combine import Combined, NamedReward, RewardFunctionError, Scores, combine, source_of
from rewards.exact import answer_tag_format, exact_answer
from rewards.text import completion_text

__all__ = [
    "Combined",
    "NamedReward",
    "RewardFunctionError",
    "Scores",
    "answer_tag_format",
    "combine",
    "completion_text",
    "exact_answer",
    "source_of",
]
