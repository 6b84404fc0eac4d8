"""What the code sandbox can do on this machine: the interpreter it runs, whether it switches uid, and
which protections each isolation gives (:class:`Capabilities`). Probing — running a trivial program —
is :func:`rewards.sandbox.capabilities`."""

from __future__ import annotations

import functools
import os
import platform
import stat
import subprocess
import sys
from dataclasses import dataclass, field

from rewards.sandbox.cgroups import Hierarchy

SANDBOX_UID_BASE = 61000  # uids 61000.. serve concurrent runs when started as root
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}


PROTECTIONS = (
    "wall-clock kill of every process it starts",
    "CPU-time, memory and output limits",
    "process-count limit",
    "scrubbed environment (no tokens)",
    "tests judged in a process the code cannot reach",
    "own PID namespace (host processes invisible, unsignalable)",
    "no network (own network namespace)",
    "private filesystem (read-only system; home, tokens, run directory invisible)",
    "own IPC namespace",
    "not root on the host",
    "no user namespace inside (so no mount of its own)",
    "every writable place a tmpfs of Limits.disk_bytes (/work, /tmp, /dev/shm)",
    "one memory and process budget for the whole run, kept by the kernel (a cgroup of its own)",
)


@dataclass(frozen=True)
class Plan:
    """How runs start here: isolation, interpreter (and its prefix, bound read-only) and uid."""

    isolation: str
    interpreter: str
    prefix: str
    per_run_uid: bool  # root switching to 61000+ per run
    host_root: bool  # the code keeps root's uid on the host (no uid switch possible)


@dataclass(frozen=True)
class Capabilities:
    """Which protections are in force for sandboxed code on this machine (see :func:`capabilities`)."""

    system: str
    isolation: str
    user: str
    interpreter: str
    protections: dict[str, bool] = field(default_factory=dict)
    why: str = ""
    budget: str = ""  # what bounds a run's memory as a whole: its cgroup, or the watcher (and why)

    @property
    def missing(self) -> list[str]:
        return [name for name, on in self.protections.items() if not on]

    def __str__(self) -> str:
        lines = [f"code sandbox on {self.system}: isolation={self.isolation}, runs as {self.user}, "
                 f"python {self.interpreter}" + (f" ({self.why})" if self.why else "")]  # fmt: skip
        lines += [f"  [{'x' if on else ' '}] {name}" for name, on in self.protections.items()]
        return "\n".join(lines + ([f"  run memory budget: {self.budget}"] if self.budget else []))


# ---------------------------------------------------------------------------------------------------
# what this machine allows
def _others_can_read(path: str) -> bool:
    """Every directory above ``path`` is searchable by other users, and ``path`` itself readable."""
    path = os.path.realpath(path)
    try:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IROTH or (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH):
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


@functools.cache
def _prefix_of(interpreter: str) -> str | None:
    """``sys.base_prefix`` of another Python (None if it does not run)."""
    if os.path.realpath(interpreter) == os.path.realpath(sys.executable):
        return sys.base_prefix
    try:
        out = subprocess.run([interpreter, "-I", "-S", "-u", "-c", "import sys; print(sys.base_prefix)"],
                             capture_output=True, text=True, timeout=10, env=ENV)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _choose_interpreter() -> tuple[str, str, bool]:
    """(interpreter, prefix, others can read it): the trainer's own Python when others can read it
    (or we are not root), else the first world-readable system Python, else our own."""
    own = os.path.realpath(sys.executable)
    if os.geteuid() != 0:
        return own, sys.base_prefix, True
    for candidate in (own, "/usr/bin/python3", "/usr/local/bin/python3"):
        real = os.path.realpath(candidate)
        prefix = _prefix_of(real) if os.path.exists(real) else None
        if prefix and _others_can_read(real) and _others_can_read(prefix):
            return real, prefix, True
    return own, sys.base_prefix, False


def plans_for(isolation: str) -> list[Plan]:
    interpreter, prefix, readable = _choose_interpreter()
    root = os.geteuid() == 0
    per_run_uid = root and readable
    names = ["bubblewrap", "unshare", "none"] if isolation == "auto" else [isolation]
    if platform.system() != "Linux":
        names = ["none"]
    return [Plan(n, interpreter, prefix, per_run_uid, root and not per_run_uid) for n in names]


def capabilities_of(plan: Plan, why: str, budget: Hierarchy) -> Capabilities:
    namespaces = plan.isolation in ("bubblewrap", "unshare")
    root = os.geteuid() == 0
    if plan.per_run_uid:
        user = f"a uid of its own per run ({SANDBOX_UID_BASE}+)"
    elif root:
        user = "root's uid (no Python here is readable by other users)"
    else:
        user = f"the calling user's uid ({os.geteuid()})"
    on = {
        PROTECTIONS[0]: True,
        PROTECTIONS[1]: True,
        PROTECTIONS[2]: not plan.host_root,
        PROTECTIONS[3]: True,
        PROTECTIONS[4]: namespaces or not plan.host_root,  # root with capabilities could trace the judge
        PROTECTIONS[5]: namespaces,
        PROTECTIONS[6]: namespaces or root,
        PROTECTIONS[7]: namespaces,
        PROTECTIONS[8]: namespaces,
        PROTECTIONS[9]: not plan.host_root,
        PROTECTIONS[10]: namespaces,
        PROTECTIONS[11]: namespaces,
        PROTECTIONS[12]: budget.version > 0,
    }
    return Capabilities(platform.system(), plan.isolation, user, plan.interpreter, on, why, str(budget))
