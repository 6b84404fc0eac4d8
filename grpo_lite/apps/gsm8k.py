"""GSM8K (grade-school math): chat prompts asking for ``<think>...</think><answer>...</answer>``.

Online: ``datasets.load_dataset("openai/gsm8k", "main")``. Offline: a local .parquet/.jsonl file
with the same columns (``question``, ``answer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpo_lite.data import load_rows

SYSTEM_PROMPT = (
    "Solve the problem. Think step by step inside <think> </think>, then give only the final "
    "number inside <answer> </answer>."
)
COLUMNS = ("question", "answer")


def gold_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution, commas removed: ``"... #### 1,234"`` -> ``"1234"``."""
    if "####" not in solution:
        raise ValueError(f"a GSM8K answer must end with '#### <number>'; got {solution[-60:]!r}")
    return solution.split("####")[-1].strip().replace(",", "")


def to_prompt_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GSM8K rows -> ``{"prompt": chat messages, "answer": gold number, "question": text}``."""
    found = sorted(rows[0]) if rows else []
    missing = [c for c in COLUMNS if c not in found]
    if missing:
        raise ValueError(f"GSM8K data needs the columns {list(COLUMNS)}; found {found} (missing {missing})")
    return [
        {
            "prompt": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": r["question"]},
            ],
            "answer": gold_answer(r["answer"]),
            "question": r["question"],
        }
        for r in rows
    ]


def load_gsm8k(
    split: str = "train", *, path: str | Path | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """GSM8K as prompt rows, from a local file when ``path`` is given, else from the Hub."""
    if path is not None:
        rows = load_rows(path)
    else:
        import datasets

        try:
            rows = datasets.load_dataset("openai/gsm8k", "main", split=split).to_list()
        except Exception as err:  # offline, or the Hub is down: say what to do instead
            raise FileNotFoundError(
                f"could not load openai/gsm8k ({type(err).__name__}: {err}); without network, pass a "
                "local .parquet or .jsonl file with the columns question and answer"
            ) from err
    rows = rows[:limit] if limit else rows
    return to_prompt_rows(rows)
