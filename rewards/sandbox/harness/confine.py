"""Namespaces without bubblewrap: user, mount, PID, network, IPC and UTS; a read-only root of its own
with tmpfs /tmp and /work of the run's disk budget; no nested user namespace; every capability dropped."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
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
    _bind_read_only(root, spec["read_only"], mount)
    _make_writable_places(root, spec, mount)
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


def _bind_read_only(root: str, paths: list[str], mount: Any) -> None:
    """Each of ``paths`` (the interpreter's prefix, /usr, ...) bound read-only under ``root``, keeping the
    flags its own mount locks (a bind mount cannot drop nosuid, nodev... when remounted read-only)."""
    for path in paths:
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


def _make_writable_places(root: str, spec: dict, mount: Any) -> None:
    """A minimal /dev (null, zero, random, urandom) and /tmp and /work as tmpfs of the run's disk budget,
    the run's files copied into /work: the host folder stays out of reach."""
    os.makedirs(root + "/dev")
    for device in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{device}", "w").close()
        mount(f"/dev/{device}", f"{root}/dev/{device}", None, MS_BIND)
    for path in ("/tmp", "/work", "/proc"):
        os.makedirs(root + path)
    size = f"size={int(spec['disk'])},nr_inodes=65536"  # every writable place a tmpfs of the disk budget
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
    mount("tmpfs", root + "/work", "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=0777")
    for name in os.listdir(spec["work"]):  # the run's files, copied in: the host folder stays out of reach
        with open(os.path.join(spec["work"], name), "rb") as src, open(f"{root}/work/{name}", "wb") as dst:
            dst.write(src.read())


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]
