"""Removing a sandbox run's folder so that it cannot fail: any depth, unreadable folders, names the
code chose, and never an exception into the reward.

``shutil.rmtree`` recurses (a tree about 1,000 levels deep raises ``RecursionError``) and holds one
path per level (past ``PATH_MAX`` it cannot name the deepest files). Here only two folders are ever
open: the run's folder and one of its children; every grandchild folder is moved up into the run's
folder (a rename within the same filesystem) before its parent is removed, so the tree gets flatter
each pass whatever its depth, and no path is longer than two names. A folder that cannot be read is
made readable first (its owner is us, or we are root). Whatever still cannot be removed (a file
system error) is logged and kept in a list that the next call tries again; nothing raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading

log = logging.getLogger(__name__)

_left: list[str] = []  # folders a previous cleanup could not finish, tried again by the next
_lock = threading.Lock()
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
MAX_PASSES = 100_000  # each pass removes at least one level: far past any tree a run can write in time


def remove_tree(path: str) -> bool:
    """Remove ``path`` and everything under it; True when it is gone. Never raises."""
    try:
        _remove(path)
    except Exception as err:  # a file system error: said, kept for later, never raised into the reward
        log.warning(
            "sandbox cleanup: could not remove %s (%s: %s); will try again", path, type(err).__name__, err
        )
        with _lock:
            _left.append(path)
        return False
    with _lock:
        again, _left[:] = list(_left), []
    for old in again:  # what an earlier cleanup left
        with contextlib.suppress(Exception):
            _remove(old)
    return True


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:  # mode 000: make it ours to read (owner or root)
        os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd, follow_symlinks=False)
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def _remove(path: str) -> None:
    try:
        top = _open_dir(path, None)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    moved = 0
    try:
        for _ in range(MAX_PASSES):
            entries = list(os.scandir(top))
            if not entries:
                break
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=top)
                    continue
                child = _open_dir(entry.name, top)
                try:
                    os.fchmod(child, stat.S_IRWXU)  # writable: its entries can leave it
                    for inner in list(os.scandir(child)):
                        if inner.is_dir(follow_symlinks=False):  # one level up: the tree flattens
                            moved += 1
                            os.rename(inner.name, f".up-{moved}", src_dir_fd=child, dst_dir_fd=top)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(inner.name, dir_fd=child)
                finally:
                    os.close(child)
                with contextlib.suppress(OSError):  # not empty: a name appeared meanwhile; next pass
                    os.rmdir(entry.name, dir_fd=top)
        else:
            raise OSError(f"still not empty after {MAX_PASSES} passes")
    finally:
        os.close(top)
    os.rmdir(path)
