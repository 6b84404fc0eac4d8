"""Running model-written Python with its unit tests in a separate, limited process.

What is isolated (Linux):
- time: a wall-clock limit (the whole process group is killed) and a CPU-time limit (RLIMIT_CPU);
- memory: an address-space limit (RLIMIT_AS, default 1 GiB); the parent's memory is never touched;
- processes: a process-count limit (RLIMIT_NPROC) and a new session; on exit or timeout the whole
  process group is killed, and when running as root every process of the sandbox's own uid too;
- output: stdout/stderr go to a file capped by RLIMIT_FSIZE (64 KiB kept); the parent never reads
  more than that;
- files: a fresh temporary working directory, removed afterwards; stdin is closed;
- environment: built from an allowlist (PATH, LANG, LC_ALL), so no token or secret of the parent's
  reaches the code; Python runs in isolated mode (``-I``);
- as root: an unprivileged uid of its own (one per concurrent run) when the Python installation is
  readable by other users (see :func:`drops_privileges`), and no network (a new, empty network
  namespace).

What is not: without root, the code runs as the calling user, can reach the network, and reads
what that user can read. As root with a Python only root can read (pyenv under /root), the code
keeps root's uid (no network still, but the process-count limit does not bind root). Results travel over an inherited pipe as lines tagged with a per-run
random token, so printing "PASSED" or exiting early cannot fake a passed assert; a program that
deliberately introspects the harness to find the token is out of scope.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass

SANDBOX_UID_BASE = 61000  # uids 61000.. serve concurrent runs when started as root
OUTPUT_LIMIT = 64 * 1024

HARNESS = r"""
import ctypes, json, os, resource, signal, sys
def _confine(limits):
    # Limits first, then no network and an unprivileged uid (as root), then the model's code.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory"], limits["memory"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["output"], limits["output"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long output fails the write, not the run
    if os.geteuid() == 0:
        ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET: no network
    uid = limits["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
def _harness():
    token = os.environ.pop("GRPO_LITE_SANDBOX_TOKEN")
    fd = int(os.environ.pop("GRPO_LITE_SANDBOX_FD"))
    limits = json.loads(os.environ.pop("GRPO_LITE_SANDBOX_LIMITS"))
    with open("tests.json") as f:
        tests = json.load(f)
    with open("solution.py") as f:
        code = f.read()
    _confine(limits)
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
    except BaseException:
        tests = []
    for i, test in enumerate(tests):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
        except BaseException:
            continue
        os.write(fd, f"{token}:{i}\n".encode())
    os.write(fd, f"{token}:done\n".encode())
_harness()
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    wall_seconds: float = 5.0
    cpu_seconds: int = 5
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    output_bytes: int = OUTPUT_LIMIT


@dataclass
class RunResult:
    passed: int
    total: int
    timed_out: bool
    output: str


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


@functools.cache
def drops_privileges() -> bool:
    """True when runs switch to an unprivileged uid: we are root and the Python installation is
    readable by other users (a Python under /root, as pyenv installs it there, is not)."""
    if os.geteuid() != 0:
        return False
    paths = sysconfig.get_paths()
    for top in (paths["stdlib"], paths["purelib"]):
        path = os.path.realpath(top)
        while True:
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH or (path == os.path.realpath(top) and not mode & stat.S_IROTH):
                return False
            if path == os.path.dirname(path):
                break
            path = os.path.dirname(path)
    return True


def run_tests(code: str, tests: list[str], limits: Limits = Limits()) -> RunResult:
    """Run ``code`` then each assert in ``tests`` in a sandboxed Python; count the asserts that passed."""
    workdir = tempfile.mkdtemp(prefix="grpo-lite-sandbox-")
    uid = _take_uid() if drops_privileges() else None
    read_fd, write_fd = os.pipe()
    token = secrets.token_hex(16)
    timed_out = False
    try:
        with open(os.path.join(workdir, "solution.py"), "w") as f:
            f.write(code)
        with open(os.path.join(workdir, "tests.json"), "w") as f:
            json.dump(tests, f)
        with open(os.path.join(workdir, "harness.py"), "w") as f:
            f.write(HARNESS)
        if uid is not None:
            os.chown(workdir, uid, uid)
            for name in os.listdir(workdir):
                os.chown(os.path.join(workdir, name), uid, uid)
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
        confine = {"cpu": limits.cpu_seconds, "memory": limits.memory_bytes, "output": limits.output_bytes,
                   "processes": limits.max_processes, "uid": uid}  # fmt: skip
        env |= {
            "GRPO_LITE_SANDBOX_TOKEN": token,
            "GRPO_LITE_SANDBOX_FD": str(write_fd),
            "GRPO_LITE_SANDBOX_LIMITS": json.dumps(confine),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        out_path = os.path.join(workdir, "output.txt")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-u", "harness.py"],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        os.close(write_fd)
        write_fd = -1
        lines, timed_out = _read_results(read_fd, proc, limits.wall_seconds)
        tagged = {line.split(":", 1)[1] for line in lines if line.startswith(token + ":")}
        passed = {t for t in tagged if t.isdigit()}
        with open(out_path, "rb") as f:
            output = f.read(limits.output_bytes).decode(errors="replace")
        return RunResult(passed=len(passed), total=len(tests), timed_out=timed_out, output=output)
    finally:
        _cleanup(locals().get("proc"), uid, read_fd, write_fd, workdir)


def _read_results(read_fd: int, proc: subprocess.Popen[bytes], wall_seconds: float) -> tuple[list[str], bool]:
    """Result lines until the harness says done or exits; (lines, timed_out).

    Children the code started may still hold the pipe open, so the end is the harness's own exit
    (or its "done" line), not end-of-file.
    """
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
            if not chunk or b":done\n" in data:
                break
        elif proc.poll() is not None:  # exited without saying done (os._exit, a crash, a signal)
            break
    return data.decode(errors="replace").splitlines(), False


def _cleanup(
    proc: subprocess.Popen[bytes] | None, uid: int | None, read_fd: int, write_fd: int, workdir: str
) -> None:
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if uid is not None:
        _kill_uid(uid)
        _give_uid(uid)
    for fd in (read_fd, write_fd):
        if fd >= 0:
            os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)
