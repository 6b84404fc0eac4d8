"""``json_fields``: structured output — the completion is one JSON object with exactly the wanted keys,
and each field's value is the right one, of the right type.

The ``expected`` column holds, per completion, the wanted object (a dict, or its JSON text). A
completion scores the share of fields whose value equals the expected one *and* has its JSON type
(``34`` is not ``"34"``, ``true`` is not ``1``); it scores 0.0 when it is not exactly one JSON object:
text before or after it, a second object, invalid JSON, a repeated key, a missing or an extra key.
One fenced block (```` ```json ... ``` ````) that is the whole completion is read as its content, since
chat models often fence JSON. Strings compare after stripping surrounding whitespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from rewards.text import completion_text

FENCED = re.compile(r"\s*```(?:json)?[ \t]*\n(.*?)\n?```\s*", re.DOTALL)


class _RepeatedKey(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _RepeatedKey("a key appears twice")
    return dict(pairs)


def parse_object(text: str) -> dict[str, Any] | None:
    """The one JSON object ``text`` is (or the one fenced block it is), else None."""
    fenced = FENCED.fullmatch(text)
    body = (fenced.group(1) if fenced else text).strip()
    try:
        value = json.loads(body, object_pairs_hook=_no_repeats)
    except ValueError:  # invalid JSON, trailing text, a repeated key
        return None
    return value if isinstance(value, dict) else None


def _same(got: Any, want: Any) -> bool:
    if type(got) is not type(want):  # bool is not int, int is not float: the schema's type counts
        return isinstance(want, float) and type(got) is int and float(got) == want
    if isinstance(want, str):
        return got.strip() == want.strip()
    return bool(got == want)


def field_score(text: str, expected: dict[str, Any], key_weights: dict[str, float] | None = None) -> float:
    """Share of ``expected``'s fields right in ``text``, each counted with its weight in
    ``key_weights`` (1.0 where not given); 0.0 unless ``text`` is one object with exactly its keys."""
    got = parse_object(text)
    if got is None or set(got) != set(expected) or not expected:
        return 0.0
    weight = {k: (key_weights or {}).get(k, 1.0) for k in expected}
    total = sum(weight.values())
    return sum(weight[k] for k, v in expected.items() if _same(got[k], v)) / total if total > 0 else 0.0


def json_fields(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    expected: Sequence[Any],
    *,
    key_weights: dict[str, float] | None = None,
    **_: Any,
) -> list[float]:
    """Per completion, :func:`field_score` against its ``expected`` object (a dict or JSON text);
    ``key_weights``: how much each key counts (1.0 each by default; must be >= 0)."""
    bad = {k: w for k, w in (key_weights or {}).items() if not (isinstance(w, (int, float)) and w >= 0)}
    if bad:
        raise ValueError(f"json_fields: key_weights must be numbers >= 0; got {bad}")
    out = []
    for completion, want in zip(completions, expected, strict=True):
        want = json.loads(want) if isinstance(want, str) else want
        if not isinstance(want, dict):
            raise ValueError(
                f"json_fields: the 'expected' column must hold objects; got {type(want).__name__}"
            )
        out.append(field_score(completion_text(completion), want, key_weights))
    return out


def json_exact(
    prompts: Sequence[Any], completions: Sequence[Any], expected: Sequence[Any], **_: Any
) -> list[float]:
    """1.0 when every field is right (:func:`json_fields` = 1.0), else 0.0."""
    return [1.0 if s == 1.0 else 0.0 for s in json_fields(prompts, completions, expected)]
