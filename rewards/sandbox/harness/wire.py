"""The wire format between the judge and the solution process: values as tagged JSON built only from
exact builtin types; anything else stays where it was made, as a handle (see main.py)."""

from __future__ import annotations

import math
from typing import Any

MAX_MESSAGE = 8 << 20  # bytes of one reply the judge reads
MAX_DEPTH = 64  # nesting of one value


def encode(value: Any, handle: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data of exact builtin types; anything else through ``handle(value)``."""
    kind = type(value)
    if depth > MAX_DEPTH:
        return handle(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"f": repr(value)}
    if kind is list:
        return [encode(v, handle, depth + 1) for v in value]
    if kind is tuple:
        return {"t": [encode(v, handle, depth + 1) for v in value]}
    if kind is dict:
        pairs = [[encode(k, handle, depth + 1), encode(v, handle, depth + 1)] for k, v in value.items()]
        return {"d": pairs}
    if kind is set or kind is frozenset:
        return {"s" if kind is set else "fs": [encode(v, handle, depth + 1) for v in value]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [encode(value.real, handle), encode(value.imag, handle)]}
    return handle(value)


def decode(data: Any, resolve: Any, depth: int = 0) -> Any:
    """The genuine value ``data`` (from :func:`encode`) stands for; a handle through ``resolve(int)``.
    Anything not made by :func:`encode` raises ValueError."""
    kind = type(data)
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    if data is None or kind in (bool, int, str) or (kind is float and math.isfinite(data)):
        return data
    if kind is list:
        return [decode(v, resolve, depth + 1) for v in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "h" and type(body) is int:
            return resolve(body)
        if tag == "f" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is list:
            items = [decode(v, resolve, depth + 1) for v in body]
            if tag == "t":
                return tuple(items)
            if tag == "s":
                return set(items)
            if tag == "fs":
                return frozenset(items)
            if tag == "c" and len(items) == 2 and all(type(x) in (int, float) for x in items):
                return complex(items[0], items[1])
            if tag == "d" and all(type(p) is list and len(p) == 2 for p in items):
                return {k: v for k, v in items}
    raise ValueError(f"not a value: {str(data)[:80]}")
