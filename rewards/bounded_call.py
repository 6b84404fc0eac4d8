"""Calling one reward function with a time limit from the trainer's own thread: the call runs in a
daemon thread, and past the limit it is stopped (Python code) or left blocked (a call in C), named by
the line it was running (:func:`call_bounded`)."""

from __future__ import annotations

import ctypes
import linecache
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class RewardTimeout(TimeoutError):
    """A reward function that did not return within its time limit."""


_running: dict[int, tuple[threading.Thread, float]] = {}  # id(fn) -> its abandoned call, when started


def call_bounded(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    time_limit: float,
    *,
    name: str,
    source: str = "",
    stop: Callable[[], bool] | None = None,
) -> Any:
    """``fn(**kwargs)`` in a daemon thread, waited for at most ``time_limit`` seconds (and no longer
    once ``stop()`` says so). Past the limit it raises :class:`RewardTimeout` naming the function and
    the line it was running, and raises the same exception inside the abandoned call
    (``PyThreadState_SetAsyncExc``): Python code stops at its next bytecode — an infinite loop left
    spinning would slow training several-fold (7x for torch matmuls on 2 cores, measured) — while a
    call blocked in C (a socket read, a lock) stays blocked, using no CPU, until it returns. While a
    call is still alive the function is not called again (later batches get :class:`RewardTimeout`
    at once), so at most one abandoned call per function exists."""
    previous = _running.get(id(fn))
    if previous is not None and previous[0].is_alive():
        raise RewardTimeout(
            f"reward {name!r} is still running its call from {time.monotonic() - previous[1]:.0f} s ago"
        )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name=f"reward {name}", daemon=True)
    started = time.monotonic()
    thread.start()
    deadline = started + time_limit
    while thread.is_alive() and time.monotonic() < deadline and not (stop is not None and stop()):
        thread.join(min(0.05, max(deadline - time.monotonic(), 0)))
    if thread.is_alive():
        where = _line_running(thread, fn, source)
        # Raise RewardTimeout inside the call: a Python loop stops at its next bytecode; a call blocked
        # in C (a socket, a lock) stays blocked, without using the CPU, and raises when it returns.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident or 0), ctypes.py_object(RewardTimeout)
        )
        thread.join(0.1)
        if thread.is_alive():
            _running[id(fn)] = (thread, started)
        raise RewardTimeout(
            f"reward {name!r} did not return within {time_limit:g} s{where}; "
            + ("its call is blocked and left to finish" if thread.is_alive() else "its call was stopped")
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def _line_running(thread: threading.Thread, fn: Callable[..., Any], source: str) -> str:
    """`` (at line N: `code`)`` for the innermost frame of ``fn``'s own code in ``thread``, if any."""
    frame = sys._current_frames().get(thread.ident or -1)
    filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
    while frame is not None and frame.f_code.co_filename != filename:
        frame = frame.f_back
    if frame is None:
        return ""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    if not line and source:  # compiled from a string (the editor): the source is what it ran
        lines = source.splitlines()
        line = lines[frame.f_lineno - 1].strip() if 0 < frame.f_lineno <= len(lines) else ""
    return f" (at line {frame.f_lineno}: `{line}`)" if line else f" (at line {frame.f_lineno})"
