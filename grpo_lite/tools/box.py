"""The tools a run offers: their schemas, and every call of a step run at once with a time limit.

A tool is a plain Python function with type hints and a docstring (transformers' ``get_json_schema``
turns it into the JSON schema the chat template shows the model), or ``"python"``, the built-in that
runs the model's code in ``rewards``' sandbox. A user's own function runs in this process, in a
thread, with a time limit: past it the call answers "timed out" and the step goes on (the thread is
left to finish on its own). Whatever goes wrong in a call (bad JSON, an unknown tool, wrong
arguments, an exception, a timeout) becomes the tool's answer to the model, marked failed.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from grpo_lite.tools.formats import ToolCall
from grpo_lite.tools.python import python, run_python
from rewards.sandbox import Limits

BUILTIN: dict[str, Callable[..., Any]] = {"python": python}


@dataclass
class ToolResult:
    """One call's answer as the model sees it, and what the metrics count."""

    name: str
    arguments: dict[str, Any]
    output: str
    failed: bool
    seconds: float


def bounded(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, its beginning and its end (where a traceback names the
    error), saying how much was cut in between."""
    if len(text) <= chars:
        return text
    head, tail = chars - chars // 2, chars // 2
    return f"{text[:head]}\n... [{len(text) - chars} characters cut] ...\n{text[len(text) - tail :]}"


class ToolBox:
    """Tools by name, their schemas, and ``run(calls)``: all calls in parallel, each bounded in time
    (``timeout`` seconds) and in what it returns (``output_chars`` characters)."""

    def __init__(
        self, tools: Sequence[Callable[..., Any] | str], *, timeout: float = 5.0, output_chars: int = 800,
        workers: int = 4,
    ) -> None:  # fmt: skip
        from transformers.utils import get_json_schema

        self.functions: dict[str, Callable[..., Any]] = {}
        for tool in tools:
            if isinstance(tool, str):
                if tool not in BUILTIN:
                    raise ValueError(f"unknown built-in tool {tool!r}; built-ins: {sorted(BUILTIN)}")
                tool = BUILTIN[tool]
            name = getattr(tool, "__name__", None)
            if not callable(tool) or not name:
                raise TypeError(f"a tool must be a named function or a built-in's name; got {tool!r}")
            if name in self.functions:
                raise ValueError(f"two tools are named {name!r}")
            self.functions[name] = tool
        self.schemas: list[dict[str, Any]] = []
        for name, fn in self.functions.items():
            try:
                self.schemas.append(get_json_schema(fn))
            except Exception as err:  # transformers' DocstringParsingException / TypeHintParsingException
                raise ValueError(
                    f"tool {name!r}: {err} (a tool needs type hints and a docstring with an Args: "
                    "section, as transformers' get_json_schema reads them)"
                ) from err
        self.timeout, self.output_chars, self.workers = timeout, output_chars, workers

    @property
    def names(self) -> list[str]:
        return list(self.functions)

    def run(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Every call at once (``workers`` at a time); results in the order of ``calls``."""
        if not calls:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(calls)))) as pool:
            return list(pool.map(self.call, calls))

    def call(self, call: ToolCall) -> ToolResult:
        """One call; never raises."""
        start = time.perf_counter()
        output, failed = self._answer(call)
        return ToolResult(call.name, call.arguments, bounded(output, self.output_chars), failed,
                          time.perf_counter() - start)  # fmt: skip

    def _answer(self, call: ToolCall) -> tuple[str, bool]:
        if call.error is not None:
            return f"Error: {call.error}", True
        fn = self.functions.get(call.name)
        if fn is None:
            return f"Error: no tool named {call.name!r}; tools: {', '.join(self.functions)}", True
        try:
            inspect.signature(fn).bind(**call.arguments)
        except TypeError as err:
            return f"Error: wrong arguments for {call.name!r}: {err}", True
        if fn is python:
            code = call.arguments["code"]
            if not isinstance(code, str):
                return "Error: wrong arguments for 'python': code must be a string", True
            limits = Limits(wall_seconds=self.timeout, cpu_seconds=max(1, int(self.timeout + 0.999)))
            result = run_python(code, limits)
            if result.timed_out:
                return result.output + f"\nError: timed out after {self.timeout:g} s", True
            return result.output, not result.ok
        return _with_time_limit(fn, call.arguments, self.timeout)


def _with_time_limit(fn: Callable[..., Any], arguments: dict[str, Any], timeout: float) -> tuple[str, bool]:
    """A user's tool in a thread of its own: its answer as text, or its exception; a hang costs
    ``timeout`` seconds (the thread is left behind, a daemon)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**arguments)
        except BaseException as err:  # noqa: BLE001 - the tool's failure is its answer
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name=f"tool-{getattr(fn, '__name__', '?')}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"Error: timed out after {timeout:g} s", True
    if "error" in box:
        err = box["error"]
        return f"Error: {type(err).__name__}: {err}", True
    value = box.get("value")
    if isinstance(value, str):
        return value, False
    try:
        return json.dumps(value), False
    except (TypeError, ValueError):
        return str(value), False
