"""A test bench: run reward functions over hand-written examples and get a table back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rewards.combine import Combined, combine


def run_bench(
    reward_funcs: Sequence[Callable[..., Any]] | Combined, examples: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Score ``examples`` (dicts with ``prompt``, ``completion`` and any columns) with each function.

    Returns one dict per example: its prompt and completion, then one entry per function
    (``None`` where it does not apply or raised) and ``total`` (the weighted sum); a function that
    raised is reported under ``errors``.
    """
    combined = reward_funcs if isinstance(reward_funcs, Combined) else combine(*reward_funcs)
    if not examples:
        return []
    columns = sorted({k for e in examples for k in e} - {"prompt", "completion"})
    values: dict[str, Any] = {k: [e.get(k) for e in examples] for k in columns}
    scores = combined.score(
        [e.get("prompt", "") for e in examples], [e["completion"] for e in examples], **values
    )
    table = []
    for i, e in enumerate(examples):
        row: dict[str, Any] = {"prompt": e.get("prompt", ""), "completion": e["completion"]}
        row |= {name: values[i] for name, values in scores.per_function.items()}
        row["total"] = scores.total[i]
        if scores.errors:
            row["errors"] = {name: tb.strip().splitlines()[-1] for name, tb in scores.errors.items()}
        table.append(row)
    return table
