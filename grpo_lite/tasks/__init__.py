"""Tasks: what a demo trains SmolLM2-135M-Instruct on, one file each, all with the same surface.

A :class:`Task` is data: ``split()`` -> (train rows, held-out rows), the reward functions that train
(TRL's signature, weights beside them), the held-out measures (reward functions whose 1.0 means
"yes", greedy; ``accuracy`` first), and the GRPOConfig settings it trains with. ``demo --task NAME``
and the ``05_tasks`` notebook read :data:`TASKS`; a user's own task has the same shape (README).

    arithmetic   one-digit sums and products           last_number_accuracy
    code         a Python function, hidden unit tests   code_unit_tests (sandbox); naive: code_compiles
    reasoning    two-step word problems, R1's format    math_accuracy + 0.2 format if right; naive: ungated
    json         a sentence -> a JSON object            json_fields
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpo_lite.tasks import arithmetic, code, json_extract, reasoning
from rewards.json_fields import json_exact

Rows = list[dict[str, Any]]
Reward = Callable[..., Any]


def _all_pass(prompts: Any, completions: Any, **columns: Any) -> list[float]:
    """Held-out: 1.0 when every hidden test passes."""
    return [1.0 if s == 1.0 else 0.0 for s in code.code_unit_tests(prompts, completions, **columns)]


@dataclass(frozen=True)
class Task:
    """One task: its data, its rewards, how held-out answers are judged, and its training settings.

    ``naive`` (optional): reward functions and weights that pay a proxy instead of the task, trained
    on by ``demo --naive`` to show reward hacking (code: "defines f", the unit tests logged at weight 0;
    reasoning: the format paid whether right or not).
    """

    name: str
    summary: str
    split: Callable[[], tuple[Rows, Rows]]
    rewards: tuple[Reward, ...]
    weights: tuple[float, ...]
    measures: dict[str, Reward]  # held-out: name -> reward whose 1.0 counts; "accuracy" first
    settings: dict[str, Any] = field(default_factory=dict)  # GRPOConfig fields
    steps: int = 40
    naive: tuple[tuple[Reward, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.weights):
            raise ValueError(
                f"task {self.name!r}: {len(self.weights)} weights for {len(self.rewards)} rewards"
            )
        if next(iter(self.measures), None) != "accuracy":
            raise ValueError(f"task {self.name!r}: the first held-out measure must be 'accuracy'")

    def examples(self, n: int = 3) -> list[str]:
        """The first ``n`` held-out prompts' last message, as the model reads them."""
        return [_text(row["prompt"]) for row in self.split()[1][:n]]


def _text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "arithmetic",
            "one-digit sums and products: 'What is 7 + 8?'",
            arithmetic.one_digit_split,
            (arithmetic.last_number_accuracy,),
            (1.0,),
            {"accuracy": arithmetic.last_number_accuracy},
            settings={"max_new_tokens": 16},
            steps=40,
        ),
        Task(
            "code",
            "a Python function f(x), graded by hidden unit tests in the sandbox",
            code.code_split,
            (code.code_unit_tests,),
            (1.0,),
            {"accuracy": _all_pass, "defines_f": code.code_compiles},
            settings={"max_new_tokens": 64, "stop_strings": ("```\n",)},
            steps=25,
            naive=((code.code_compiles, code.code_unit_tests), (1.0, 0.0)),
        ),
        Task(
            "reasoning",
            "two-step word problems, answered as <think>...</think><answer>N</answer>",
            reasoning.reasoning_split,
            (reasoning.math_accuracy, reasoning.strict_format_if_right),
            (1.0, 0.2),
            {"accuracy": reasoning.math_accuracy, "format": reasoning.strict_format},
            settings={
                "max_new_tokens": 64,
                "stop_strings": ("</answer>", "\nQuestion"),
                "dynamic_sampling": True,
                "max_extra_rounds": 1,
                "warm_start": "solutions",
                "warm_start_steps": 12,
            },
            steps=30,
            naive=((reasoning.math_accuracy, reasoning.strict_format), (1.0, 0.2)),
        ),
        Task(
            "json",
            "a sentence with facts -> a JSON object with given keys and types",
            json_extract.json_split,
            (json_extract.json_fields,),
            (1.0,),
            {"accuracy": json_exact},
            settings={"max_new_tokens": 48},
            steps=40,
        ),
    )  # fmt: skip
}


def get_task(name: str) -> Task:
    """The task named ``name``; an unknown name lists the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]
