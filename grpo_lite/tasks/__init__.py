"""Tasks: what a demo trains SmolLM2-135M-Instruct on, one file each, all with the same surface.

Each ``tasks/NAME.py`` ends with ``TASK = Task(...)`` (``task.py``): its data (``split()`` -> train
rows, held-out rows), the reward functions that train it (TRL's signature, weights beside them), the
held-out measures (``accuracy`` first), the GRPOConfig settings it trains with and hand-made
completions for its tests. They are found here, by module: a copy of a task file with its name
changed is a new task for ``demo --task``, the ``05_tasks`` notebook and the tests, nothing else
touched. A user's own task has the same shape (docs/tasks.md).

    arithmetic   one-digit sums and products           last_number_accuracy
    code         a Python function, hidden unit tests   code_unit_tests (sandbox); naive: code_compiles
    json         a sentence -> a JSON object            json_fields
    reasoning    two-step word problems, R1's format    math_accuracy + 0.2 format if right; naive: ungated
"""

from __future__ import annotations

import importlib
import pkgutil

from grpo_lite.tasks.task import Task


def find_tasks() -> dict[str, Task]:
    """Every ``TASK`` declared by a module of this package, by name (sorted)."""
    found: dict[str, Task] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "task" or info.name.startswith("_"):
            continue
        task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
        if isinstance(task, Task):
            if task.name in found:
                raise ValueError(f"two task files declare a task named {task.name!r}; rename one")
            found[task.name] = task
    return dict(sorted(found.items()))


TASKS: dict[str, Task] = find_tasks()


def get_task(name: str) -> Task:
    """The task named ``name``; an unknown name lists the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "find_tasks", "get_task"]
