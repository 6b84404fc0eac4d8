"""Format rewards for the R1 template ``<think>...</think><answer>...</answer>``.

Each can be gated on correctness (``require_correct=True``, needs the ``answer`` column): then a
completion earns format credit only when ``math_accuracy`` also pays it, so format alone can never
out-earn being right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.accuracy import math_accuracy
from rewards.text import completion_text

_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"
STRICT = re.compile(rf"\s*<think>{_NO_TAG}</think>\s*<answer>({_NO_TAG})</answer>\s*", re.DOTALL)
SOFT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _gate(
    scores: list[float], prompts: Sequence[Any], completions: Sequence[Any], columns: dict[str, Any], on: bool
) -> list[float]:
    if not on:
        return scores
    if "answer" not in columns:
        raise ValueError("require_correct=True needs the 'answer' column (the gold answer)")
    correct = math_accuracy(prompts, completions, columns["answer"])
    return [s if c == 1.0 else min(s, 0.0) for s, c in zip(scores, correct, strict=True)]


def strict_format(
    prompts: Sequence[Any], completions: Sequence[Any], *, require_correct: bool = False, **columns: Any
) -> list[float]:
    """1.0 for exactly one think block then one non-empty answer block, in that order, with
    nothing but whitespace around them; else 0.0."""
    scores = []
    for c in completions:
        m = STRICT.fullmatch(completion_text(c))
        scores.append(1.0 if m and m.group(1).strip() else 0.0)
    return _gate(scores, prompts, completions, columns, require_correct)


def soft_format(
    prompts: Sequence[Any], completions: Sequence[Any], *, require_correct: bool = False, **columns: Any
) -> list[float]:
    """1.0 when a think block followed by an answer block appears anywhere; else 0.0."""
    scores = [1.0 if SOFT.search(completion_text(c)) else 0.0 for c in completions]
    return _gate(scores, prompts, completions, columns, require_correct)


def tag_count_score(text: str) -> float:
    """+0.25 per tag present exactly once and after the tag before it; -0.25 per repeated copy of a
    tag; -0.001 per character after ``</answer>`` (at most -0.5)."""
    score, last = 0.0, -1
    for tag in TAGS:
        n = text.count(tag)
        pos = text.find(tag)
        if n == 1 and pos > last:
            score += 0.25
            last = pos
        score -= 0.25 * max(n - 1, 0)
    end = text.rfind("</answer>")
    if end >= 0:
        trailing = len(text[end + len("</answer>") :].strip())
        score -= min(0.001 * trailing, 0.5)
    return score


def tag_count(
    prompts: Sequence[Any], completions: Sequence[Any], *, require_correct: bool = False, **columns: Any
) -> list[float]:
    """Partial credit for the R1 tags (see :func:`tag_count_score`): at most 1.0, spam goes negative."""
    scores = [tag_count_score(completion_text(c)) for c in completions]
    return _gate(scores, prompts, completions, columns, require_correct)
