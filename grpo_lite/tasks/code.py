"""The code task: "Write a Python function ``f(x)`` that ...", graded by hidden unit tests in the sandbox.

Small, checkable functions in four families — arithmetic on an integer, string slicing, sums and
counts over a list, conditions — each with constants, so there are a few hundred distinct problems.
Every problem carries a reference implementation; its hidden tests (``assert f(...) == ...``, four
inputs per problem) are computed from it and live in the ``tests`` column, which the prompt never
shows and the model-written code cannot read (the sandbox's judge holds them; ``rewards.code``).

Rewards: ``code_unit_tests`` (the share of hidden tests passed; 0.0 for no code block, code that does
not parse, does not define ``f``, times out, or tampers with the harness). Held-out accuracy: every
test passes, greedy. ``code_compiles`` is the *naive* reward, kept to show reward hacking: it pays
any code block that parses and defines ``f``, whether ``f`` is right or not.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from grpo_lite.tasks.task import Task

SPLIT_SEED = 2718
HELD_OUT = 60
INTS = (0, 3, -4, 11)
WORDS = ("python", "banana", "hi", "grpo lite")
LISTS = ((1, 2, 3), (5, -1, 4, 0, 8), (7,), (2, 2, 9, 10))

Family = tuple[str, str, Callable[[Any], Any], tuple[Any, ...]]  # (text, kind, reference, inputs)


Template = tuple[
    str, Callable[[Any, Any], Any], str, tuple[Any, ...]
]  # (text with {k}, f(x, k), kind, inputs)
# Blocks of templates that share their constants k; a block's problems go k by k.
BLOCKS: list[tuple[Sequence[Any], list[Template]]] = [
    (range(2, 13), [
        ("returns x multiplied by {k}", lambda x, k: x * k, "an integer", INTS),
        ("returns x plus {k}", lambda x, k: x + k, "an integer", INTS),
        ("returns x minus {k}", lambda x, k: x - k, "an integer", INTS),
        ("returns {k} times x plus 1", lambda x, k: k * x + 1, "an integer", INTS),
        ("returns the square of x plus {k}", lambda x, k: x * x + k, "an integer", INTS),
        ("returns the remainder of x divided by {k}", lambda x, k: x % k, "an integer", INTS),
        ("returns True if x is greater than {k}, otherwise False", lambda x, k: x > k, "an integer", INTS),
        ("returns 'big' if x is greater than {k}, otherwise 'small'", lambda x, k: "big" if x > k else "small",
         "an integer", INTS),
        ("returns the absolute value of x minus {k}", lambda x, k: abs(x - k), "an integer", INTS),
    ]),
    (range(1, 5), [
        ("returns the first {k} characters of the string x", lambda x, k: x[:k], "a string", WORDS),
        ("returns the last {k} characters of the string x", lambda x, k: x[-k:], "a string", WORDS),
        ("returns the string x repeated {k_plus_1} times", lambda x, k: x * (k + 1), "a string", WORDS),
        ("returns the string x without its first {k} characters", lambda x, k: x[k:], "a string", WORDS),
    ]),
    ("aeino", [
        ("returns how many times the letter '{k}' appears in the string x", lambda x, k: x.count(k), "a string", WORDS),
    ]),
    ([0], [
        ("returns the string x reversed", lambda x, k: x[::-1], "a string", WORDS),
        ("returns the string x in upper case", lambda x, k: x.upper(), "a string", WORDS),
        ("returns the length of the string x", lambda x, k: len(x), "a string", WORDS),
        ("returns the sum of the numbers in the list x", lambda x, k: sum(x), "a list of integers", LISTS),
        ("returns the largest number in the list x", lambda x, k: max(x), "a list of integers", LISTS),
        ("returns the smallest number in the list x", lambda x, k: min(x), "a list of integers", LISTS),
        ("returns the number of elements in the list x", lambda x, k: len(x), "a list of integers", LISTS),
    ]),
    (range(2, 10), [
        ("returns the sum of the numbers in the list x plus {k}", lambda x, k: sum(x) + k, "a list of integers", LISTS),
        ("returns how many numbers in the list x are greater than {k}", lambda x, k: sum(1 for v in x if v > k),
         "a list of integers", LISTS),
        ("returns a list of the numbers in x, each multiplied by {k}", lambda x, k: [v * k for v in x],
         "a list of integers", LISTS),
    ]),
]  # fmt: skip


def _families() -> list[Family]:
    """Every problem: its description (after "that"), the argument's kind, the reference, the inputs."""
    return [
        (
            text.format(k=k, k_plus_1=k + 1 if isinstance(k, int) else k),
            kind,
            functools.partial(_apply, fn, k),
            inputs,
        )
        for constants, templates in BLOCKS
        for k in constants
        for text, fn, kind, inputs in templates
    ]


