"""`framecull status`: what a running daemon wrote to <root>/status.json, readable."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path


def read_status(root: Path) -> dict:
    """The daemon's last status.json (FileNotFoundError when it never ran there)."""
    return json.loads((Path(root) / "status.json").read_text())


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
