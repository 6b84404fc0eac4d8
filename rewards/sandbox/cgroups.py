"""Which cgroups the trainer may make for its sandboxed runs (:func:`hierarchy`); the budget that uses
them is :mod:`rewards.sandbox.budget`.

Where the trainer may make cgroups (root, or a delegated systemd scope) each run gets one of its own:
cgroup v2 (``memory.max``, ``memory.swap.max`` 0, ``memory.oom.group``, ``pids.max``) or, on a v1
machine, the memory and pids controllers' folders (``memory.limit_in_bytes``,
``memory.memsw.limit_in_bytes``, ``pids.max``). The kernel charges every page the run touches to it and
kills the run when it is over; a shell started first moves itself in and then becomes the sandbox, so
no process of the run is ever outside it. Elsewhere a watcher sums the resident anonymous and shared
memory of the run's processes from outside every few milliseconds and kills the run past the budget:
the strongest bound there is without a cgroup, exceeded at most by what the run allocates between two
looks, and blind to tmpfs pages (each tmpfs is sized instead) and to memory files it does not map (64
open files of the output limit each). :func:`rewards.sandbox.capabilities` says which holds here.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from dataclasses import dataclass

_names = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where runs' cgroups are made: ``version`` 2 (one folder), 1 (memory's folder, then pids' or
    ""), or 0 (none here: ``why``)."""

    version: int
    folders: tuple[str, ...] = ()
    why: str = ""

    def __str__(self) -> str:
        if not self.version:
            return f"no cgroup ({self.why}): a watcher from outside"
        return f"cgroup v{self.version} under {self.folders[0]}"


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _own_folders(mountinfo: str, cgroup: str) -> dict[str, str]:
    """The trainer's own cgroup folder for each controller ("" for cgroup v2), from the texts of
    ``/proc/self/mountinfo`` and ``/proc/self/cgroup``."""
    own = {}
    for line in cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    folders = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(fields) < 5 or len(kind) < 3 or kind[0] not in ("cgroup", "cgroup2"):
            continue
        root, point = fields[3], fields[4]
        names = [""] if kind[0] == "cgroup2" else [o for o in kind[2].split(",") if o in own]
        for name in names:
            mine = own.get(name)
            if mine is not None and (mine + "/").startswith(root.rstrip("/") + "/"):
                folders[name] = os.path.normpath(os.path.join(point, os.path.relpath(mine, root)))
    return folders


def _may_make_children(folder: str, settings: tuple[str, ...]) -> str:
    """ "" when a child cgroup can be made in ``folder`` and its ``settings`` files written, else why."""
    probe = os.path.join(folder, f"grpo-lite-probe-{os.getpid()}-{next(_names)}")
    try:
        os.mkdir(probe)
    except OSError as error:
        return f"cannot make a cgroup in {folder}: {error.strerror}"
    try:
        for name in settings:
            write(os.path.join(probe, name), read(os.path.join(probe, name)).strip() or "max")
        return ""
    except OSError as error:
        return f"cannot set {name} in {folder}: {error.strerror}"
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)


def _enable_v2(folder: str) -> str:
    """Memory and pids for the children of ``folder``; where the trainer's own processes sit in it
    (the "no internal processes" rule), the trainer moves into a leaf of its own first, as nsjail does."""
    wanted = {"memory", "pids"} & set(read(os.path.join(folder, "cgroup.controllers")).split())
    if "memory" not in wanted:
        return f"cgroup v2 at {folder} offers no memory controller"
    missing = wanted - set(read(os.path.join(folder, "cgroup.subtree_control")).split())
    if not missing:
        return ""
    control = " ".join(f"+{name}" for name in sorted(missing))
    try:
        write(os.path.join(folder, "cgroup.subtree_control"), control)
        return ""
    except OSError:
        pass
    leaf = os.path.join(folder, f"grpo-lite-trainer-{os.getpid()}")
    try:
        os.makedirs(leaf, exist_ok=True)
        write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        write(os.path.join(folder, "cgroup.subtree_control"), control)
        return ""
    except OSError as error:
        return f"cannot enable memory for cgroups under {folder}: {error.strerror}"


def find_hierarchy(mountinfo: str, cgroup: str) -> Hierarchy:
    """The cgroups this trainer may make for its runs (cgroup v2 first, then v1), else why none."""
    folders = _own_folders(mountinfo, cgroup)
    why = []
    if "" in folders and os.path.exists(os.path.join(folders[""], "cgroup.controllers")):
        problem = _enable_v2(folders[""]) or _may_make_children(folders[""], ("memory.max",))
        if not problem:
            return Hierarchy(2, (folders[""],))
        why.append(problem)
    if "memory" in folders:
        problem = _may_make_children(folders["memory"], ("memory.limit_in_bytes",))
        pids = folders.get("pids", "")
        if not problem:
            return Hierarchy(
                1, (folders["memory"], pids if pids and not _may_make_children(pids, ()) else "")
            )
        why.append(problem)
    return Hierarchy(0, (), "; ".join(why) or "no cgroup hierarchy with a memory controller is mounted")


def remove_stale(folder: str) -> list[str]:
    """Remove the cgroups of trainers that are gone — their runs' (``grpo-lite-run-PID-N``; a kill -9
    leaves them, empty: their processes died with it) and a v2 trainer's own leaf
    (``grpo-lite-trainer-PID``); returns their names. Never raises."""
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            parts = name.split("-")
            run = name.startswith("grpo-lite-run-") and len(parts) == 5
            leaf = name.startswith("grpo-lite-trainer-") and len(parts) == 4
            if (run or leaf) and parts[3].isdigit() and not os.path.exists(f"/proc/{parts[3]}"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(folder, name))
                    removed.append(name)
    return removed


@functools.cache
def hierarchy() -> Hierarchy:
    """This machine's answer to :func:`find_hierarchy` (asked once; stale run cgroups removed then)."""
    try:
        found = find_hierarchy(read("/proc/self/mountinfo"), read("/proc/self/cgroup"))
    except (OSError, ValueError) as error:
        return Hierarchy(0, (), f"cannot read this process's cgroups: {error}")
    for folder in found.folders:
        if folder:
            remove_stale(folder)
    return found
