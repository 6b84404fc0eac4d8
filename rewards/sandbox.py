"""Running model-written Python with its unit tests, isolated from the machine that trains on it.

On Linux with unprivileged user namespaces (current distributions, Colab) each run gets:

- its own **user, mount, PID, network, IPC and UTS namespaces** — through bubblewrap (``bwrap``,
  Debian/Ubuntu package ``bubblewrap``) when it is installed, else through the same setup made by
  :mod:`rewards.sandbox_harness` itself. The code sees a read-only ``/usr`` and interpreter, a private
  ``/tmp`` and working directory, a ``/proc`` of its own PID namespace (no other process, environment
  or descriptor of the host is visible or signalable), no network (not even the host's loopback), and
  nothing of the user's home, tokens or run directory;
- **no root**: started as root, each concurrent run switches to a uid of its own (61000…) before the
  namespaces are made, when some Python on the machine is readable by other users (the trainer's own,
  else ``/usr/bin/python3``); otherwise it keeps root's uid inside namespaces with no capabilities,
  and the process-count limit does not bind (root is exempt from it) — :func:`capabilities` says so;
- **limits**: wall clock (every process is killed: process group, PID namespace), CPU time, address
  space (1 GiB), processes, output (64 KiB kept); a scrubbed environment; stdin closed;
- **a judge it cannot lie to** (:mod:`rewards.sandbox_harness`): the tests run in a separate process
  on genuine builtin values; what the code returns crosses a pipe as plain data, so an object whose
  ``__eq__`` always says yes, a lying subclass of ``int``/``str``, shadowed builtins, names rebound in
  the tests' namespace, printing "PASSED", exiting early, reading the tests file and introspecting
  frames to forge results all fail. Out of scope: a solution that special-cases the test inputs it
  is called with (it sees its own arguments), and equality between two objects the solution itself
  made (only the solution's ``__eq__`` can answer that).

Without user namespaces (or with ``isolation="none"``) only the limits, the scrubbed environment,
the judge and — as root — a uid of its own and no network remain; that is said once, loudly, at
first use, and ``Limits(require_isolation=True)`` refuses to run code at all there. macOS: the same
minus the uid switch (untested). Windows: not supported (no ``resource`` module).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from rewards.sandbox_cleanup import remove_tree
from rewards.sandbox_plan import (
    ENV,
    PROTECTIONS,
    SANDBOX_UID_BASE,
    Capabilities,
    Plan,
    capabilities_of,
    plans_for,
)

INNER_UID = 1000  # the code's uid inside its user namespace
RUN_FILES = ("solution.py", "tests.json", "harness.py")  # what the judge finds in /work
OUTPUT_LIMIT = 64 * 1024
HARNESS = Path(__file__).with_name("sandbox_harness.py")
ISOLATIONS = ("auto", "bubblewrap", "unshare", "none")
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")


class SandboxUnavailable(RuntimeError):
    """Isolation was required (or a named isolation asked for) and this machine cannot provide it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits and isolation of one sandboxed run.

    ``isolation``: ``"auto"`` (bubblewrap, else grpo-lite's own namespaces, else none), or one of
    ``"bubblewrap"``, ``"unshare"``, ``"none"`` (an unavailable one raises :class:`SandboxUnavailable`).
    ``require_isolation``: refuse to run code (raise :class:`SandboxUnavailable`) where no namespaces
    can be made, instead of running it with limits only.
    """

    wall_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    output_bytes: int = OUTPUT_LIMIT
    disk_bytes: int = 64 << 20  # each writable place (/work, /tmp, /dev/shm) is a tmpfs of this size
    isolation: str = "auto"
    require_isolation: bool = False

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"Limits.isolation={self.isolation!r}: expected one of {', '.join(ISOLATIONS)}")


@dataclass
class RunResult:
    passed: int
    total: int
    timed_out: bool
    output: str


@functools.cache
def _plan_and_capabilities(isolation: str) -> tuple[Plan | None, Capabilities, str]:
    """The first plan that runs a trivial program correctly here; its capabilities; why others failed."""
    failures = []
    for plan in plans_for(isolation):
        if plan.isolation == "bubblewrap" and not shutil.which("bwrap"):
            failures.append("bubblewrap: bwrap not installed (apt-get install bubblewrap)")
            continue
        if plan.isolation == "none" and not hasattr(os, "fork"):
            failures.append("none: this system cannot fork")
            continue
        result = _run("x = 1\n", ["assert x == 1", "assert x == 2"], Limits(wall_seconds=20), plan)
        if (result.passed, result.total) == (1, 2):
            return plan, capabilities_of(plan, "; ".join(failures)), ""
        failures.append(f"{plan.isolation}: {result.output.strip()[-300:] or 'no result'}")
    system = platform.system()
    empty = Capabilities(system, "unavailable", "-", sys.executable, dict.fromkeys(PROTECTIONS, False))
    return None, empty, "; ".join(failures)


def capabilities(isolation: str = "auto") -> Capabilities:
    """Which protections sandboxed code gets here (probed once by running a trivial program).

    >>> print(capabilities())  # doctest: +SKIP
    code sandbox on Linux: isolation=bubblewrap, runs as a uid of its own per run (61000+), ...
      [x] wall-clock kill of every process it starts
      ...
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation={isolation!r}: expected one of {', '.join(ISOLATIONS)}")
    return _plan_and_capabilities(isolation)[1]


_warned: set[str] = set()


def _plan_for(limits: Limits) -> Plan:
    plan, caps, failures = _plan_and_capabilities(limits.isolation)
    if plan is None:
        raise SandboxUnavailable(
            f"code sandbox: isolation={limits.isolation!r} is not available here: {failures}"
        )
    if limits.require_isolation and plan.isolation == "none":
        raise SandboxUnavailable(
            f"code sandbox: Limits(require_isolation=True) and no namespaces can be made here "
            f"({failures}); not running model-written code.\n{caps}"
        )
    if caps.missing and str(caps) not in _warned:
        _warned.add(str(caps))
        warnings.warn(
            f"model-written code will run WITHOUT: {'; '.join(caps.missing)}.\n{caps}\n"
            "Install bubblewrap or enable unprivileged user namespaces; "
            "Limits(require_isolation=True) refuses to run code instead.",
            RuntimeWarning,
            stacklevel=3,
        )
    return plan


# ---------------------------------------------------------------------------------------------------
# one run
_uid_lock = threading.Lock()
_free_uids: list[int] = []
_next_uid = SANDBOX_UID_BASE


def _take_uid() -> int:
    global _next_uid
    with _uid_lock:
        if _free_uids:
            return _free_uids.pop()
        _next_uid += 1
        return _next_uid - 1


def _give_uid(uid: int) -> None:
    with _uid_lock:
        _free_uids.append(uid)


def _kill_uid(uid: int) -> None:
    """Kill every process of the sandbox uid, escaped children included (a forked killer)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits through os._exit
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def drops_privileges() -> bool:
    """True when runs switch to an unprivileged uid of their own (we are root and some Python here is
    readable by other users)."""
    plan, _, _ = _plan_and_capabilities("auto")
    return plan is not None and plan.per_run_uid


def _read_only_paths(plan: Plan) -> list[str]:
    paths = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
    if not any(plan.prefix == p or plan.prefix.startswith(p + "/") for p in paths):
        paths.append(plan.prefix)
    return paths


def _command(
    plan: Plan, workdir: str, results_fd: int, confine: dict, files: dict[str, int], disk: int
) -> list[str]:
    """The command that starts the judge. With namespaces every writable place is a tmpfs of ``disk``
    bytes (``/work`` gets the run's files copied in: ``files``, name -> descriptor, for bubblewrap's
    ``--file``), and no user namespace can be made inside (a nested one could mount a tmpfs of any size)."""
    argv = [str(results_fd), json.dumps(confine)]
    if plan.isolation == "bubblewrap":
        binds: list[str] = []
        for path in _read_only_paths(plan):
            if os.path.islink(path):
                binds += ["--symlink", os.readlink(path), path]
            else:
                binds += ["--ro-bind", path, path]
        return [
            shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--uid", str(INNER_UID), "--gid", str(INNER_UID),
            "--hostname", "sandbox", *binds, "--proc", "/proc", "--dev", "/dev",
            "--perms", "1777", "--size", str(disk), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(disk), "--tmpfs", "/tmp",
            "--perms", "0777", "--size", str(disk), "--tmpfs", "/work",
            *(a for name, fd in files.items() for a in ("--perms", "0644", "--file", str(fd), f"/work/{name}")),
            "--chdir", "/work", "--remount-ro", "/",
            plan.interpreter, "-I", "-S", "-u", "/work/harness.py", *argv,
        ]  # fmt: skip
    harness = os.path.join(workdir, "work", "harness.py")
    if plan.isolation == "unshare":
        spec = {"inner": INNER_UID, "root": os.path.join(workdir, "root"), "work": os.path.join(workdir, "work"),
                "read_only": _read_only_paths(plan), "argv": argv, "disk": disk}  # fmt: skip
        return [plan.interpreter, "-I", "-S", "-u", harness, "--confine", json.dumps(spec)]
    return [plan.interpreter, "-I", "-S", "-u", harness, *argv]


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> RunResult:
    """Run ``code`` then each test in ``tests`` in the sandbox; count the tests that passed."""
    return _run(code, tests, limits, _plan_for(limits))


@dataclass
class CodeResult:
    """What one program printed in the sandbox: ``output`` (stdout and stderr interleaved, a traceback
    when it raised, the value of a last bare expression as a notebook shows it), cut to a bound."""

    output: str
    ok: bool  # ran to the end without an exception
    timed_out: bool


# The program the sandbox runs for ``run_code``: the code itself is a string literal, executed in a
# namespace of its own; the flag it leaves is read by the judge, in a process the code cannot reach.
_RUNNER = """import ast, sys, traceback
grpo_lite_ok = False
def _main(source):
    tree = ast.parse(source, "<code>")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(tree, "<code>", "exec"), scope)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<code>", "eval"), scope)
        if value is not None:
            print(repr(value))
