"""Small files written whole (readers see the old content or the new, never half), and the
folders of HOME that only the worker's user may read.

Job records, transcripts and logs can hold what an agent saw; the embedded broker holds task
messages; locks and pidfiles steer the fleet. So files are 0600 and folders 0700, and HOME
itself 0711: another uid (a sandboxed agent) may pass through it to its own worktree and
home, but cannot list it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "HOME_MODE",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "atomic_write",
    "atomic_write_bytes",
    "make_dirs",
    "open_append",
    "open_beneath",
    "private_dir",
    "read_beneath",
    "remove_path",
]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
HOME_MODE = 0o711  # others may traverse (x), never list (r) nor write (w)


def atomic_write(path: Path, text: str, *, durable: bool = True) -> None:
    """Temp file in the same folder, then rename over ``path``. The file is 0600 (the mode
    of the temp file, which the rename keeps); folders it creates are 0700.

    ``durable`` adds an fsync before the rename: for records that must survive a host crash
    (jobs), not for state that dies with its holders anyway (leases, heartbeats).
    """
    atomic_write_bytes(path, text.encode(), durable=durable)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """``atomic_write`` for bytes."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE)  # mkstemp's default, stated: whatever the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:  # the rename itself survives a host crash once its folder is synced
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def open_append(path: Path) -> IO[bytes]:
    """``path`` opened for appending, created 0600 (and made 0600 if an older run left it
    wider): transcripts and logs hold whatever the agent saw."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return os.fdopen(fd, "ab")


def make_dirs(path: Path, mode: int = PRIVATE_DIR) -> None:
    """Creates ``path`` and its missing parents with ``mode`` (exactly: the umask cannot
    widen it, nor narrow HOME's 0711). Folders that exist keep their mode: they may be the
    user's."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=mode)
        except FileExistsError:
            continue  # another process made it meanwhile: theirs has the same mode
        os.chmod(folder, mode)


def private_dir(path: Path, *, home: Path | None = None) -> Path:
    """``path``, a folder of ours, made 0700 (created, or tightened if it exists). With
    ``home`` (HOME, which ``path`` lies in) that is made 0711 first (created, or stripped of
    group/other read and write). Returns ``path``."""
    if home is not None:
        make_dirs(home, HOME_MODE)
        _tighten(home, keep=HOME_MODE)
    make_dirs(path)
    _tighten(path, keep=PRIVATE_DIR)
    return path


def open_beneath(root: Path, parts: Sequence[str]) -> int | None:
    """A read-only descriptor of the regular file ``root/parts…``, reached one folder at a
    time without following any symlink (a folder of another uid's, swapped for a link to
    ours, leads nowhere), or None. The caller closes it."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        fd = os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for name in parts[:-1]:
            next_fd = os.open(name, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        return None
    return file_fd


def read_beneath(root: Path, parts: Sequence[str], limit: int) -> bytes | None:
    """Up to ``limit`` bytes of the regular file ``root/parts…`` (see ``open_beneath``)."""
    fd = open_beneath(root, parts)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def remove_path(path: Path) -> None:
    """Removes a file, a link (never its target) or a whole folder, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _tighten(folder: Path, *, keep: int) -> None:
    """Takes away every permission bit of ``folder`` outside ``keep``."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & ~keep:
        os.chmod(folder, mode & keep)
