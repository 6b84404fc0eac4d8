"""One memory budget for a whole sandboxed run — every process it starts, their memory files and the
pages of its tmpfs mounts — and a process budget with it (:class:`Budget`).

With a cgroup (:mod:`rewards.sandbox.cgroups`) the kernel charges every page the run touches to the
run's own cgroup and kills the run when it is over; a shell started first moves itself in and then
becomes the sandbox, so no process of the run is ever outside it. Without one a watcher sums, from
outside, the resident anonymous and shared memory of the run's processes and what its tmpfs mounts
hold, every few milliseconds, and kills the run past the budget: exceeded at most by what the run
allocates between two looks (and blind to memory files it does not map: 64 per process, of the
output limit each, and to the kernel's memory for its files' inodes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import threading
import time

from rewards.sandbox.cgroups import Hierarchy, hierarchy, read, write

OWN_PROCESSES = 8  # the sandbox's own processes besides the code's (sh, setpriv, bwrap, judge, solution)
WATCH_SECONDS = 0.005  # the watcher's look interval without a cgroup
WRITABLE_PLACES = ("/tmp", "/dev/shm", "/work")  # tmpfs mounts inside the sandbox (rewards.sandbox.run)
MEMORY, PROCESSES = "memory budget", "process budget"  # what stopped a run (RunResult.stopped_by)
_counter = itertools.count()  # next() on it is atomic under the GIL


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (through ``/proc/PID/task/TID/children``)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 4096:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in read(f"/proc/{current}/task/{tid}/children").split()]
    return found


def _resident(pid: int) -> int:
    """Bytes of anonymous and shared (memory files, shm) memory ``pid`` holds; 0 once it is gone."""
    total = 0
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("RssAnon:", "RssShmem:")):
            total += int(line.split()[1]) * 1024
    return total


def _host_filesystems() -> set[int]:
    """The ids of the host's own filesystems where the sandbox's writable places are mounted."""
    ids = set()
    for place in ("/", *WRITABLE_PLACES):
        with contextlib.suppress(OSError):
            ids.add(os.statvfs(place).f_fsid)
    return ids


def _tmpfs_held(processes: list[int], own_namespace: str, host: set[int]) -> int:
    """Bytes written into the writable tmpfs mounts of the run's own mount namespace, seen through
    ``/proc/PID/root`` of its first process inside one; 0 when none is (``isolation="none"``: its /tmp is
    the host's disk, bounded by the output limit per file only). A place that is still the host's
    filesystem (``host``: the namespace is being set up) is not the run's and is not counted."""
    for pid in processes:
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == own_namespace:
                continue
        except OSError:
            continue
        seen, total = set(), 0
        for place in WRITABLE_PLACES:
            with contextlib.suppress(OSError):
                stats = os.statvfs(f"/proc/{pid}/root{place}")
                if stats.f_fsid not in seen and stats.f_fsid not in host:
                    seen.add(stats.f_fsid)
                    total += (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return total
    return 0


class Budget:
    """The budget of one run: ``command(argv)`` starts the run inside it, ``watch(pid)`` once it runs,
    ``close()`` when it is over (kills what is left, removes the cgroup; never raises)."""

    def __init__(self, memory: int, processes: int, where: Hierarchy | None = None) -> None:
        self.memory, self.processes = memory, processes + OWN_PROCESSES
        self.where = hierarchy() if where is None else where
        self.folders: list[str] = []  # this run's cgroups (v1: memory's, then pids')
        self.peak = 0  # the most memory the run held, as the kernel or the watcher saw it
        self.stopped_by = ""
        self._done = threading.Event()
        self._watcher: threading.Thread | None = None
        if self.where.version:
            self._make()

    def _settings(self) -> list[tuple[str, str]]:
        memory, processes = str(self.memory), str(self.processes)
        if self.where.version == 2:
            folder = self.folders[0]
            names = [("memory.max", memory), ("memory.swap.max", "0"), ("memory.oom.group", "1"),
                     ("pids.max", processes)]  # fmt: skip
            return [(os.path.join(folder, n), v) for n, v in names]
        settings = [(os.path.join(self.folders[0], "memory.limit_in_bytes"), memory),
                    (os.path.join(self.folders[0], "memory.memsw.limit_in_bytes"), memory)]  # fmt: skip
        return settings + [(os.path.join(f, "pids.max"), processes) for f in self.folders[1:]]

    def _make(self) -> None:
        name = f"grpo-lite-run-{os.getpid()}-{next(_counter)}"
        try:
            for base in self.where.folders:
                if base:
                    os.mkdir(os.path.join(base, name))
                    self.folders.append(os.path.join(base, name))
            for path, value in self._settings():
                if not os.path.exists(path):  # memsw only with swap accounting, memory.peak from 5.19
                    continue
                try:
                    write(path, value)
                except OSError:
                    if "swap" not in path and "memsw" not in path:  # no swap to limit: nothing to hold
                        raise
        except OSError:  # this run cannot have its cgroup (too many, a full hierarchy): the watcher
            self._remove()

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` started inside the run's cgroups (unchanged without them)."""
        if not self.folders:
            return argv
        moves = " && ".join(f"echo $$ > {shlex.quote(os.path.join(f, 'cgroup.procs'))}" for f in self.folders)
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sh", *argv]

    def enter(self) -> None:
        """Move the calling process into the run's cgroups (a child between fork and exec)."""
        for folder in self.folders:
            write(os.path.join(folder, "cgroup.procs"), str(os.getpid()))

    def watch(self, pid: int) -> None:
        """Without a cgroup: watch the memory of ``pid`` and all below it from a thread of the trainer."""
        if not self.folders:
            self._watcher = threading.Thread(target=self._watch, args=(pid,), daemon=True)
            self._watcher.start()

    def _watch(self, pid: int) -> None:
        own_namespace, host = os.readlink("/proc/self/ns/mnt"), _host_filesystems()
        while not self._done.wait(WATCH_SECONDS):
            processes = _descendants(pid)
            held = sum(_resident(p) for p in processes) + _tmpfs_held(processes, own_namespace, host)
            self.peak = max(self.peak, held)
            if held > self.memory:
                self.stopped_by = MEMORY
                for process in processes:
                    with contextlib.suppress(OSError):
                        os.kill(process, signal.SIGKILL)
                return

    def close(self) -> None:
        """Stop the watcher, or read what the kernel saw, kill every process left in the cgroups and
        remove them. Never raises."""
        self._done.set()
        if self._watcher is not None:
            self._watcher.join()
        if not self.folders:
            return
        with contextlib.suppress(OSError, ValueError):
            self._read_events()
        self._remove()

    def _read_events(self) -> None:
        folder = self.folders[0]
        if self.where.version == 2:
            self.peak = int(read(os.path.join(folder, "memory.peak")).strip() or 0)
            memory, pids = os.path.join(folder, "memory.events"), os.path.join(folder, "pids.events")
        else:
            self.peak = int(read(os.path.join(folder, "memory.max_usage_in_bytes")).strip() or 0)
            memory = os.path.join(folder, "memory.oom_control")
            pids = os.path.join(self.folders[1], "pids.events") if len(self.folders) > 1 else ""
        if _count(read(memory), "oom_kill"):
            self.stopped_by = MEMORY
        elif pids and _count(read(pids), "max"):
            self.stopped_by = PROCESSES

    def _remove(self) -> None:
        deadline = time.monotonic() + 5
        for folder in reversed(self.folders):
            while True:
                for pid in read(os.path.join(folder, "cgroup.procs")).split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until its killed processes are reaped
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
        self.folders = []


def _count(events: str, key: str) -> int:
    for line in events.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0