try:
    _main(%r)
    grpo_lite_ok = True
except BaseException as error:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "<code>"]
    if frames:
        print("Traceback (most recent call last):\\n" + "".join(traceback.format_list(frames)), end="")
    print("".join(traceback.format_exception_only(type(error), error)), end="")
sys.stdout.flush()
"""


def run_code(code: str, limits: Limits = Limits()) -> CodeResult:
    """Run ``code`` in the sandbox as a program (same isolation and limits as :func:`run_tests`) and
    return what it printed. A last bare expression is printed as its ``repr``; an exception prints
    its traceback (from the code's own lines); the output is cut to ``limits.output_bytes``."""
    result = _run(_RUNNER % code, ["assert grpo_lite_ok is True"], limits, _plan_for(limits))
    return CodeResult(output=result.output, ok=result.passed == 1, timed_out=result.timed_out)


@functools.cache
def _harness_source() -> str:
    return HARNESS.read_text()


def _run(code: str, tests: list[str], limits: Limits, plan: Plan) -> RunResult:
    workdir = tempfile.mkdtemp(prefix="grpo-lite-sandbox-")
    uid = _take_uid() if plan.per_run_uid else None
    read_fd, write_fd = os.pipe()
    timed_out = False
    proc = None
    opened: list[int] = []  # the run's files, open for bubblewrap to copy in
    try:
        work = os.path.join(workdir, "work")
        os.mkdir(work, 0o700)
        os.mkdir(os.path.join(workdir, "root"), 0o700)
        for name, text in zip(RUN_FILES, (code, json.dumps(tests), _harness_source()), strict=True):
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        if uid is not None:
            for path in (
                workdir,
                work,
                os.path.join(workdir, "root"),
                *(os.path.join(work, n) for n in os.listdir(work)),
            ):
                os.chown(path, uid, uid)
        confine: dict[str, object] = {"cpu": limits.cpu_seconds, "memory": limits.memory_bytes, "output": limits.output_bytes,
                   "processes": limits.max_processes}  # fmt: skip
        if plan.isolation == "none":
            confine |= {"plain": True, "uid": uid}  # the harness itself unshares the network and drops to uid
        switch = uid if uid is not None and plan.isolation != "none" else None
        files: dict[str, int] = {}  # bubblewrap copies them into its /work tmpfs (--file)
        for name in RUN_FILES if plan.isolation == "bubblewrap" else ():
            files[name] = os.open(os.path.join(work, name), os.O_RDONLY)
            opened.append(files[name])  # closed by _cleanup whatever happens next
        command, switch = _switched(
            _command(plan, workdir, write_fd, confine, files, limits.disk_bytes), switch
        )
        out_path = os.path.join(workdir, "output.txt")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=ENV,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd, *files.values()),
                start_new_session=True,
                user=switch,
                group=switch,
                extra_groups=[] if switch is not None else None,
            )
        os.close(write_fd)
        write_fd = -1
        lines, timed_out = _read_results(read_fd, proc, limits.wall_seconds)
        passed = {line for line in lines if line.isdigit() and int(line) < len(tests)}
        with open(out_path, "rb") as f:
            output = f.read(limits.output_bytes).decode(errors="replace")
        return RunResult(passed=len(passed), total=len(tests), timed_out=timed_out, output=output)
    finally:
        try:  # never raises (sandbox_cleanup.py): one completion's mess cannot fail the batch
            _cleanup(proc, uid if plan.isolation == "none" else None, read_fd, write_fd, workdir, opened)
        finally:
            if uid is not None:
                _give_uid(uid)


