"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

    write_atomic(path, b"bytes")                       bytes, or str (written as UTF-8)
    write_atomic(path, lambda temp: np.savez(...))     a writer that writes to a path it is given

The data goes to a temp file (beside the target, or in `temp_dir`, which must be on the same
filesystem), is flushed and fsynced, renamed over the target, and the target's folder is
fsynced, so the new file survives a power cut once write_atomic returns. On any failure the
temp file is removed, the old target is left as it was, and the exception is raised: logging
it (or not) is the caller's choice.

Temp files are named `<target name>.tmp<pid>.<random>` (is_temp() recognises them); a crash can
leave one behind, so an owner of a folder removes its own temp files at start, and only those.

Two files that must appear in order (a frame's sidecar, then its image) are written in two steps:
write_temp() for each, then commit() for each, so both are whole on disk before either appears.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Callable


TEMP_NAME = re.compile(r"^(?P<target>.+)\.tmp\d+\.[0-9a-f]{8}$")


def write_atomic(path: str | Path, data: bytes | str | Callable[[Path], None],
                 temp_dir: str | Path | None = None) -> None:
    """Replace `path` with `data`: bytes, text (UTF-8), or a writer called with the temp file's path."""
    commit(write_temp(path, data, temp_dir), path)


def write_temp(path: str | Path, data: bytes | str | Callable[[Path], None],
               temp_dir: str | Path | None = None) -> Path:
    """Write `data` to a fsynced temp file for `path` (beside it, or in `temp_dir`); returns it.
    On failure nothing is left behind and the exception is raised."""
    path = Path(path)
    temp = Path(temp_dir or path.parent) / f"{path.name}.tmp{os.getpid()}.{secrets.token_hex(4)}"
    try:
        # os.open, not mkstemp: the file gets the usual umask permissions (a puller may read it)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "wb") as f:
            if not callable(data):
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        if callable(data):
            data(temp)
            _fsync_file(temp)
    except BaseException:
        discard(temp)
        raise
    return temp


def commit(temp: Path, path: str | Path) -> None:
    """Rename a temp file of write_temp() over `path` and make it durable; on failure the temp
    file is removed and the exception raised."""
    path = Path(path)
    try:
        os.replace(temp, path)
    except BaseException:
        discard(temp)
        raise
    fsync_dir(path.parent)


def discard(temp: Path) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        pass  # the original failure is the one to report


def is_temp(path: Path) -> str | None:
    """The target name when `path` is a temp file of write_temp(), else None."""
    match = TEMP_NAME.match(path.name)
    return match["target"] if match else None


def fsync_dir(path: str | Path) -> None:
    """Make the renames and deletions in a folder durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
