"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

    write_atomic(path, b"bytes")                       bytes, or str (written as UTF-8)
    write_atomic(path, lambda temp: np.savez(...))     a writer that writes to a path it is given

The data goes to a temp file (beside the target, or in `temp_dir`, which must be on the same
filesystem), is flushed and fsynced, renamed over the target, and the target's folder is
fsynced, so the new file survives a power cut once write_atomic returns. On any failure the
temp file is removed, the old target is left as it was, and the exception is raised: logging
it (or not) is the caller's choice.

Temp files are named `<target name>.tmp<pid>.<random>`; a crash can leave one behind, so an
owner of a folder removes `<name>.tmp*` at start.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, data: bytes | str | Callable[[Path], None],
                 temp_dir: str | Path | None = None) -> None:
    """Replace `path` with `data`: bytes, text (UTF-8), or a writer called with the temp file's path."""
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
        os.replace(temp, path)
    except BaseException:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass  # the original failure is the one to report
        raise
    fsync_dir(path.parent)


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
