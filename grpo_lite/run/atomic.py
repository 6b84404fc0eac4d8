"""One rule for every change in a run folder (and in an export): what appears under a final name is
complete, and what is removed leaves its final name first. A kill -9 at any moment then leaves the
final names as they were before the change or as they are after it, and hidden leftovers that
``clear_leftovers`` deals with when a run next starts or resumes.

- a file: written into a hidden temporary beside it (``.tmp-NAME-XXXX``), flushed and synced, then
  renamed over it (``os.replace``, atomic on POSIX);
- a new folder: filled as a hidden temporary (``new_temp_folder``), then renamed into place;
- a folder replaced (the same step saved again, the run's adapter): the old one is renamed to a hidden
  ``.replaced-NAME-XXXX`` first, the new one renamed into place, then the old one deleted. A kill
  between the two renames leaves the final name free and the old folder whole under its hidden name:
  ``clear_leftovers`` puts it back, so nothing is lost;
- a removal: renamed to a hidden ``.doomed-NAME-XXXX``, then deleted (a kill mid-deletion leaves only
  the hidden name, never a half-deleted folder under a final one).

Hidden entries are never counted, loaded or exported: the run's readers look for final names only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP, DOOMED, REPLACED = ".tmp-", ".doomed-", ".replaced-"
LEGACY_TMP = (".step-",)  # the temporary checkpoint folders of earlier versions


def _hidden(path: Path, kind: str, suffix: str = "") -> Path:
    return path.with_name(f"{kind}{path.name}-{uuid.uuid4().hex[:8]}{suffix}")


def write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, or what it held before."""
    write_bytes(Path(path), text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    tmp = _hidden(path, TMP)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_file(src: Path, dst: Path) -> None:
    """A copy of ``src`` appears at ``dst`` whole (or ``dst`` is left as it was)."""
    write_bytes(Path(dst), Path(src).read_bytes())


def temp_path(path: Path) -> Path:
    """A hidden temporary name beside ``path`` with its suffix (for writers that pick a format by it)."""
    return _hidden(Path(path), TMP, Path(path).suffix)


def new_temp_folder(parent: Path, name: str) -> Path:
    """An empty hidden folder in ``parent`` to fill, then hand to :func:`install_folder`."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TMP}{name}-", dir=parent))


def install_folder(tmp: Path, final: Path) -> None:
    """Rename the complete folder ``tmp`` to ``final``; an existing ``final`` is replaced (see above)."""
    final = Path(final)
    if not final.exists():
        os.replace(tmp, final)
        return
    old = _hidden(final, REPLACED)
    os.replace(final, old)
    os.replace(tmp, final)
    delete(old)


@contextmanager
def replacing_folder(final: Path) -> Iterator[Path]:
    """A hidden folder to write ``final``'s new contents into; installed over ``final`` if the block
    succeeds, deleted if it raises."""
    final = Path(final)
    tmp = new_temp_folder(final.parent, final.name)
    try:
        yield tmp
        install_folder(tmp, final)
    except BaseException:
        delete(tmp)
        raise


def remove(path: Path) -> None:
    """Take ``path`` (a file or a folder) away from its final name at once, then delete it."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    doomed = _hidden(path, DOOMED)
    os.replace(path, doomed)
    delete(doomed)


def delete(path: Path) -> None:
    """Delete a hidden file or folder; whatever cannot be deleted now is left for ``clear_leftovers``."""
    path = Path(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except (OSError, RecursionError):
        pass


def clear_leftovers(folder: Path) -> list[str]:
    """In ``folder``: delete hidden temporaries and doomed entries, and put back a replaced folder whose
    final name is free (a kill between its two renames). Returns what was done, one line each."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(REPLACED):
            final = folder / name[len(REPLACED) :].rsplit("-", 1)[0]
            if not final.exists():
                os.replace(entry, final)
                done.append(f"put back {final.name}")
                continue
        if name.startswith((TMP, DOOMED, REPLACED, *LEGACY_TMP)):
            delete(entry)
            done.append(f"deleted {name}")
    return done


def sync_folder(folder: Path) -> None:
    """Every file of a folder on disk before it is renamed into place (a power cut, not only a kill)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
