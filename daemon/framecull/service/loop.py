"""`framecull run`: the runner as a systemd service, one instance per camera.

The main loop consumes frames and is the only thread that touches the runner (and so the store
and the memory). A feeder thread reads the source into a one-frame queue, so the loop wakes up
every `tick` seconds even when no frame comes (a camera reconnecting, a stalled stream): it then
lets the runner close an open pacing window, writes the status, saves the index and pings the
watchdog.

systemd (sd_notify over NOTIFY_SOCKET):
  READY=1     once the config is valid, the store root usable, the model loaded, the memory open
              and the source opened; not waiting for a first frame: a camera that is offline
              at boot must neither hold up boot nor make systemd restart the service (the
              source reconnects inside the daemon, STATUS says "waiting for camera")
  STATUS=...  a one-line summary, every `status_interval` seconds
  WATCHDOG=1  every WATCHDOG_USEC / 2, and only while frames flow or a live source is making
              progress reconnecting: a hung pipeline or a hung decode stops the pings and
              systemd restarts the service
  STOPPING=1  when shutting down

Exit status: 0 when stopped (or a recorded source ended); 78 (EX_CONFIG, which the unit does
not restart) for what no restart can fix: a bad config, an instance/camera mismatch, an
unusable store root, a source that cannot exist (a bad URL, a missing file or module), a
recording that breaks; 1 when a live source breaks in a way that is not the camera being away
(systemd restarts it). A camera that is away is no error: it is retried inside, forever.

Signals: SIGTERM/SIGINT finish the current frame, flush the pacing window, save the index, close
the source and exit 0. SIGHUP reloads the config file: an invalid one is logged and ignored
(the unit's ExecReload= checks it first, so `systemctl reload` fails on it); a valid one
replaces the runner (the old one is flushed and closed, the new one opens the same memory from
disk, so nothing is forgotten, and its gates start with a fresh reference frame); a changed
[source] reopens the source.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime
from pathlib import Path

from framecull import checks
from framecull.config import EX_CONFIG, Config, ConfigError, load_config
from framecull.memory import release_freed_memory
from framecull.runner import Runner
from framecull.service.feeder import END, Feeder, open_camera
from framecull.service.logs import KeptLog, setup_logging
from framecull.service.notify import Watchdog, notify
from framecull.service.status import Tally, start_metrics, write_status
from framecull.store import utc_text

log = logging.getLogger("framecull.service")

STATUS_INTERVAL = 5.0  # seconds between STATUS= updates and status.json writes
SAVE_INTERVAL = 300.0  # seconds between saves of the FAISS index
STALL_AFTER = 300.0  # no frame for this long: log loudly (then again every as long)
TICK = 0.5  # longest wait for a frame before the loop does its periodic work


class Service:
    """`instance`: the systemd instance name (framecull@<instance>): the config's camera must be
    it or absent (checks.bind_instance)."""

    def __init__(self, config_path: str | Path, instance: str | None = None,
                 status_interval: float = STATUS_INTERVAL, save_interval: float = SAVE_INTERVAL,
                 stall_after: float = STALL_AFTER, tick: float = TICK) -> None:
        self.config_path = Path(config_path)
        self.instance = instance
        self.status_interval = status_interval
        self.save_interval = save_interval
        self.stall_after = stall_after
        self.tick = tick
        self.watchdog = Watchdog()
        self.config: Config | None = None
        self.runner: Runner | None = None
        self.feeder: Feeder | None = None
        self.tally = Tally()
        self.kept_log = KeptLog()
        self.metrics = None
        self.started = time.time()
        self.frames_in = 0
        self.not_written_before = 0  # counted by runners replaced on reload
        self.not_remembered_before = 0
        self.reloads = 0
        self.source_ended = False
        self._stop = False
        self._reload = False
        self._ready = False
        self._last_frame: float | None = None  # monotonic
        self._live_progress: tuple | None = None
        self._live_progress_at = self._started_mono = time.monotonic()
        self._stall_logged: float | None = None
        self._next_status = self._next_save = 0.0

    def _runner(self, config: Config) -> Runner:
        """A runner for `config`; ConfigError for a model or memory that cannot be used."""
        sinks = [self.tally, self.kept_log] + ([self.metrics] if self.metrics else [])
        return Runner(config, sinks=sinks)

    def load(self) -> Config:
        """The config file, bound to the instance, with every permanent problem refused (ConfigError)."""
        config = checks.bind_instance(load_config(self.config_path), self.instance, str(self.config_path))
        checks.check(config, str(self.config_path))
        return config

    @property
    def not_written(self) -> int:
        return self.not_written_before + (self.runner.not_written if self.runner else 0)

    @property
    def not_remembered(self) -> int:
        return self.not_remembered_before + (self.runner.not_remembered if self.runner else 0)

    @property
    def lost(self) -> int:
        return self.not_written + self.not_remembered

    # -- running ------------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):  # first: a signal during start-up is not lost
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        self.config = self.load()
        setup_logging(self.config.camera, verbose=logging.getLogger().level == logging.DEBUG)
        self.metrics = start_metrics(self.config.service.metrics)
        self.runner = self._runner(self.config)
        try:
            self.feeder = Feeder(open_camera(self.config), self.config.source.fps)
        except BaseException:
            self.runner.close()
            raise
        log.info("ready: source %s %s, store %s", self.config.source.kind, self.config.source.uri or "(default)",
                 self.config.store_root)
        self._ready = True
        notify(f"READY=1\nSTATUS={self.summary()}")
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
                # A camera reconnects by itself, so this is a fault a restart may cure; a recording
                # that breaks breaks again (78: systemd does not restart on it).
                return 1 if self.feeder.source.live else EX_CONFIG
            if item is not None:
                self._last_frame = now
                self.frames_in += 1
                self.runner.push(item)
                if self.frames_in == 1:
                    log.info("first frame in")
                    self._next_status = 0.0  # say "streaming" at once
            else:
                self.runner.idle()  # a stalled camera must not hold a pacing window open
            if self.metrics:
                self.metrics.count_lost(self.lost)
            self._periodic(now)
        return 0

    # -- periodic work ------------------------------------------------------------------------

    def _periodic(self, now: float) -> None:
        self.watchdog.ping(now, self._healthy(now))
        if now >= self._next_status:
            self._next_status = now + self.status_interval
            notify(f"STATUS={self.summary()}")
            write_status(self.config.store_root, self.status())
        if now >= self._next_save:
            if self._next_save:
                self.runner.save()
            self._next_save = now + self.save_interval
        idle = self._idle(now)
        if idle >= self.stall_after and not self.source_ended:
            if self._stall_logged is None or now - self._stall_logged >= self.stall_after:
                self._stall_logged = now
                log.error("NO FRAMES for %.0f min from the %s source (%s)", idle / 60, self.config.source.kind,
                          self.source_state(now), extra={"STAGE": "source"})
        elif idle < self.stall_after:
            self._stall_logged = None

    def _idle(self, now: float) -> float:
        return now - (self._last_frame if self._last_frame is not None else self._started_mono)

    def _healthy(self, now: float) -> bool:
        """Frames flow, or a live source makes progress reconnecting (its counters move within
        the longest legitimate wait: an open timeout plus the longest backoff)."""
        if self._last_frame is not None and now - self._last_frame < max(2 * self.watchdog.interval, 2.0):
            return True
        counters = self.feeder.source.counters
        if counters is None:
            return False
        progress = (counters.frames, counters.reconnects, counters.last_error)
        if progress != self._live_progress:
            self._live_progress, self._live_progress_at = progress, now
        s = self.config.source
        return now - self._live_progress_at < 3 * s.timeout + s.reconnect_max + 5

    def source_state(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self.source_ended:
            return "ended"
        if self._last_frame is None:
            state = "waiting for camera" if self.feeder and self.feeder.source.live else "starting"
        elif now - self._last_frame < max(5.0, 2 * self.tick):
            state = "streaming"
        elif now - self._last_frame >= self.stall_after:
            state = f"stalled {int((now - self._last_frame) / 60)} min"
        else:
            state = "waiting"
        counters = self.feeder.source.counters if self.feeder else None
        if state != "streaming" and counters is not None and counters.last_error:
            state += f", reconnecting ({counters.reconnects} attempts; {counters.last_error})"
        return state

    def summary(self) -> str:
        t = self.tally
        last = datetime.fromtimestamp(t.last_kept).strftime("%Y-%m-%d %H:%M:%S") if t.last_kept else "never"
        lost = f", {self.lost} lost to storage" if self.lost else ""
        return f"{self.frames_in} frames in, {t.kept} kept{lost}, last kept {last}, source {self.source_state()}"

    def status(self) -> dict:
        source = {"kind": self.config.source.kind, "uri": self.config.source.uri, "state": self.source_state()}
        if self.feeder is not None and self.feeder.source.live:
            source["counters"] = self.feeder.source.stats()
        return {
            "camera": self.config.camera,
            "pid": os.getpid(),
            "config": str(self.config_path),
            "started": utc_text(self.started),
            "updated": utc_text(time.time()),
            "ready": self._ready,
            "frames_in": self.frames_in,
            "kept": self.tally.kept,
            "dropped": dict(self.tally.dropped),
            "lost": self.lost,
            "lost_not_written": self.not_written,
            "lost_not_remembered": self.not_remembered,
            "last_kept": utc_text(self.tally.last_kept),
            "reloads": self.reloads,
            "thresholds": {"change": self.config.gates.change.threshold,
                           "min_changed": self.config.gates.change.min_changed,
                           "min_distance": self.config.gates.novelty.min_distance},
            "source": source,
            "summary": self.summary(),
            "decisions": list(self.tally.decisions),
        }

    # -- reload and shutdown ------------------------------------------------------------------

    def reload(self) -> None:
        try:
            config = self.load()
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc, extra={"STAGE": "config"})
            return
        if config == self.config:
            log.info("reload: %s unchanged", self.config_path)
            return
        old_runner, old_config = self.runner, self.config
        old_runner.flush()
        old_runner.save()  # the new runner opens the memory from disk
        try:
            runner = self._runner(config)
        except Exception as exc:  # ConfigError (model, memory), or the store root unusable
            log.error("reload refused, keeping the running config: %s", exc, extra={"STAGE": "config"})
            return
        old_runner.close()
        self.not_written_before += old_runner.not_written
        self.not_remembered_before += old_runner.not_remembered
        self.runner, self.config = runner, config
        del old_runner  # freed now (Runner.close breaks its cycle with the pipeline)
        release_freed_memory()  # the pages two runners side by side needed during the reload
        if config.source != old_config.source:
            log.info("reload: [source] changed: reopening it")
            self.feeder.close()
            try:
                source = open_camera(config)
            except Exception as exc:
                log.error("reload: cannot open the new source (%s): going back to the old one", exc)
                self.config = config.model_copy(update={"source": old_config.source})
                source = open_camera(self.config)
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
        if self.runner is None:
            return
        try:
            self.runner.flush()
        finally:
            if self.feeder is not None:
                self.feeder.close()
            self.runner.close()  # saves the index
            write_status(self.config.store_root, self.status())
            log.info("stopped: %s", self.summary())
