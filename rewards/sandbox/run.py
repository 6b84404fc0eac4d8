"""One sandboxed run: its folder and files, its uid (as root), its budget, the command that starts the
judge in bubblewrap, in grpo-lite's own namespaces or in neither, its results, and a cleanup that
cannot fail."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rewards.sandbox.budget import Budget
from rewards.sandbox.cleanup import remove_tree
from rewards.sandbox.limits import OUTPUT_LIMIT, Limits, RunResult
from rewards.sandbox.plan import ENV, SANDBOX_UID_BASE, Plan

INNER_UID = 1000  # the code's uid inside its user namespace
HARNESS = Path(__file__).with_name("harness")  # the judge's program, copied whole into each run's /work
HARNESS_FILES = ("main.py", "wire.py", "solver.py", "judge.py", "confine.py")
RUN_FILES = ("solution.py", "tests.json", *HARNESS_FILES)  # what the judge finds in /work
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")


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
    ``--file``), bubblewrap's own ``/dev`` (a tmpfs of half the RAM) is read-only, and no user
    namespace can be made inside (a nested one could mount a tmpfs of any size)."""
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
            "--perms", "1777", "--size", str(disk), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--perms", "1777", "--size", str(disk), "--tmpfs", "/tmp",
            "--perms", "0777", "--size", str(disk), "--tmpfs", "/work",
            *(a for name, fd in files.items() for a in ("--perms", "0644", "--file", str(fd), f"/work/{name}")),
            "--chdir", "/work", "--remount-ro", "/",
            plan.interpreter, "-I", "-S", "-u", "/work/main.py", *argv,
        ]  # fmt: skip
    harness = os.path.join(workdir, "work", "main.py")
    if plan.isolation == "unshare":
        spec = {"inner": INNER_UID, "root": os.path.join(workdir, "root"), "work": os.path.join(workdir, "work"),
                "read_only": _read_only_paths(plan), "argv": argv, "disk": disk}  # fmt: skip
        return [plan.interpreter, "-I", "-S", "-u", harness, "--confine", json.dumps(spec)]
    return [plan.interpreter, "-I", "-S", "-u", harness, *argv]


@functools.cache
def _harness_sources() -> dict[str, str]:
    return {name: (HARNESS / name).read_text() for name in HARNESS_FILES}


def _run(code: str, tests: list[str], limits: Limits, plan: Plan) -> RunResult:
    workdir = tempfile.mkdtemp(prefix="grpo-lite-sandbox-")
    uid = _take_uid() if plan.per_run_uid else None
    read_fd, write_fd = os.pipe()
    proc = None
    opened: list[int] = []  # the run's files, open for bubblewrap to copy in
    budget = Budget(limits.memory_bytes, limits.max_processes)
    try:
        work = _write_files(workdir, code, tests, uid)
        confine: dict[str, object] = {"cpu": limits.cpu_seconds, "memory": limits.memory_bytes,
                                      "output": limits.output_bytes, "processes": limits.max_processes}  # fmt: skip
        if plan.isolation == "none":
            confine |= {"plain": True, "uid": uid}  # the harness itself unshares the network and drops to uid
        files: dict[str, int] = {}  # bubblewrap copies them into its /work tmpfs (--file)
        for name in RUN_FILES if plan.isolation == "bubblewrap" else ():
            files[name] = os.open(os.path.join(work, name), os.O_RDONLY)
            opened.append(files[name])  # closed by _cleanup whatever happens next
        command = _command(plan, workdir, write_fd, confine, files, limits.disk_bytes)
        command, preexec = _switched(command, uid if plan.isolation != "none" else None, budget)
        out_path = os.path.join(workdir, "output.txt")
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(command, cwd=work, env=ENV, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, pass_fds=(write_fd, *files.values()),
                                    start_new_session=True, preexec_fn=preexec)  # fmt: skip
        budget.watch(proc.pid)
        os.close(write_fd)
        write_fd = -1
        lines, timed_out = _read_results(read_fd, proc, limits.wall_seconds)
        passed = {line for line in lines if line.isdigit() and int(line) < len(tests)}
        with open(out_path, "rb") as f:
            output = f.read(limits.output_bytes).decode(errors="replace")
    finally:
        try:  # never raises (cleanup.py): one completion's mess cannot fail the batch
            _cleanup(
                proc, uid if plan.isolation == "none" else None, read_fd, write_fd, workdir, opened, budget
            )
        finally:
            if uid is not None:
                _give_uid(uid)
    stopped_by = budget.stopped_by or ("wall clock" if timed_out else "")
    return RunResult(len(passed), len(tests), timed_out, output, stopped_by, budget.peak)


def _write_files(workdir: str, code: str, tests: list[str], uid: int | None) -> str:
    """The run's folder on the host: ``work/`` with the code, the tests and the judge's program (owned
    by the run's uid, if it has one), ``root/`` for the own-namespaces root; returns ``work``."""
    work = os.path.join(workdir, "work")
    os.mkdir(work, 0o700)
    os.mkdir(os.path.join(workdir, "root"), 0o700)
    for name, text in {"solution.py": code, "tests.json": json.dumps(tests), **_harness_sources()}.items():
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    if uid is not None:
        for path in (
            workdir,
            work,
            os.path.join(workdir, "root"),
            *(os.path.join(work, n) for n in RUN_FILES),
        ):
            os.chown(path, uid, uid)
    return work


def _switched(
    command: list[str], uid: int | None, budget: Budget
) -> tuple[list[str], Callable[[], None] | None]:
    """The command run inside the run's budget and as ``uid`` (its group the same, no other groups):
    through util-linux's ``setpriv`` where it is installed, else by a function the child runs before
    it starts the command (returned). Popen starts a child with ``vfork`` only when it switches no ids
    and runs no such function, and a ``fork`` of the trainer (GBs mapped) costs ~50 ms with the GIL
    held: each tool call mid-rollout stalled decoding that long."""
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin") if uid is not None else None
    if uid is None or setpriv:
        switch = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"] if setpriv else []
        return budget.command([*switch, *command]), None

    def enter_and_switch() -> None:  # in the child, between fork and exec: still root here
        budget.enter()
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return command, enter_and_switch


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
    opened: list[int], budget: Budget,
) -> None:  # fmt: skip
    """Kill what the run started (and its cgroup), close its pipe and remove its folder (any depth:
    cleanup.py)."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if uid is not None:  # without a PID namespace, children may have left the process group
        _kill_uid(uid)
    budget.close()
    for fd in (read_fd, write_fd, *opened):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    remove_tree(workdir)
