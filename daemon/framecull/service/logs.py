"""Logging of the daemon: journald fields under systemd, stderr elsewhere, repeated errors rate-limited."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter

from framecull.pipeline import Decision

log = logging.getLogger("framecull.kept")

ERROR_EVERY = 60.0  # identical warnings and errors: at most one per this many seconds
MAX_KEYS = 256


class RateLimit(logging.Filter):
    """At most one identical warning or error (the same logger and text) every `every` seconds;
    the next one that passes says how many were suppressed."""

    def __init__(self, every: float = ERROR_EVERY) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple, float] = {}
        self._suppressed: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())  # the text, so each different reason gets through
        now = time.monotonic()
        if len(self._last) > MAX_KEYS:  # many different messages: forget the ones that passed long ago
            self._last = {k: t for k, t in self._last.items() if now - t < self.every}
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


class KeptLog:
    """A runner sink: one INFO line per kept frame. In the journal it carries STAGE (the stage
    that decided), FRAME (the stored image), INDEX (the frame's number) and every score
    as SCORE_<GATE>_<NAME>, so `journalctl -u framecull@cam STAGE=novelty` lists what was kept."""

    def write(self, decision: Decision) -> None:
        if not decision.kept:
            return
        fields = {"STAGE": decision.stage, "INDEX": decision.index, "FRAME": decision.path or ""}
        shown = []
        for gate, scores in decision.scores.items():
            for name, value in scores.items():
                if value is None:
                    continue
                if isinstance(value, float):
                    value = round(value, 4)
                fields[_field(f"SCORE_{gate}_{name}")] = value
                shown.append(f"{gate}.{name}={value}")
        log.info("kept frame %d (%s): %s [%s]", decision.index, decision.stage, decision.path, " ".join(shown),
                 extra=fields)

    def close(self) -> None:
        pass


def _field(name: str) -> str:
    """A journal field name: upper-case letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in name.upper())
