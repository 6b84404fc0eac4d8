"""``code_unit_tests``: the share of a sample's asserts that the completion's code passes.

The code is the last fenced python block of the completion; the tests of the ``tests`` column run
against it in the sandbox of :mod:`rewards.sandbox`: namespaces of its own where Linux allows (no
network, no view of the host's processes or files), limits, and a judge in a separate process that
compares genuine values, so objects that lie about equality, shadowed builtins and forged results
earn nothing. ``limits=Limits(require_isolation=True)`` refuses to run code where no namespaces can
be made; ``print(rewards.sandbox.capabilities())`` says what is in force here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.sandbox import Limits, run_tests
from rewards.text import completion_text

FENCE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The last fenced code block (```python, ```py or a bare ```), or None."""
    blocks = FENCE.findall(text)
    return blocks[-1] if blocks else None


def _score(completion: Any, tests: Any, limits: Limits) -> float:
    code = extract_code(completion_text(completion))
    tests = [t for t in (tests or []) if isinstance(t, str) and t.strip()]
    if code is None or not tests:
        return 0.0
    result = run_tests(code, tests, limits)
    return result.passed / result.total


def code_unit_tests(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    tests: Sequence[Sequence[str]],
    *,
    workers: int = 4,
    limits: Limits | None = None,
    **_: Any,
) -> list[float]:
    """Fraction of the asserts in ``tests`` that pass; no code block or no asserts -> 0.0.
    Completions run in parallel, up to ``workers`` at a time."""
    limits = limits or Limits()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda ct: _score(ct[0], ct[1], limits), zip(completions, tests, strict=True)))