def _apply(fn: Callable[[Any, Any], Any], k: Any, x: Any) -> Any:
    return fn(x, k)


EXAMPLE = "Example, for x plus 1:\n```python\ndef f(x):\n    return x + 1\n```\n"


def prompt_text(description: str, kind: str) -> str:
    """The problem, then one worked example of the answer's form (no test is shown)."""
    return f"Write a Python function f(x) that {description}. x is {kind}. Code only.\n{EXAMPLE}"


def hidden_tests(reference: Callable[[Any], Any], inputs: Sequence[Any]) -> list[str]:
    """``assert f(x) == expected`` for each input, the expected value computed by the reference."""
    return [f"assert f({_arg(x)}) == {reference(_arg_value(x))!r}" for x in inputs]


def _arg(x: Any) -> str:
    return repr(list(x)) if isinstance(x, tuple) else repr(x)


def _arg_value(x: Any) -> Any:
    return list(x) if isinstance(x, tuple) else x


def code_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): a chat prompt per problem, its hidden asserts in ``tests``; the
    last ``HELD_OUT`` problems of a fixed shuffle are held out (no prompt in both)."""
    problems = _families()
    random.Random(SPLIT_SEED).shuffle(problems)
    rows = [
        {"prompt": [{"role": "user", "content": prompt_text(text, kind)}], "tests": hidden_tests(ref, inputs)}
        for text, kind, ref, inputs in problems
    ]
    return rows[HELD_OUT:], rows[:HELD_OUT]


# The rewards import what they use inside themselves: the dashboard's reward editor compiles an
# edited copy of their source on its own, so it must stand alone.
def code_unit_tests(
    prompts: Sequence[Any], completions: Sequence[Any], tests: Sequence[Any], **kwargs: Any
) -> list[float]:
    """The share of the hidden tests passed, the code run in the sandbox (``rewards.code_unit_tests``)."""
    from rewards import code_unit_tests as share_passed

    return share_passed(prompts, completions, tests)


def code_compiles(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """The NAIVE reward (a lesson, never a choice): 1.0 when the last code block parses and defines
    ``f`` — nothing checks what ``f`` returns, so a model learns to write any ``f`` at all."""
    import ast

    from rewards import completion_text, extract_code

    def defines_f(code: str) -> bool:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            return False
        return any(isinstance(node, ast.FunctionDef) and node.name == "f" for node in tree.body)

    codes = [extract_code(completion_text(c)) for c in completions]
    return [1.0 if code is not None and defines_f(code) else 0.0 for code in codes]


def all_tests_pass(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
    """Held-out: 1.0 when every hidden test passes."""
    return [1.0 if s == 1.0 else 0.0 for s in code_unit_tests(prompts, completions, **columns)]


def _fenced(code: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": f"```python\n{code}\n```"}]


TIMES_3 = ["assert f(0) == 0", "assert f(3) == 9", "assert f(-4) == -12", "assert f(11) == 33"]

TASK = Task(
    name="code",
    summary="a Python function f(x), graded by hidden unit tests in the sandbox",
    split=code_split,
    rewards=(code_unit_tests,),
    weights=(1.0,),
    measures={"accuracy": all_tests_pass, "defines_f": code_compiles},
    settings={"max_new_tokens": 64, "stop_strings": ("```\n",)},
    steps=25,
    naive=((code_compiles, code_unit_tests), (1.0, 0.0)),
    samples=(
        [_fenced("def f(x):\n    return x * 3"), _fenced("def f(x):\n    return x")],
        {"tests": [TIMES_3] * 2},
    ),
)

__all__ = ["TASK", "all_tests_pass", "code_compiles", "code_split", "code_unit_tests", "hidden_tests"]
