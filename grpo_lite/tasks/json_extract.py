"""The JSON task: a sentence with a few facts -> one JSON object with given keys and types.

"Maria, 34, lives in Lyon." -> ``{"name": "Maria", "age": 34, "city": "Lyon"}``. The prompt names
the keys and their types; the sentence comes in one of several phrasings. Reward: ``json_fields``
(``rewards.json_fields``): 0.0 unless the completion is exactly one JSON object with exactly those
keys, else the share of fields right in value and type. Held-out accuracy: every field right.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from typing import Any

from grpo_lite.tasks.task import Task
from rewards.json_fields import json_exact

SPLIT_SEED = 1618
HELD_OUT = 60
TRAIN = 300
NAMES = (
    "Maria",
    "Tom",
    "Aisha",
    "Kenji",
    "Lena",
    "Omar",
    "Sofia",
    "Pedro",
    "Ingrid",
    "Ravi",
    "Chloe",
    "Yusuf",
)
CITIES = (
    "Lyon",
    "Osaka",
    "Lima",
    "Oslo",
    "Cairo",
    "Leeds",
    "Porto",
    "Quito",
    "Hanoi",
    "Perth",
    "Graz",
    "Turin",
)
PHRASES = (
    "{name}, {age}, lives in {city}.",
    "{name} is {age} years old and lives in {city}.",
    "{city} is home to {name}, who is {age}.",
    "At {age}, {name} moved to {city}.",
    "Living in {city}, {name} turned {age} this year.",
    "{name} ({age}) has lived in {city} for years.",
)
KEYS = '"name" (string), "age" (integer) and "city" (string)'


def prompt_text(sentence: str) -> str:
    return (
        f"Extract the facts as a JSON object with exactly the keys {KEYS}. Reply with the JSON only.\n"
        f"Sentence: {sentence}"
    )


def json_split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, held-out rows): chat prompts, the wanted object in ``expected`` (JSON text, so
    any dataset library stores it); no sentence is in both."""
    combos = list(itertools.product(NAMES, CITIES, range(len(PHRASES))))
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(combos)
    rows = []
    for name, city, phrase in combos[: TRAIN + HELD_OUT]:
        age = rng.randint(18, 79)
        sentence = PHRASES[phrase].format(name=name, age=age, city=city)
        expected = {"name": name, "age": age, "city": city}
        rows.append({"prompt": [{"role": "user", "content": prompt_text(sentence)}],
                     "expected": json.dumps(expected)})  # fmt: skip
    return rows[HELD_OUT:], rows[:HELD_OUT]


# The reward imports what it uses inside itself: the dashboard's reward editor compiles an edited
# copy of its source on its own, so it must stand alone.
def json_fields(
    prompts: Sequence[Any], completions: Sequence[Any], expected: Sequence[Any], **kwargs: Any
) -> list[float]:
    """0.0 unless the completion is one JSON object with exactly the keys; else the weighted share of
    fields right in value and type (``rewards.json_fields``). Edit the weights mid-run in the
    dashboard's reward editor, e.g. ``"age": 3.0`` to stress the number."""
    from rewards.json_fields import json_fields as fields_right

    key_weights = {"name": 1.0, "age": 1.0, "city": 1.0}
    return fields_right(prompts, completions, expected, key_weights=key_weights)


MARIA = json.dumps({"name": "Maria", "age": 34, "city": "Lyon"})

TASK = Task(
    name="json",
    summary="a sentence with facts -> a JSON object with given keys and types",
    split=json_split,
    rewards=(json_fields,),
    weights=(1.0,),
    measures={"accuracy": json_exact},
    settings={"max_new_tokens": 48},
    steps=40,
    samples=(
        [
            [{"role": "assistant", "content": MARIA}],
            [{"role": "assistant", "content": MARIA.replace("34", "43")}],
        ],
        {"expected": [MARIA, MARIA]},
    ),
)

__all__ = ["TASK", "json_fields", "json_split"]
