"""The solution process: forked from the judge before the tests are read, it runs the model-written
code under the run's per-process limits and answers the judge's requests with plain data."""

from __future__ import annotations

import builtins
import json
import os
import resource
import signal
from types import ModuleType
from typing import Any

from wire import decode, encode

MAX_OPEN_FILES = 64  # the code's open files; each memory file is bounded by the output limit (RLIMIT_FSIZE)


def solution_process(requests: int, replies: int, limits: dict) -> None:
    """Wait for the judge's go, confine, run the code, then answer requests until the pipe closes."""
    reader = os.fdopen(requests, "rb")
    if reader.readline() != b"go\n":
        os._exit(0)
    _set_limits(limits)
    handles: list[object] = []

    def handle(value: object) -> dict:
        handles.append(value)
        return {"h": len(handles) - 1}

    def send(message: dict) -> None:
        data = (json.dumps(message, allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(replies, view) :]

    def answer(value: object) -> dict:
        try:
            return {"ok": encode(value, handle)}
        except (ValueError, RecursionError):  # an int too long to print, a cycle: an opaque handle
            return {"ok": handle(value)}

    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    try:
        with open("solution.py") as f:
            source = f.read()
        exec(compile(source, "solution.py", "exec"), namespace)
    except BaseException as error:  # noqa: BLE001 - the code failed: every test fails
        send({"error": type(error).__name__})
        os._exit(0)
    names = {k: v for k, v in namespace.items() if not k.startswith("__")}
    # a module the code imported is named, and the judge imports its own copy
    send(
        {
            "names": {
                k: {"m": v.__name__} if type(v) is ModuleType else answer(v)["ok"] for k, v in names.items()
            }
        }
    )
    for line in reader:
        try:
            request = json.loads(line)
            result = _perform(request, handles)
            reply = answer(result)
        except BaseException as error:  # noqa: BLE001 - reported to the judge, which raises it in the test
            if isinstance(error, SystemExit):
                os._exit(0)
            reply = {"raise": [type(error).__name__, str(error)[:200]]}
        send(reply)
    os._exit(0)


def _perform(request: dict, handles: list[Any]) -> Any:
    """What one of the judge's requests asks of a handle: call it, read an attribute or item, ..."""
    target: Any = handles[request["h"]]
    op = request["op"]
    args: Any = decode(request.get("args", []), handles.__getitem__)
    if op == "call":
        kwargs: Any = decode(request.get("kwargs", {"d": []}), handles.__getitem__)
        return target(*args, **kwargs)
    elif op == "getattr":
        return getattr(target, args[0])
    elif op == "getitem":
        return target[args[0]]
    elif op == "len":
        return len(target)
    elif op == "list":
        return list(target)
    elif op == "contains":
        return args[0] in target
    elif op == "eq":
        return target == handles[args[0]]
    else:
        raise ValueError(op)


def _set_limits(limits: dict) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory"], limits["memory"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["output"], limits["output"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES)
    )  # x RLIMIT_FSIZE bounds memfds
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long output fails the write, not the run
