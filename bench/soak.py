"""Soak: `framecull run` on the live synthetic camera, with config-changing reloads and kill -9s.

    .venv/bin/python bench/soak.py --seconds 300 --reloads 250 --kills 20

Prints, every --sample seconds, the daemon's RSS, threads and open fds, and the frames kept and
lost so far; at the end what the kills left: partial files, images without sidecar, images
without a memory row (after a last clean start and stop). Reloads alternate
[gates.change] threshold between 25 and 26, so each one builds a new runner. Kills happen at
random moments (seed 1) and the daemon is started again at once, as systemd would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """camera = "soak"
[source]
kind = "synthetic"
fps = 5
[gates.change]
threshold = {threshold}
[gates.novelty]
min_distance = 0.02
min_region_distance = 0.1
[store]
root = "{root}"
"""


def proc(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def read_status(root: Path) -> dict:
    try:
        return json.loads((root / "status.json").read_text())
    except (OSError, ValueError):
        return {}


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = open(log, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "framecull", "run", "--config", str(config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self, root: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while read_status(root).get("pid") != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"framecull run did not start (exit {self.process.poll()}); see the log")
            time.sleep(0.1)


def integrity(root: Path) -> dict:
    frames = root / "frames"
    images = {p.relative_to(root).as_posix()[:-4] for p in frames.glob("*/*.jpg")}
    sidecars = {p.relative_to(root).as_posix()[:-5] for p in frames.glob("*/*.json")}
    partial = [p for p in frames.rglob("*") if p.is_file() and p.suffix not in (".jpg", ".json")]
    with sqlite3.connect(root / "memory.sqlite") as db:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = {file[:-4] for (file,) in db.execute("SELECT file FROM kept")}
    return {"images": len(images), "partial": len(partial), "without_sidecar": len(images - sidecars),
            "without_memory_row": len(images - rows), "memory_rows": len(rows), "sqlite": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--sample", type=float, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="framecull-soak-"))
    root, config, log = work / "root", work / "soak.toml", work / "daemon.log"
    threshold = 25
    config.write_text(CONFIG.format(threshold=threshold, root=root))
    rng = random.Random(1)
    start = time.monotonic()
    reload_at = [start + args.seconds * (i + 1) / (args.reloads + 1) for i in range(args.reloads)]
    kill_at = sorted(start + rng.uniform(0.05, 0.95) * args.seconds for _ in range(args.kills))
    kept_before = lost_before = 0  # counted by processes killed before
    reloads = kills = 0
    daemon = Daemon(config, log)
    daemon.ready(root)
    print(f"{'s':>5} {'rss MB':>7} {'threads':>7} {'fds':>4} {'reloads':>7} {'kills':>5} {'frames':>6} "
          f"{'kept':>5} {'lost':>4}")
    next_sample = start
    while True:
        now = time.monotonic()
        if reload_at and now >= reload_at[0]:
            reload_at.pop(0)
            threshold = 51 - threshold  # 25 <-> 26: a changed config, a new runner
            config.write_text(CONFIG.format(threshold=threshold, root=root))
            daemon.process.send_signal(signal.SIGHUP)
            reloads += 1
        if kill_at and now >= kill_at[0]:
            kill_at.pop(0)
            status = read_status(root)
            kept_before += status.get("kept", 0)
            lost_before += status.get("lost", 0)
            daemon.process.kill()
            daemon.process.wait()
            kills += 1
            daemon = Daemon(config, log)
            daemon.ready(root)
        if now >= next_sample or now - start >= args.seconds:
            next_sample += args.sample
            status = read_status(root)
            p = proc(daemon.process.pid)
            print(f"{now - start:5.0f} {p['rss_mb']:7.1f} {p['threads']:7d} {p['fds']:4d} {reloads:7d} {kills:5d} "
                  f"{status.get('frames_in', 0):6d} {kept_before + status.get('kept', 0):5d} "
                  f"{lost_before + status.get('lost', 0):4d}", flush=True)
        if now - start >= args.seconds:
            break
        if daemon.process.poll() is not None:
            raise SystemExit(f"the daemon exited with {daemon.process.returncode}; see {log}")
        time.sleep(0.05)
    daemon.process.send_signal(signal.SIGTERM)
    rc = daemon.process.wait(60)
    last = Daemon(config, log)  # a clean start after the kills: what it repairs at open
    last.ready(root)
    last.process.send_signal(signal.SIGTERM)
    rc_last = last.process.wait(60)
    print(f"exit status at the end: {rc}, after a last clean start: {rc_last}")
    print("after the run:", json.dumps(integrity(root)))
    if args.keep:
        print(f"work folder: {work}")
    else:
        import shutil

        shutil.rmtree(work)
    return 0 if rc == rc_last == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
