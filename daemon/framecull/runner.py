"""The one loop: frames -> pipeline -> store + memory, decisions to sinks.

Every entry point drives frames through a Runner: `framecull run` (the service), `replay`,
`preview`, `calibrate`, the benchmarks and the tests. So what a user tunes offline is exactly
what the device does.

    with Runner(config, root=out, sinks=[JsonlSink(out / "decisions.jsonl")]) as runner:
        runner.run(frames)

Failure policy, one for all: a kept frame the store cannot write (disk full, read-only) ends at
stage "store" and counts as not written; a kept frame the memory cannot commit (SQLite error)
stays kept and counts as not remembered. Both are logged (at most one line per minute per kind,
with the count), the run goes on, and nothing already kept is touched. A store root that cannot
be used at all raises StoreRootError at start (exit 78).

At start, kept frames on disk that a gate was never told of (the process was killed between the
store's rename and the memory's commit; a memory lost, or damaged and moved aside) are told now
through the same on_kept, so every stored image has its memory row.

A sink is anything with `write(decision)` and `close()`; decisions reach the sinks in input
order, each once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Protocol

from framecull.config import Config
from framecull.frame import Frame
from framecull.gates import Gate
from framecull.pipeline import Decision, Pipeline, build_gates
from framecull.store import Store, StoreError, capture_time

log = logging.getLogger("framecull.runner")

ERROR_EVERY = 60.0  # seconds between two log lines about the same kind of storage error
BUDGET_DAYS = 2.0  # kept frames read back for the budgets: their rolling day, and a day of clock error


class Sink(Protocol):
    def write(self, decision: Decision) -> None: ...

    def close(self) -> None: ...


class Runner:
    """Builds the store and the pipeline from a config and drives frames through them.

    root     where frames/ and the memory live (default: the config's store root)
    write    False: judge and remember, but write no frames (preview, calibrate)
    gates    the gates to use instead of the configured ones (calibrate's cached embeddings)
    """

    def __init__(self, config: Config, root: Path | None = None, *, write: bool = True,
                 sinks: Iterable[Sink] = (), gates: list[Gate] | None = None) -> None:
        self.config = config
        self.root = Path(root) if root is not None else config.store_root
        self.sinks = list(sinks)
        self.store = Store.from_config(config, self.root) if write else None
        try:
            gates = build_gates(config, self.root) if gates is None else gates
            images = self.store.images() if self.store is not None else []
        except BaseException:
            if self.store is not None:
                self.store.close()  # its lock on the root
            raise
        budgets = config.budget.max_per_hour or config.budget.max_per_day
        self.pipeline = Pipeline(gates, config.pacing, config.budget, self._commit,
                                 kept_before=kept_before(gates, images) if budgets else ())
        self.frames_in = 0
        self.kept = 0
        self.dropped: Counter = Counter()  # stage -> frames that ended there without being kept
        self.not_written = 0  # chosen to keep, but the store could not write them
        self.not_remembered = 0  # written, but the memory could not commit them
        self.last_kept: float | None = None  # capture time
        self.started = time.perf_counter()
        self._last_push = time.monotonic()
        self._last_error: dict[str, float] = {}
        self._closed = False
        if self.store is not None:
            self._reconcile(images)

    @property
    def lost(self) -> int:
        return self.not_written + self.not_remembered

    # -- driving ------------------------------------------------------------------------------

    def push(self, frame: Frame) -> list[Decision]:
        """Judge one frame; the decisions final now go to the sinks and are returned."""
        self.frames_in += 1
        self._last_push = time.monotonic()
        return self._emit(self.pipeline.push(frame))

    def idle(self) -> list[Decision]:
        """Called when no frame came for a while (a live source stalled or reconnecting): closes an
        open pacing window once no frame arrived for min_interval, so its best frame is kept now."""
        if self.pipeline.pending and time.monotonic() - self._last_push > self.config.pacing.min_interval:
            return self.flush()
        return []

    def flush(self) -> list[Decision]:
        """Close the pacing window and emit what it held."""
        return self._emit(self.pipeline.flush())

    def run(self, frames: Iterable[Frame]) -> "Runner":
        """Push every frame, then flush. Returns the runner (its counters)."""
        for frame in frames:
            self.push(frame)
        self.flush()
        return self

    def save(self) -> None:
        """Save the memory's index now (the service does so every few minutes)."""
        try:
            self.pipeline.save()
        except Exception as exc:  # a full disk: the old index file stays valid, SQLite is the truth
            log.error("cannot save the memory index: %s", exc, extra={"STAGE": "memory"})

    def close(self) -> None:
        """Flush, save and close the memory, close the sinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            try:
                self.pipeline.close()
            except Exception as exc:  # the index is rebuilt from SQLite at the next start
                log.error("cannot save the memory index: %s", exc, extra={"STAGE": "memory"})
            for sink in self.sinks:
                sink.close()
            if self.store is not None:
                self.store.close()
            # The pipeline calls back self._commit: without this cycle a closed runner, with its
            # model session and index (native memory the collector cannot see), is freed as soon
            # as it is let go, not at a rare full collection.
            self.pipeline.commit = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inside -------------------------------------------------------------------------------

    def _emit(self, decisions: list[Decision]) -> list[Decision]:
        for d in decisions:
            if d.kept:
                self.kept += 1
                self.last_kept = d.timestamp
                log.debug("kept frame %d: %s", d.index, d.path, extra={"STAGE": d.stage})
            else:
                self.dropped[d.stage] += 1
            for sink in self.sinks:
                sink.write(d)
        return decisions

    def _commit(self, frame: Frame, decision: Decision) -> bool:
        """Store and remember a frame the pipeline chose; False when it could not be written."""
        if self.store is not None:
            try:
                decision.path = self.store.save(frame, decision)
            except StoreError as exc:
                self.not_written += 1
                decision.stage = "store"
                self._error("store", f"kept frame not written ({self.not_written} so far): {exc}")
                return False
        self._remember(self.pipeline.gates, frame, decision.path)
        return True

    def _remember(self, gates: list[Gate], frame: Frame, path: str | None) -> None:
        for gate in gates:
            try:
                gate.on_kept(frame, path)
            except (sqlite3.Error, OSError, RuntimeError, ValueError) as exc:
                # SQLite rolled back and the index is touched only after a commit: the memory stays
                # consistent and takes the next frame once the disk is back. The image stays kept.
                # ValueError: an embedding the memory refuses (NaN).
                self.not_remembered += 1
                self._error("memory", f"kept frame {path or frame.index} not remembered "
                                      f"({self.not_remembered} so far): {exc}")

    def _reconcile(self, images: list[Path]) -> None:
        for gate in self.pipeline.gates:
            for image in gate.forgotten(images):
                frame = self.store.load(image, self.config.source.analysis_width)
                if frame is not None:
                    self._remember([gate], frame, str(image))

    def _error(self, kind: str, message: str) -> None:
        # A full disk fails every write: one line a minute is enough for the journal.
        now = time.monotonic()
        if now - self._last_error.get(kind, -ERROR_EVERY) >= ERROR_EVERY:
            self._last_error[kind] = now
            log.error(message, extra={"STAGE": kind})


def kept_before(gates: list[Gate], images: list[Path]) -> list[float]:
    """Capture times of the frames kept in the last days, for the budgets: as the memory remembers
    them (frames pulled away by the server or deleted by max_bytes stay there), else from the names
    of the frames in the store (newest first, up to two days before the newest)."""
    for gate in gates:
        times = gate.kept_times(BUDGET_DAYS)
        if times is not None:
            return times
    times: list[float] = []
    for image in reversed(images):
        t = capture_time(image)
        if t is None:
            continue
        if times and t < times[0] - BUDGET_DAYS * 86400:
            break
        times.append(t)
    return times


# --- sinks ------------------------------------------------------------------------------------

class JsonlSink:
    """One JSON line per decision (what `framecull report` reads). A disk that refuses the lines
    costs the lines, not the run: they are counted and said once."""

    def __init__(self, path: Path, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a" if append else "w")
        self.lost = 0

    def write(self, decision: Decision) -> None:
        try:
            self.file.write(json.dumps(decision.to_json()) + "\n")
        except OSError as exc:
            self._lose(exc)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as exc:  # the last buffered lines
            self._lose(exc)
        if self.lost:
            log.error("%s: %d decision lines (or a buffer of them) not written", self.path, self.lost)

    def _lose(self, exc: OSError) -> None:
        if not self.lost:
            log.error("%s: cannot write decisions: %s", self.path, exc)
        self.lost += 1


class Collect:
    """Keeps every decision in a list (tests, benchmarks, calibrate)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def write(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def close(self) -> None:
        pass


class Progress:
    """A one-line progress bar with an ETA on stderr, only when stderr is a terminal."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()
        self.done = self.kept = 0
        self._started = self._last = time.monotonic()

    def write(self, decision: Decision) -> None:
        self.done += 1
        self.kept += decision.kept
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        if self.total:
            filled = int(30 * min(self.done, self.total) / self.total)
            eta = (now - self._started) / self.done * max(0, self.total - self.done)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} frames, "
                             f"{self.kept} kept, ETA {eta:.0f} s ")
        else:
            sys.stderr.write(f"\r{self.done} frames, {self.kept} kept ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
