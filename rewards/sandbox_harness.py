"""The program that runs inside the code sandbox (standard library only; copied into each run's directory).

It is two processes that share nothing but a pair of pipes:

- the **judge** (the process this program starts as) reads the tests, holds the only channel to the
  trainer and runs the tests. It never runs model-written code.
- the **solution** process is forked from the judge *before* the tests are read, so no copy of
  them is in its memory, and the tests file is deleted before the solution's code starts. It runs
  the model-written code, then answers the judge's requests ("call ``add`` with ``(1, 2)``") with
  plain data.

Values cross the pipes as tagged JSON built only from exact builtin types (``None``, ``bool``,
``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``). Anything else the solution returns — a subclass of ``int`` or ``str``, an object
whose ``__eq__`` always says yes — stays in the solution process and reaches the judge as an opaque
handle that equals nothing but itself and has no truth value. The judge's own ``==``, ``sorted``,
``len`` … run on genuine values in a process the solution cannot reach (it is not dumpable, so it
cannot be traced or have its memory or descriptors read), so a test passes only when the values
really are what the test expects, and printing markers, exiting early, rebinding the tests' names
or builtins, or introspecting frames changes nothing but the solution's own process.

With ``--confine SPEC`` it first builds the namespaces itself (user, mount, PID, network, IPC, UTS;
a read-only view of the interpreter and ``/usr``, a private ``/tmp``, a fresh ``/proc``) when
bubblewrap is not installed, then drops every capability and goes on as the judge.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import importlib
import json
import math
import os
import resource
import signal
import sys
from types import ModuleType
from typing import Any

MAX_MESSAGE = 8 << 20  # bytes of one reply the judge reads
MAX_DEPTH = 64  # nesting of one value
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38


# ---------------------------------------------------------------------------------------------------
# values as plain data: both processes encode and decode with these, each resolving its own handles
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


# ---------------------------------------------------------------------------------------------------
# the solution process
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
            target: Any = handles[request["h"]]
            op = request["op"]
            args: Any = decode(request.get("args", []), handles.__getitem__)
            if op == "call":
                kwargs: Any = decode(request.get("kwargs", {"d": []}), handles.__getitem__)
                result = target(*args, **kwargs)
            elif op == "getattr":
                result = getattr(target, args[0])
            elif op == "getitem":
                result = target[args[0]]
            elif op == "len":
                result = len(target)
            elif op == "list":
                result = list(target)
            elif op == "contains":
                result = args[0] in target
            elif op == "eq":
                result = target == handles[args[0]]
            else:
                raise ValueError(op)
            reply = answer(result)
        except BaseException as error:  # noqa: BLE001 - reported to the judge, which raises it in the test
            if isinstance(error, SystemExit):
                os._exit(0)
            reply = {"raise": [type(error).__name__, str(error)[:200]]}
        send(reply)
    os._exit(0)


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


# ---------------------------------------------------------------------------------------------------
# the judge
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


# ---------------------------------------------------------------------------------------------------
# namespaces without bubblewrap
MAX_OPEN_FILES = 64  # the code's open files; each memory file is bounded by the output limit (RLIMIT_FSIZE)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH, SYS_PIVOT_ROOT = 2, 155
# statvfs flag -> mount flag, for the flags a bind mount must keep when it is remounted read-only
ST_FLAGS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: 1024, 2048: 2048, 4096: 1 << 21}


def confine(spec: dict) -> list[str]:
    """User, mount, PID, network, IPC and UTS namespaces; a read-only root of its own; then, as pid 1
    of the new PID namespace with every capability dropped, the judge's arguments."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(
        source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
    ) -> None:
        enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
        check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")

    uid, gid = os.getuid(), os.getgid()
    check(
        libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS),
        "unshare",
    )
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{spec['inner']} {uid} 1"),
        ("gid_map", f"{spec['inner']} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    pid = os.fork()
    if pid:  # outside the new PID namespace: wait for its pid 1, the judge
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = spec["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in spec["read_only"]:
        inside = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            os.symlink(os.readlink(path), inside)
            continue
        if os.path.isdir(path):
            os.makedirs(inside, exist_ok=True)
        elif os.path.exists(path):
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            open(inside, "w").close()
        else:
            continue
        mount(path, inside, None, MS_BIND | MS_REC)
        locked = sum(flag for bit, flag in ST_FLAGS.items() if os.statvfs(path).f_flag & bit)
        mount(None, inside, None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)
    os.makedirs(root + "/dev")
    for device in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{device}", "w").close()
        mount(f"/dev/{device}", f"{root}/dev/{device}", None, MS_BIND)
    for path in ("/tmp", "/work", "/proc"):
        os.makedirs(root + path)
    size = f"size={int(spec['disk'])}"  # every writable place a tmpfs of the run's disk budget
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    mount("tmpfs", root + "/work", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=0777")
    for name in os.listdir(spec["work"]):  # the run's files, copied in: the host folder stays out of reach
        with open(os.path.join(spec["work"], name), "rb") as src, open(f"{root}/work/{name}", "wb") as dst:
            dst.write(src.read())
    mount(
        "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC
    )  # while the host's is still visible
    # no user namespace inside this one: a nested one would give the code a mount namespace of its own,
    # where a tmpfs of any size is one call away (the limit is this namespace's, set while we may)
    with open(root + "/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.chdir(root)
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    header, sets = CapHeader(0x20080522, 0), (CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, all sets empty
    check(libc.capset(ctypes.byref(header), sets), "dropping capabilities")
    os.chdir("/work")
    return spec["argv"]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def main(argv: list[str]) -> None:
    if argv[0] == "--confine":
        argv = confine(json.loads(argv[1]))
    results, limits = int(argv[0]), json.loads(argv[1])
    if limits.get("uid") is not None or limits.get("plain"):
        run_without_namespaces(results, limits)
    else:
        judge(results, limits)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
