"""The reasoning task: two-step word problems answered in DeepSeek-R1's format.

"Ann has 7 pens. She buys 5 more, then gives 3 away. How many pens does Ann have now?" — the answer
is wanted as ``<think>...</think><answer>N</answer>``. The prompt is plain text (no chat template):
an instruction and two worked examples, then the question, so the model continues the pattern; a
completion ends at ``</answer>`` or when it starts a new question. Rewards, as in R1: ``math_accuracy``
(the number in ``<answer>`` equals the gold one; nothing is read from ``<think>``, several
disagreeing answers score 0) plus the format at weight 0.2, paid only with the right answer
(``strict_format_if_right``). Held-out measures: right (``math_accuracy``) and formatted
(``strict_format``). The naive variant (``demo --task reasoning --naive``) pays the format whether the
answer is right or not, as R1 did: on SmolLM2-135M it is gamed (README, *Reward hacking*).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from grpo_lite.tasks.task import Task

SPLIT_SEED = 3141
HELD_OUT = 60
TRAIN = 240
ONE_STEP = 120  # one-step problems for a curriculum (one_step_rows; not in the shipped split)
NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
PRONOUN = {"Ann": "She", "Cara": "She", "Fay": "She", "Hana": "She", "Jun": "She"}
ITEMS = ("pens", "apples", "stickers", "coins", "books", "marbles", "cards", "shells")
MORE = ("buys {n} more", "finds {n} more", "gets {n} more")
LESS = ("gives {n} away", "loses {n}", "sells {n}")
EXAMPLES = (
    "Solve each problem. Think inside <think> </think>, then give only the number inside <answer> </answer>.\n\n"
    "Question: Tom has 5 cups. He buys 2 more, then gives 4 away. How many cups does Tom have now?\n"
    "<think>5 + 2 = 7. 7 - 4 = 3.</think><answer>3</answer>\n\n"
    "Question: Mia has 9 coins. She loses 6, then finds 3 more. How many coins does Mia have now?\n"
    "<think>9 - 6 = 3. 3 + 3 = 6.</think><answer>6</answer>\n\n"
)


def problem(name: str, item: str, start: int, first: int, second: int) -> tuple[str, int]:
    """The question and its answer: ``start``, then ``first`` and ``second`` added (> 0) or taken
    away (< 0), in that order."""

    def phrase(n: int, salt: int) -> str:
        options = MORE if n > 0 else LESS
        return options[(start + salt) % len(options)].format(n=abs(n))

    pronoun = PRONOUN.get(name, "He")
    text = (
        f"{name} has {start} {item}. {pronoun} {phrase(first, 0)}, then {phrase(second, 1)}. "
        f"How many {item} does {name} have now?"
    )
    return text, start + first + second


def worked(start: int, *changes: int) -> str:
    """The solution in the worked examples' form: ``<think>5 + 2 = 7. 7 - 4 = 3.</think><answer>3</answer>``."""
    steps, count = [], start
    for n in changes:
        steps.append(f"{count} {'+' if n > 0 else '-'} {abs(n)} = {count + n}.")
        count += n
    return f"<think>{' '.join(steps)}</think><answer>{count}</answer>"


def one_step_problem(name: str, item: str, start: int, change: int) -> tuple[str, int]:
    """A one-step question ("Ann has 5 pens. She buys 2 more. How many ...?") and its answer."""
    options = MORE if change > 0 else LESS
    verb = options[start % len(options)].format(n=abs(change))
    pronoun = PRONOUN.get(name, "He")
    return (
        f"{name} has {start} {item}. {pronoun} {verb}. How many {item} does {name} have now?",
        start + change,
    )


def reasoning_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): plain-text prompts asking for the R1 format, the number in
    ``answer``, a worked solution in ``solution`` (the warm start's examples), the steps in
    ``difficulty``; every intermediate count stays >= 0; no question is in both. 240 two-step problems
    to train on, 60 held out."""
    rows = _two_step_rows()
    return rows[HELD_OUT:], rows[:HELD_OUT]


def one_step_rows(n: int = ONE_STEP) -> list[dict[str, Any]]:
    """``n`` one-step training problems ("Ann has 5 pens. She buys 2 more. ..."), none of them among
    the two-step ones: an easier rung (``difficulty`` 1) for a curriculum. Not in the shipped task: with
    the warm start they taught one-equation answers that GRPO then spread to the two-step problems
    (benchmarks/RESULTS.md, *Where the reward is sparse*)."""
    rng, seen = random.Random(SPLIT_SEED + 1), {r["prompt"] for r in _two_step_rows()}
    easy: list[dict[str, Any]] = []
    while len(easy) < n:
        start = rng.randint(2, 9)
        change = rng.choice([1, -1]) * rng.randint(1, 4)
        if start + change < 0:
            continue
        text, answer = one_step_problem(rng.choice(NAMES), rng.choice(ITEMS), start, change)
        row = {"prompt": f"{EXAMPLES}Question: {text}\n", "answer": str(answer), "difficulty": 1,
               "solution": worked(start, change)}  # fmt: skip
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            easy.append(row)
    return easy


def _two_step_rows() -> list[dict[str, Any]]:
    rng = random.Random(SPLIT_SEED)
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    while len(rows) < TRAIN + HELD_OUT:
        start = rng.randint(2, 6)
        first = rng.choice([1, -1]) * rng.randint(1, 3)
        second = rng.choice([1, -1]) * rng.randint(1, 3)
        if start + first < 0 or start + first + second < 0:
            continue
        text, answer = problem(rng.choice(NAMES), rng.choice(ITEMS), start, first, second)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"prompt": f"{EXAMPLES}Question: {text}\n", "answer": str(answer), "difficulty": 2,
                     "solution": worked(start, first, second)})  # fmt: skip
    return rows


# The rewards import what they use inside themselves: the dashboard's reward editor compiles an
# edited copy of their source on its own, so it must stand alone.
def math_accuracy(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any
) -> list[float]:
    """1.0 when the number in ``<answer>`` equals the gold one (``rewards.math_accuracy``)."""
    from rewards import math_accuracy as right

    return right(prompts, completions, answer)


def strict_format_if_right(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any
) -> list[float]:
    """1.0 for exactly ``<think>...</think><answer>N</answer>`` with the right N (``rewards.strict_format``
    with ``require_correct=True``): the format alone never pays."""
    from rewards import strict_format

    return strict_format(prompts, completions, require_correct=True, answer=answer)


def strict_format(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for exactly ``<think>...</think><answer>...</answer>`` and nothing else, right or not
    (``rewards.strict_format``): the held-out format measure, and the naive reward's format part."""
    from rewards import strict_format as exact_form

    return exact_form(prompts, completions)


TASK = Task(
    name="reasoning",
    summary="two-step word problems, answered as <think>...</think><answer>N</answer>",
    split=reasoning_split,
    rewards=(math_accuracy, strict_format_if_right),
    weights=(1.0, 0.2),
    measures={"accuracy": math_accuracy, "format": strict_format},
    settings={
        "max_new_tokens": 64,
        "stop_strings": ("</answer>", "\nQuestion"),
        "dynamic_sampling": True,
        "max_extra_rounds": 1,
        "warm_start": "solutions",
        "warm_start_steps": 12,
    },
    steps=30,
    naive=((math_accuracy, strict_format), (1.0, 0.2)),
    samples=(["<think>2 + 7 = 9</think><answer>9</answer>", "<answer>8</answer>"], {"answer": ["9", "9"]}),
)

__all__ = [
    "TASK",
    "math_accuracy",
    "one_step_rows",
    "reasoning_split",
    "strict_format",
    "strict_format_if_right",
]
