"""The arithmetic task (the first demo's): one-digit sums and products, "What is 7 + 8?".

Reward: ``last_number_accuracy`` (the answer's last number equals the sum or product); nothing pays
for form alone. Held-out accuracy: the same reward, greedy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from grpo_lite.tasks.task import Task

SPLIT_SEED = 1234  # fixed: the held-out problems must be the ones the cached model never saw


def one_digit_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): "What is a + b?" (a, b in 1-9) and "What is a * b?" (a, b in 2-9)
    as chat prompts, the answer in the ``answer`` column; 145 problems, 48 held out."""
    problems = [(f"What is {a} + {b}?", a + b) for a in range(1, 10) for b in range(1, 10)]
    problems += [(f"What is {a} * {b}?", a * b) for a in range(2, 10) for b in range(2, 10)]
    random.Random(SPLIT_SEED).shuffle(problems)
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": str(a)} for q, a in problems]
    held = len(rows) // 3
    return rows[held:], rows[:held]


def last_number_accuracy(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any
) -> list[float]:
    """1.0 when the answer's last number is the right one (``rewards.last_number_accuracy``); imports
    inside itself so that the dashboard's reward editor can compile an edited copy on its own."""
    from rewards import last_number_accuracy as right

    return right(prompts, completions, answer)


TASK = Task(
    name="arithmetic",
    summary="one-digit sums and products: 'What is 7 + 8?'",
    split=one_digit_split,
    rewards=(last_number_accuracy,),
    weights=(1.0,),
    measures={"accuracy": last_number_accuracy},
    settings={"max_new_tokens": 16},
    steps=40,
    samples=(
        [[{"role": "assistant", "content": "7 + 8 = 15"}], [{"role": "assistant", "content": "14"}]],
        {"answer": ["15", "15"]},
    ),
)
