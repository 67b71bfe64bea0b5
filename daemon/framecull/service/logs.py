"""Logging of the daemon: journald fields under systemd, stderr elsewhere, repeated errors rate-limited."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter

ERROR_EVERY = 60.0  # identical warnings and errors: at most one per this many seconds


class RateLimit(logging.Filter):
    """At most one warning or error per message (its format string) every `every` seconds; the
    next one that passes says how many were suppressed."""

    def __init__(self, every: float = ERROR_EVERY) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple, float] = {}
        self._suppressed: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if key in self._last and now - self._last[key] < self.every:
            self._suppressed[key] += 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} more like this suppressed)"
            record.args = None
        return True


def setup_logging(camera: str, verbose: bool = False) -> None:
    """journald (with CAMERA and STAGE fields) under systemd when systemd-python is there, else stderr."""
    handler = None
    under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    if under_systemd:
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="framecull", CAMERA=camera)
        except ImportError:
            pass
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        when = "" if under_systemd else "%(asctime)s "  # the journal stamps stderr lines itself
        handler.setFormatter(logging.Formatter(f"{when}%(levelname)s {camera} %(name)s: %(message)s"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
