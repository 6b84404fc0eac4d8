"""DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rewards.text import completion_text


def overlong_score(length: int, *, max_length: int, cache_length: int) -> float:
    """0 up to max_length - cache_length, then linear down to -1 at max_length, -1 beyond."""
    start = max_length - cache_length
    if length <= start:
        return 0.0
    if length <= max_length:
        return (start - length) / cache_length
    return -1.0


def overlong_penalty(
    *, max_length: int, cache_length: int, tokenizer: Any = None
) -> Callable[..., list[float]]:
    """A reward function punishing completions longer than ``max_length - cache_length``.

    Lengths are in tokens when a tokenizer is given, else in characters. Returns a function with
    TRL's signature, named ``overlong_penalty``.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"overlong_penalty needs 0 < cache_length <= max_length; got {cache_length}, {max_length}"
        )

    def overlong_penalty(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if tokenizer is not None:
            lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        else:
            lengths = [len(t) for t in texts]
        return [overlong_score(n, max_length=max_length, cache_length=cache_length) for n in lengths]

    return overlong_penalty
