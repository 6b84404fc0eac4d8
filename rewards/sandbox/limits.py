"""The settings of a sandboxed run (:class:`Limits`) and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass

OUTPUT_LIMIT = 64 * 1024
ISOLATIONS = ("auto", "bubblewrap", "unshare", "none")


class SandboxUnavailable(RuntimeError):
    """Isolation was required (or a named isolation asked for) and this machine cannot provide it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits and isolation of one sandboxed run.

    ``memory_bytes`` bounds the whole run — every process it starts, their memory files and tmpfs
    pages — where a cgroup can be made (:mod:`rewards.sandbox.budget`; else a watcher from outside),
    and each process's address space besides; ``max_processes`` bounds its processes the same way.

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
    """What one run of code and tests gave: the tests passed before it ended, and why it ended early
    (``stopped_by``: "wall clock", "memory budget", "process budget" or ""); ``peak_memory`` is the
    most the whole run held (bytes, as its cgroup or the watcher saw it; 0 where unknown)."""

    passed: int
    total: int
    timed_out: bool
    output: str
    stopped_by: str = ""
    peak_memory: int = 0


@dataclass
class CodeResult:
    """What one program printed in the sandbox: ``output`` (stdout and stderr interleaved, a traceback
    when it raised, the value of a last bare expression as a notebook shows it), cut to a bound."""

    output: str
    ok: bool  # ran to the end without an exception
    timed_out: bool
    stopped_by: str = ""
