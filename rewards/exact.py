"""Exact-answer rewards for answers written as ``<answer>...</answer>`` (the demo's task)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.text import completion_text

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
ONLY_ANSWER = re.compile(r"\s*<answer>[^<]*</answer>\s*")


def exact_answer(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_: Any
) -> list[float]:
    """1.0 when the completion has exactly one ``<answer>`` block whose stripped text equals the
    ``answer`` column (as a string), else 0.0. An empty block never matches."""
    out = []
    for completion, gold in zip(completions, answer, strict=True):
        found = ANSWER.findall(completion_text(completion))
        ok = len(found) == 1 and found[0].strip() != "" and found[0].strip() == str(gold).strip()
        out.append(1.0 if ok else 0.0)
    return out


def answer_tag_format(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
    """1.0 when the completion is nothing but one ``<answer>...</answer>`` block, else 0.0."""
    return [1.0 if ONLY_ANSWER.fullmatch(completion_text(c)) else 0.0 for c in completions]