def _switched(command: list[str], uid: int | None) -> tuple[list[str], int | None]:
    """The command run as ``uid`` (its group the same, no other groups): through util-linux's
    ``setpriv`` where it is installed (the uid left for Popen to switch: None), else by Popen's
    ``user``/``group``/``extra_groups`` (the uid returned). Popen starts a child with ``vfork`` only
    when it switches no ids, and a ``fork`` of the trainer (GBs mapped) costs ~50 ms with the GIL
    held: each tool call mid-rollout stalled decoding that long."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin") if uid is not None else None
    if setpriv:
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command], None
    return command, uid


def _read_results(read_fd: int, proc: subprocess.Popen[bytes], wall_seconds: float) -> tuple[list[str], bool]:
    """Result lines until the judge says done or the sandbox exits; (lines, timed_out)."""
    deadline = time.monotonic() + wall_seconds
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data.decode(errors="replace").splitlines(), True
        ready, _, _ = select.select([read_fd], [], [], min(left, 0.05))
        if ready:
            chunk = os.read(read_fd, 4096)
            data += chunk[: max(0, OUTPUT_LIMIT - len(data))]
            if not chunk or data.endswith(b"done\n"):
                break
        elif proc.poll() is not None:  # exited: what it wrote just before is still in the pipe
            while select.select([read_fd], [], [], 0)[0] and len(data) < OUTPUT_LIMIT:
                chunk = os.read(read_fd, 4096)
                if not chunk:
                    break
                data += chunk[: OUTPUT_LIMIT - len(data)]
            break
    return data.decode(errors="replace").splitlines(), False


def _cleanup(
    proc: subprocess.Popen[bytes] | None, uid: int | None, read_fd: int, write_fd: int, workdir: str,
    opened: list[int],
) -> None:  # fmt: skip
    """Kill what the run started, close its pipe and remove its folder (any depth: sandbox_cleanup)."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if uid is not None:  # without a PID namespace, children may have left the process group
        _kill_uid(uid)
    for fd in (read_fd, write_fd, *opened):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    remove_tree(workdir)
