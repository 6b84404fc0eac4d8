"""``math_accuracy``: 1.0 when the completion's one final answer equals the gold ``answer`` column;
``last_number_accuracy``: the same, reading a plain answer's last number when nothing marks one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.answers import answers_equal, final_answer
from rewards.text import completion_text


def math_accuracy(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[Any],
    *,
    last_number_fallback: bool = False,
    timeout: float = 2.0,
    **_: Any,
) -> list[float]:
    """1.0 if the final answer equals ``answer`` mathematically, else 0.0.

    The final answer comes from ``<answer>``, else ``\\boxed{}``, else ``#### N`` (never from
    ``<think>``); none, an empty one, several that disagree, or a list of candidates scores 0.0.
    ``1,234`` = ``1234`` = ``1234.0``, ``$18`` = ``18``, ``50%`` = ``50``, ``1e3`` = ``1000``,
    ``\\frac{1}{2}`` = ``0.5`` = ``1/2``; ``0.333`` != ``1/3``. Each comparison is bounded by
    ``timeout`` seconds (then 0.0), in any thread.
    """
    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        predicted = final_answer(completion_text(completion), last_number_fallback=last_number_fallback)
        ok = predicted is not None and answers_equal(str(gold), predicted, timeout=timeout)
        scores.append(1.0 if ok else 0.0)
    return scores


def last_number_accuracy(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_: Any
) -> list[float]:
    """``math_accuracy`` for short plain answers ("7 + 8 = 15"): without ``<answer>``, ``\\boxed{}`` or
    ``#### N``, the answer is the completion's last number. One guess only: "14 or 15" answers 15."""
    return math_accuracy(prompts, completions, answer, last_number_fallback=True)
