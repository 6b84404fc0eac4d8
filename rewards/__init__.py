"""Reward functions for GRPO with TRL's signature ``fn(prompts, completions, **columns) -> list[float | None]``.

``completions`` are strings or lists of chat messages (the last assistant message is scored);
dataset columns arrive as keyword lists aligned with the completions; ``None`` means "does not
apply". This package never imports grpo_lite: TRL users import it as it is.
"""

from rewards.accuracy import last_number_accuracy, math_accuracy
from rewards.bench import run_bench
from rewards.code import code_unit_tests, extract_code
from rewards.combine import Combined, NamedReward, RewardFunctionError, Scores, combine, source_of
from rewards.exact import answer_tag_format, exact_answer
from rewards.format import soft_format, strict_format, tag_count
from rewards.json_fields import json_exact, json_fields
from rewards.length import overlong_penalty
from rewards.text import completion_text

__all__ = [
    "Combined",
    "NamedReward",
    "RewardFunctionError",
    "Scores",
    "answer_tag_format",
    "code_unit_tests",
    "combine",
    "completion_text",
    "exact_answer",
    "extract_code",
    "json_exact",
    "json_fields",
    "last_number_accuracy",
    "math_accuracy",
    "overlong_penalty",
    "run_bench",
    "soft_format",
    "source_of",
    "strict_format",
    "tag_count",
]
