"""The judge: holds the only channel to the trainer, forks the solution process, then runs the tests
on genuine values and reports each that passes. It never runs model-written code."""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import importlib
import json
import os
from typing import Any

from solver import solution_process
from wire import MAX_MESSAGE, decode, encode

PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


class SolutionError(Exception):
    """An exception of a type that is not a builtin, raised by the solution."""


class Remote:
    """A function or object that lives in the solution process. Calls and attribute reads go there
    and come back as genuine values; the object itself equals nothing of the judge's and has no
    truth value, so it can never make an assert pass on its own."""

    __slots__ = ("_id", "_channel")
    _id: int
    _channel: Any

    def __init__(self, ident: int, channel: Any) -> None:
        object.__setattr__(self, "_id", ident)
        object.__setattr__(self, "_channel", channel)

    def _ask(self, op: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.ask(op, self._id, list(args), kwargs)

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self._ask("call", *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __getitem__(self, key: object) -> object:
        return self._ask("getitem", key)

    def __len__(self) -> int:
        n = self._ask("len")
        if type(n) is not int:
            raise TypeError("len() of an object of the solution is not an int")
        return n

    def __iter__(self) -> Any:
        return iter(self._ask("list"))

    def __contains__(self, item: object) -> bool:
        return self._ask("contains", item) is True

    def __eq__(self, other: object) -> bool:
        # Two objects of the solution compare as the solution says (nothing else can); an object of
        # the solution never equals a value of the test's.
        if isinstance(other, Remote) and other._channel is self._channel:
            return self._ask("eq", other._id) is True
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise TypeError("the truth of an object of the solution is not taken on its word")

    def __repr__(self) -> str:
        return f"<object {self._id} of the solution>"


class Channel:
    """The judge's end of the pipes to the solution process."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = os.fdopen(replies, "rb")
        self.dead = False

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.requests, view) :]

    def receive(self) -> dict:
        line = self.replies.readline(MAX_MESSAGE)
        if not line.endswith(b"\n"):
            self.dead = True
            raise RuntimeError("the solution process ended or sent an over-long reply")
        message = json.loads(line)
        if type(message) is not dict:
            raise ValueError("not a reply")
        return message

    def ask(self, op: str, ident: int, args: list, kwargs: dict) -> object:
        if self.dead:
            raise RuntimeError("the solution process has ended")

        def refuse(value: object) -> dict:
            if isinstance(value, Remote) and value._channel is self:
                return {"h": value._id}
            raise TypeError(f"cannot pass a {type(value).__name__} to the solution")

        request = {"op": op, "h": ident, "args": encode(args, refuse), "kwargs": encode(kwargs, refuse)}
        self.send((json.dumps(request, allow_nan=False) + "\n").encode())
        reply = self.receive()
        if "raise" in reply:
            name, message = reply["raise"]
            kind = getattr(builtins, str(name), None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = SolutionError
            raise kind(f"{name}: {message}" if kind is SolutionError else message)
        return decode(reply["ok"], lambda i: Remote(i, self))


def judge(results: int, limits: dict) -> None:
    """Fork the solution process, then read the tests, run them and report each that passes."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    if prctl is not None:
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # not traceable, memory and descriptors unreadable
    to_solution, from_judge = os.pipe()[::-1]  # (write end, read end)
    from_solution, to_judge = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (results, to_solution, from_solution):
            os.close(fd)
        solution_process(from_judge, to_judge, limits)
    os.close(from_judge)
    os.close(to_judge)
    with open("tests.json") as f:
        tests = json.load(f)
    os.unlink("tests.json")
    channel = Channel(to_solution, from_solution)
    channel.send(b"go\n")
    try:
        first = channel.receive()
        names = first.get("names")
        if type(names) is not dict:
            tests = []  # the code raised (or exited) before defining anything: every test fails
            names = {}
    except (RuntimeError, ValueError):
        tests, names = [], {}
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    for name, data in names.items():
        if type(name) is str and name.isidentifier() and not hasattr(builtins, name):
            with contextlib.suppress(
                ValueError, TypeError, RecursionError, ImportError
            ):  # not a value: left out
                if (
                    type(data) is dict and type(data.get("m")) is str
                ):  # `import math` in the code: the real math
                    namespace[name] = importlib.import_module(data["m"])
                else:
                    namespace[name] = decode(data, lambda i: Remote(i, channel))
    for i, test in enumerate(tests):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
        except BaseException:  # noqa: BLE001 - a failing test
            continue
        os.write(results, f"{i}\n".encode())
    os.write(results, b"done\n")


def run_without_namespaces(results: int, limits: dict) -> None:
    """Where no namespaces can be made: as root, at least no network and a uid of its own."""
    if os.geteuid() == 0:
        ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET
    uid = limits.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    judge(results, limits)
