"""`framecull run`: the pipeline as a systemd service, one instance per camera.

The main loop consumes frames and is the only thread that touches the pipeline, the store and
the memory. A feeder thread reads the source into a one-frame queue, so the loop wakes up every
`tick` seconds even when no frame comes (a camera reconnecting, a stalled stream): it then
closes an open pacing window, writes the status, saves the index and pings the watchdog.

systemd (sd_notify over NOTIFY_SOCKET):
  READY=1     once the config is valid, the model loaded, the memory open and a first frame in
  STATUS=...  a one-line summary, every `status_interval` seconds
  WATCHDOG=1  every WATCHDOG_USEC / 2, from the loop, and only while frames flow or a live
              source is making progress reconnecting: a hung pipeline or a hung decode stops
              the pings and systemd restarts the service
  STOPPING=1  when shutting down

Signals: SIGTERM/SIGINT finish the current frame, flush the pacing window, save the index, close
the source and exit 0. SIGHUP reloads the config file: an invalid one is logged and ignored; a
valid one replaces the pipeline (the old one is saved and closed, the new one opens the same
memory from disk, so nothing is forgotten, and its gates start with a fresh reference frame);
a changed [source] reopens the source.

<root>/status.json (written atomically every `status_interval` s) is what `framecull status` reads.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path

from framecull.config import Config, ConfigError, load_config
from framecull.pipeline import Decision, Pipeline, build_pipeline
from framecull.sources import Source, iter_frames, open_source
from framecull.store import Store

log = logging.getLogger("framecull.service")

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates and status.json writes
SAVE_INTERVAL = 300.0  # seconds between saves of the FAISS index
STALL_AFTER = 300.0  # no frame for this long: log loudly (then again every as long)
ERROR_EVERY = 60.0  # identical warnings and errors: at most one per this many seconds
LAST_DECISIONS = 20  # decisions kept in status.json
TICK = 0.5  # longest wait for a frame before the loop does its periodic work


# --- sd_notify ---------------------------------------------------------------------------

def notify(message: str) -> bool:
    """Send one sd_notify message; False when not running under systemd (no NOTIFY_SOCKET)."""
    try:
        from systemd import daemon
    except ImportError:
        daemon = None
    if daemon is not None:
        return bool(daemon.notify(message))
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


# --- logging -----------------------------------------------------------------------------

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


# --- the source, read in a thread ----------------------------------------------------------

END = object()  # the source has no more frames


class Feeder:
    """Reads a source in a thread into a one-frame queue: get() never blocks longer than asked."""

    def __init__(self, source: Source, fps: float) -> None:
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fps,), name="framecull-feeder", daemon=True)
        self.thread.start()

    def _run(self, fps: float) -> None:
        try:
            for frame in iter_frames(self.source, fps):
                if not self._put(frame):
                    return
            self._put(END)
        except Exception as exc:  # a source that breaks: the loop logs it and exits
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def get(self, timeout: float):
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        live = hasattr(self.source, "counters")
        if live:
            self.source.close()  # thread-safe: ends a frames() that waits for the camera
        self.thread.join(3.0)
        if not live:
            self.source.close()


# --- optional Prometheus metrics -----------------------------------------------------------

class Metrics:
    """frames_total{stage}, kept_total, lost_total, last_kept_timestamp (prometheus-client)."""

    def __init__(self, address: str) -> None:
        from prometheus_client import CollectorRegistry, Counter as PCounter, Gauge, start_http_server

        host, _, port = address.rpartition(":")
        registry = CollectorRegistry()
        self.frames = PCounter("framecull_frames", "Frames judged, by the stage that ended them", ["stage"],
                               registry=registry)
        self.kept = PCounter("framecull_kept", "Frames kept", registry=registry)
        self.lost = PCounter("framecull_lost", "Kept frames lost to storage (not written or not remembered)",
                             registry=registry)
        self.last_kept = Gauge("framecull_last_kept_timestamp", "Capture time of the last kept frame",
                               registry=registry)
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)


def start_metrics(address: str) -> Metrics | None:
    if not address:
        return None
    try:
        return Metrics(address)
    except ImportError:
        log.warning("[service] metrics = %r, but prometheus-client is not installed: running without metrics "
                    "(pip install prometheus-client)", address)
    except (OSError, ValueError) as exc:
        log.warning("[service] metrics = %r: cannot serve metrics there (%s): running without", address, exc)
    return None


# --- the service ---------------------------------------------------------------------------

def _utc(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class Service:
    def __init__(self, config_path: str | Path, status_interval: float = STATUS_INTERVAL,
                 save_interval: float = SAVE_INTERVAL, stall_after: float = STALL_AFTER,
                 tick: float = TICK) -> None:
        self.config_path = Path(config_path)
        self.status_interval = status_interval
        self.save_interval = save_interval
        self.stall_after = stall_after
        self.tick = tick
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process
        self.watchdog_interval = usec / 2e6 if usec > 0 else 0.0
        self.config: Config | None = None
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.feeder: Feeder | None = None
        self.metrics: Metrics | None = None
        # counters of this run
        self.started = time.time()
        self.frames_in = 0
        self.kept = 0
        self.dropped: Counter = Counter()
        self.unremembered = 0  # kept frames written to disk but not committed to the memory
        self.lost_before = 0  # lost by stores replaced on reload
        self.last_kept: float | None = None
        self.decisions: deque = deque(maxlen=LAST_DECISIONS)
        self.reloads = 0
        self._lost_counted = 0  # lost frames already added to the metrics
        self.source_ended = False
        self._stop = False
        self._reload = False
        self._ready = False
        self._last_frame: float | None = None  # monotonic
        self._live_progress: tuple | None = None
        self._live_progress_at = self._started_mono = time.monotonic()
        self._stall_logged: float | None = None
        self._next_status = self._next_save = self._next_ping = 0.0

    # -- building ---------------------------------------------------------------------------

    def _build(self, config: Config) -> tuple[Store, Pipeline]:
        store = Store.from_config(config)
        pipeline = build_pipeline(config, store)  # ConfigError for a model or memory that cannot be used
        self._guard_memory(pipeline)
        return store, pipeline

    def _guard_memory(self, pipeline: Pipeline) -> None:
        """A kept frame the memory cannot commit (disk full, read-only) is counted, not fatal.
        SQLite rolls the transaction back and the index is only touched after a commit, so the
        memory stays consistent and takes the next kept frame once space is back. The image
        stays in frames/ (it was kept), unremembered: a frame like it may be kept again."""
        for gate in pipeline.gates:
            on_kept = gate.on_kept

            def guarded(frame, path, on_kept=on_kept, stage=gate.name):
                try:
                    on_kept(frame, path)
                except (sqlite3.Error, OSError, RuntimeError) as exc:
                    self.unremembered += 1
                    log.error("kept frame %s not remembered (%d so far): %s", path, self.unremembered, exc,
                              extra={"STAGE": stage})

            gate.on_kept = guarded

    @property
    def lost(self) -> int:
        return self.lost_before + (self.store.lost if self.store else 0) + self.unremembered

    # -- running ------------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):  # first: a signal during start-up is not lost
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.config = load_config(self.config_path)
        setup_logging(self.config.camera, verbose=logging.getLogger().level == logging.DEBUG)
        self.store, self.pipeline = self._build(self.config)
        source = open_source(self.config)
        self.feeder = Feeder(source, self.config.source.fps)
        self.metrics = start_metrics(self.config.service.metrics)
        log.info("started: source %s %s, store %s", self.config.source.kind, self.config.source.uri,
                 self.config.store_root)
        status = 0
        try:
            status = self._loop()
        finally:
            self._shutdown()
        return status

    def _on_stop(self, signum, frame) -> None:
        self._stop = True

    def _on_reload(self, signum, frame) -> None:
        self._reload = True

    def _loop(self) -> int:
        while not self._stop:
            if self._reload:
                self._reload = False
                self.reload()
            item = self.feeder.get(self.tick)
            now = time.monotonic()
            if item is END:
                log.info("the source ended after %d frames", self.frames_in)
                self.source_ended = True
                return 0
            if isinstance(item, Exception):
                log.error("the source failed: %s: %s", type(item).__name__, item, extra={"STAGE": "source"})
                return 1
            if item is not None:
                self._last_frame = now
                self.frames_in += 1
                self._record(self.pipeline.push(item))
                if not self._ready:
                    self._ready = True
                    notify("READY=1")
                    log.info("ready: first frame in")
            elif self.pipeline.pending and self._idle(now) > self.config.gates.novelty.min_interval:
                self._record(self.pipeline.flush())  # a stalled camera must not hold a window open
            self._periodic(now)
        return 0

    def _idle(self, now: float) -> float:
        return now - (self._last_frame if self._last_frame is not None else self._started_mono)

    def _record(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.decisions.append(d.to_json())
            if d.kept:
                self.kept += 1
                self.last_kept = d.timestamp
                log.debug("kept frame %d: %s", d.index, d.path, extra={"STAGE": d.stage})
            else:
                self.dropped[d.stage] += 1
            if self.metrics:
                self.metrics.frames.labels(d.stage).inc()
                if d.kept:
                    self.metrics.kept.inc()
                    self.metrics.last_kept.set(d.timestamp)
        if self.metrics:
            lost = self.lost
            self.metrics.lost.inc(max(0, lost - self._lost_counted))
            self._lost_counted = lost

    # -- periodic work ------------------------------------------------------------------------

    def _periodic(self, now: float) -> None:
        if self.watchdog_interval and now >= self._next_ping and self._healthy(now):
            notify("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval
        if now >= self._next_status:
            self._next_status = now + self.status_interval
            notify(f"STATUS={self.summary()}")
            self.write_status()
        if now >= self._next_save:
            if self._next_save:
                self._save_index()
            self._next_save = now + self.save_interval
        idle = self._idle(now)
        if idle >= self.stall_after and not self.source_ended:
            if self._stall_logged is None or now - self._stall_logged >= self.stall_after:
                self._stall_logged = now
                log.error("NO FRAMES for %.0f min from the %s source (%s)", idle / 60, self.config.source.kind,
                          self.source_state(now), extra={"STAGE": "source"})
        elif idle < self.stall_after:
            self._stall_logged = None

    def _healthy(self, now: float) -> bool:
        """Frames flow, or a live source makes progress reconnecting (its counters move within
        the longest legitimate wait: an open timeout plus the longest backoff)."""
        if self._last_frame is not None and now - self._last_frame < max(2 * self.watchdog_interval, 2.0):
            return True
        counters = getattr(self.feeder.source, "counters", None)
        if counters is None:
            return False
        progress = (counters.frames, counters.reconnects, counters.last_error)
        if progress != self._live_progress:
            self._live_progress, self._live_progress_at = progress, now
        s = self.config.source
        return now - self._live_progress_at < 3 * s.timeout + s.reconnect_max + 5

    def _save_index(self) -> None:
        try:
            self.pipeline.save()
        except Exception as exc:  # a full disk: the old index file stays valid
            log.error("cannot save the memory index: %s", exc, extra={"STAGE": "memory"})

    def source_state(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self.source_ended:
            return "ended"
        if self._last_frame is None:
            state = "starting"
        elif now - self._last_frame < max(5.0, 2 * self.tick):
            state = "streaming"
        elif now - self._last_frame >= self.stall_after:
            state = f"stalled {int((now - self._last_frame) / 60)} min"
        else:
            state = "waiting"
        counters = getattr(self.feeder.source, "counters", None) if self.feeder else None
        if state != "streaming" and counters is not None and counters.last_error:
            state += f", reconnecting ({counters.reconnects} attempts; {counters.last_error})"
        return state

    def summary(self) -> str:
        last = datetime.fromtimestamp(self.last_kept).strftime("%Y-%m-%d %H:%M:%S") if self.last_kept else "never"
        lost = f", {self.lost} lost to storage" if self.lost else ""
        return f"{self.frames_in} frames in, {self.kept} kept{lost}, last kept {last}, source {self.source_state()}"

    def status(self) -> dict:
        source = {"kind": self.config.source.kind, "uri": self.config.source.uri, "state": self.source_state()}
        stats = getattr(self.feeder.source, "stats", None) if self.feeder else None
        if stats is not None:
            source["counters"] = stats()
        return {
            "camera": self.config.camera,
            "pid": os.getpid(),
            "config": str(self.config_path),
            "started": _utc(self.started),
            "updated": _utc(time.time()),
            "ready": self._ready,
            "frames_in": self.frames_in,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "lost": self.lost,
            "lost_not_written": self.lost_before + (self.store.lost if self.store else 0),
            "lost_not_remembered": self.unremembered,
            "last_kept": _utc(self.last_kept),
            "reloads": self.reloads,
            "thresholds": {"change": self.config.gates.change.threshold,
                           "min_changed": self.config.gates.change.min_changed,
                           "min_distance": self.config.gates.novelty.min_distance},
            "source": source,
            "summary": self.summary(),
            "decisions": list(self.decisions),
        }

    def write_status(self) -> None:
        root = self.config.store_root
        path, temp = root / "status.json", root / f".status.json.tmp{os.getpid()}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(self.status(), indent=1) + "\n")
            os.replace(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            log.warning("cannot write %s: %s", path, exc)

    # -- reload and shutdown ------------------------------------------------------------------

    def reload(self) -> None:
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        if config == self.config:
            log.info("reload: %s unchanged", self.config_path)
            return
        self._record(self.pipeline.flush())
        try:
            self.pipeline.save()  # the new pipeline opens the memory from disk
            store, pipeline = self._build(config)
        except Exception as exc:  # ConfigError (model, memory), or the store root unusable
            log.error("reload refused, keeping the running config: %s", exc)
            return
        old_pipeline, old_store, old_config = self.pipeline, self.store, self.config
        self.lost_before += old_store.lost
        self.pipeline, self.store, self.config = pipeline, store, config
        old_pipeline.close()
        if config.source != old_config.source:
            log.info("reload: [source] changed: reopening it")
            self.feeder.close()
            try:
                source = open_source(config)
            except Exception as exc:
                log.error("reload: cannot open the new source (%s): going back to the old one", exc)
                self.config = config.model_copy(update={"source": old_config.source})
                source = open_source(self.config)
            self.feeder = Feeder(source, self.config.source.fps)
        if config.service.metrics != old_config.service.metrics:
            log.warning("reload: [service] metrics changes take effect at the next restart")
        self.reloads += 1
        log.info("reloaded %s: change threshold %s, min_changed %s, novelty min_distance %s",
                 self.config_path, config.gates.change.threshold, config.gates.change.min_changed,
                 config.gates.novelty.min_distance)
        self._next_status = 0.0  # show the new config at once

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        if self.pipeline is None:
            return
        try:
            self._record(self.pipeline.flush())
        finally:
            if self.feeder is not None:
                self.feeder.close()
            try:
                self.pipeline.close()  # saves the index
            except Exception as exc:  # a full disk: the index is rebuilt from SQLite at the next start
                log.error("cannot save the memory index at shutdown: %s", exc, extra={"STAGE": "memory"})
            self.write_status()
            log.info("stopped: %s", self.summary())
