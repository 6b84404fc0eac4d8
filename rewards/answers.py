"""Finding the one final answer in a completion, and deciding whether two answers are equal.

Answers come from ``<answer>...</answer>``, else ``\\boxed{...}``, else a ``#### N`` line; text in
``<think>...</think>`` is never an answer. Equality is mathematical: plain numbers (``1,234``,
``$18``, ``50%``, ``1e3``, ``1/2``) are compared exactly as fractions here; anything else (LaTeX)
goes to math-verify with a time bound that holds in any thread.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rewards.timeout import run_bounded

THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
HASH_LINE = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?")
THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
LIST_SEPARATOR = re.compile(r"\s*(?:,|;|\bor\b|\band\b|\n)\s*")
LAST_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
MAX_NUMBER_CHARS = 1000  # longer numbers are compared as text: no parser gets to spend time on them


def boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, nested braces handled."""
    out = []
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[match.end() : i - 1])
    return out


def final_answer(text: str, *, last_number_fallback: bool = False) -> str | None:
    """The completion's one final answer, or None when there is none or several that disagree.

    Sources, in order: ``<answer>`` blocks, ``\\boxed{}``, ``#### N`` lines (outside ``<think>``).
    Two ``<answer>`` blocks, or sources that give different values, count as no answer: a model
    must not be paid for listing candidates. The last-number fallback is off by default.
    """
    visible = THINK.sub(" ", text)
    blocks = ANSWER_BLOCK.findall(visible)
    if len(blocks) > 1:
        return None
    candidates = [*blocks, *boxed_contents(visible), *HASH_LINE.findall(visible)]
    if not candidates and last_number_fallback:
        numbers = LAST_NUMBER.findall(visible)
        candidates = numbers[-1:]
    if not candidates:
        return None
    keys = {canonical(c) for c in candidates}
    return candidates[0] if len(keys) == 1 else None


def strip_wrappers(answer: str) -> str:
    """Remove what does not change a value: a lone ``\\boxed{}``, ``$`` signs, ``\\text{}``, ``%``."""
    s = answer.strip()
    inner = boxed_contents(s)
    if len(inner) == 1 and s.startswith("\\boxed"):
        s = inner[0].strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\!", "").replace("\\,", "")
    return s.strip().rstrip(".").strip()


def as_number(answer: str) -> Fraction | None:
    """The exact value of a plain number (commas as thousands separators, e-notation, a/b), else None."""
    s = strip_wrappers(answer).replace(" ", "")
    if THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if len(s) > MAX_NUMBER_CHARS or not NUMBER.fullmatch(s):
        return None
    try:
        if "/" in s:
            num, den = s.split("/")
            return Fraction(Fraction(num), Fraction(den)) if Fraction(den) != 0 else None
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def canonical(answer: str) -> str:
    """A key under which equal plain numbers (and identical other answers) coincide."""
    value = as_number(answer)
    return f"#{value}" if value is not None else re.sub(r"\s+", "", strip_wrappers(answer))


def several_candidates(answer: str) -> bool:
    """True for "7 or 8", "1, 2, 3", "3; 4": a list of values is not one answer."""
    s = strip_wrappers(answer)
    if THOUSANDS.fullmatch(s.replace(" ", "")) or "\\" in s:
        return False
    parts = [p for p in LIST_SEPARATOR.split(s) if p]
    return sum(1 for p in parts if NUMBER.search(p)) > 1


def answers_equal(gold: str, predicted: str, *, timeout: float = 2.0) -> bool:
    """Mathematical equality of a gold answer and a predicted one, in bounded time."""
    if not predicted.strip() or several_candidates(predicted):
        return False
    g, p = as_number(gold), as_number(predicted)
    if g is not None and p is not None:
        return g == p
    if canonical(gold) == canonical(predicted):
        return True
    if len(predicted) > MAX_NUMBER_CHARS or len(gold) > MAX_NUMBER_CHARS:
        return False
    return bool(
        run_bounded(
            symbolic_equal, strip_wrappers(gold), strip_wrappers(predicted), timeout=timeout, default=False
        )
    )


def symbolic_equal(gold: str, predicted: str) -> bool:
    """math-verify's parse + verify with its own (signal-based) timeouts off: the caller bounds time."""
    from math_verify import parse, verify

    wrap = "${}$"
    gold_parsed = parse(wrap.format(gold), parsing_timeout=None)  # type: ignore[arg-type]
    pred_parsed = parse(wrap.format(predicted), parsing_timeout=None)  # type: ignore[arg-type]
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
