"""What a running daemon reports: <root>/status.json (which `framecull status` reads back) and
optional Prometheus metrics, both fed by sinks of the runner's decisions."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path

from framecull.atomic import write_atomic
from framecull.pipeline import Decision

log = logging.getLogger("framecull.service")

LAST_DECISIONS = 20  # decisions kept in status.json
STATUS_FILE = "status.json"


class Tally:
    """A sink that counts decisions (kept, dropped by stage) and keeps the last few, across reloads."""

    def __init__(self) -> None:
        self.kept = 0
        self.dropped: Counter = Counter()
        self.last_kept: float | None = None
        self.decisions: deque = deque(maxlen=LAST_DECISIONS)

    def write(self, decision: Decision) -> None:
        self.decisions.append(decision.to_json())
        if decision.kept:
            self.kept += 1
            self.last_kept = decision.timestamp
        else:
            self.dropped[decision.stage] += 1

    def close(self) -> None:
        pass  # lives as long as the service, not as one runner


class Metrics:
    """A sink serving frames_total{stage}, kept_total, lost_total, last_kept_timestamp (prometheus-client)."""

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
        self._lost_counted = 0
        start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)

    def write(self, decision: Decision) -> None:
        self.frames.labels(decision.stage).inc()
        if decision.kept:
            self.kept.inc()
            self.last_kept.set(decision.timestamp)

    def count_lost(self, lost: int) -> None:
        self.lost.inc(max(0, lost - self._lost_counted))
        self._lost_counted = max(lost, self._lost_counted)

    def close(self) -> None:
        pass  # the endpoint lives as long as the service


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


def write_status(root: Path, status: dict) -> None:
    """status.json, atomically; a disk that refuses it costs a warning, never the daemon."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / STATUS_FILE, json.dumps(status, indent=1) + "\n")
    except OSError as exc:
        log.warning("cannot write %s: %s", root / STATUS_FILE, exc)


def read_status(root: Path) -> dict:
    """The daemon's last status.json (FileNotFoundError when it never ran there)."""
    return json.loads((Path(root) / STATUS_FILE).read_text())


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (datetime.now(timezone.utc) - then).total_seconds()
    return f"{iso} ({seconds:.0f} s ago)"


def format_status(status: dict) -> str:
    alive = "running" if running(int(status.get("pid", 0)) or -1) else "not running"
    source = status.get("source", {})
    lines = [
        f"camera {status['camera']}: pid {status.get('pid')} ({alive}), started {status.get('started')}",
        f"updated: {_age(status.get('updated'))}",
        f"frames in: {status['frames_in']}, kept: {status['kept']}, lost to storage: {status['lost']}",
        f"last kept: {_age(status.get('last_kept'))}",
        "dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(status.get("dropped", {}).items())) or "none"),
        f"source: {source.get('kind')} {source.get('uri', '')} - {source.get('state')}",
    ]
    if source.get("counters"):
        lines.append("source counters: " + ", ".join(f"{k} {v}" for k, v in source["counters"].items()))
    if status.get("thresholds"):
        lines.append("thresholds: " + ", ".join(f"{k} {v}" for k, v in status["thresholds"].items()))
    decisions = status.get("decisions", [])
    if decisions:
        lines.append(f"last {len(decisions)} decisions:")
        for d in decisions:
            when = datetime.fromtimestamp(d["timestamp"], timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            verdict = f"KEPT {d['path']}" if d["kept"] else f"dropped at {d['stage']}"
            lines.append(f"  #{d['index']} {when}Z {verdict}")
    return "\n".join(lines) + "\n"
