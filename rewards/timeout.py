"""Calling a pure function with a hard time limit, from any thread.

math-verify bounds its own time with ``signal.alarm``, which only works in the main thread; rewards
also run in a notebook's training thread or a worker pool. So slow-path calls go to one helper
process (``python -m rewards.timeout``) over a pipe, one JSON line each way; a call that exceeds
its limit kills the helper (a new one starts at the next call) and returns the default. A plain
subprocess rather than multiprocessing: spawn would re-import the user's unguarded script.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_worker: subprocess.Popen[str] | None = None


STARTUP_SECONDS = 60.0  # importing sympy/math-verify in the helper, once per helper


def _start() -> subprocess.Popen[str] | None:
    """A helper that has imported math-verify and said so; None if it did not come up."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewards.timeout"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_SECONDS)
    if not ready or not proc.stdout.readline().strip():
        proc.kill()
        proc.wait()
        return None
    return proc


def _kill() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker.wait()
        _worker = None


def run_bounded(fn: Callable[..., Any], *args: Any, timeout: float, default: Any) -> Any:
    """``fn(*args)`` in the helper process; ``default`` if it takes longer than ``timeout`` seconds
    or raises. ``fn`` must be a module-level function and its arguments and result JSON values."""
    global _worker
    request = json.dumps({"fn": f"{fn.__module__}:{fn.__qualname__}", "args": list(args)}) + "\n"
    with _lock:
        if _worker is None or _worker.poll() is not None:
            _worker = _start()
            if _worker is None:
                return default
        assert _worker.stdin is not None and _worker.stdout is not None
        try:
            _worker.stdin.write(request)
            _worker.stdin.flush()
        except BrokenPipeError:
            _kill()
            return default
        ready, _, _ = select.select([_worker.stdout], [], [], timeout)
        if not ready:
            _kill()  # the only way to stop a runaway sympy call
            return default
        line = _worker.stdout.readline()
    if not line:
        _kill()
        return default
    reply = json.loads(line)
    return reply["result"] if reply.get("ok") else default


def _serve() -> None:
    import math_verify  # noqa: F401  (imported before saying ready, so calls are timed fairly)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        module, name = request["fn"].split(":")
        try:
            result = getattr(importlib.import_module(module), name)(*request["args"])
            reply = {"ok": True, "result": result}
        except Exception as err:  # reported as a failed call; the caller uses its default
            reply = {"ok": False, "error": repr(err)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
