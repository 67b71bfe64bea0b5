"""`framecull run` as systemd runs it, with real parts: the daemon is a subprocess, sd_notify
messages arrive on a real AF_UNIX datagram socket, signals are real, the store is real files
(on a real 2 MB tmpfs for the disk-full case), the live camera is the GStreamer RTSP server of
tests/rtsp_server.py, stopped and started again to make the camera vanish and come back.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import faiss
import pytest

import rtsp_server
from conftest import fill
from framecull.config import EX_CONFIG, load_config
from framecull.gates.novelty import load_embedder, open_memory
from framecull.sources import Source
from framecull.sources.synthetic import parking_lot
from net import free_port, wait_until

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only

FAST = {"FRAMECULL_STATUS_INTERVAL": "0.3", "FRAMECULL_SAVE_INTERVAL": "2", "FRAMECULL_STALL_AFTER": "3"}



class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; collects (time, message)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="fc-notify-", dir="/tmp")  # AF_UNIX paths are short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == message]

    def close(self) -> None:
        self._stop = True
        self.thread.join(1)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def write_config(path: Path, root: Path, source: str, extra: str = "") -> Path:
    path.write_text(f'camera = "cam1"\n{extra}\n[source]\n{source}\n[store]\nroot = "{root}"\n')
    return path


class Daemon:
    def __init__(self, config: Path, log: Path, notify: NotifySocket | None = None, **env: str) -> None:
        environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        environment.update(FAST, **env)
        if notify is not None:
            environment["NOTIFY_SOCKET"] = notify.path
        self.log = log
        self._log_file = open(log, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "framecull", "run", "--config", str(config)],
                                        stdout=self._log_file, stderr=subprocess.STDOUT, env=environment)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()


def read_status(root: Path) -> dict:
    try:
        return json.loads((root / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def sqlite_rows(root: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(root / "memory.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT id, file FROM kept ORDER BY id").fetchall()


def index_total(root: Path) -> int:
    return faiss.read_index(str(root / "index.faiss")).ntotal



@pytest.fixture
def server(rtsp_ready):
    server = rtsp_server.RtspServer(width=320, height=240, fps=15)
    server.port = free_port()  # known before it starts, so a test can start it late
    yield server
    server.stop()


def rtsp_source(server) -> str:
    return f'kind = "rtsp"\nuri = "{server.url}"\ntimeout = 2\nreconnect_max = 1'


# --- tests -----------------------------------------------------------------------------------


def test_a_bad_config_exits_78_with_the_reason(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('camera = "cam1"\n[gates.change]\nthreshold = 999\n')
    result = subprocess.run([sys.executable, "-m", "framecull", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_CONFIG
    assert "gates.change.threshold" in result.stderr


def test_ready_without_a_camera_then_status_watchdog_stopping(tmp_path, server, notify_socket):
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server))
    daemon = Daemon(config, tmp_path / "log", notify_socket, WATCHDOG_USEC="2000000")
    try:
        # No camera yet: READY (config, model and memory loaded), STATUS says why no frames come,
        # the watchdog is fed while the source reconnects: systemd neither waits nor restarts.
        assert wait_until(lambda: notify_socket.lines("READY=1"), 20), (notify_socket.messages, daemon.output())
        assert "waiting for camera" in notify_socket.lines("STATUS=")[0]
        assert wait_until(lambda: any("reconnecting" in s for s in notify_socket.lines("STATUS=")), 20), \
            (notify_socket.messages, daemon.output())
        assert notify_socket.lines("WATCHDOG=1")
        server.start()
        assert wait_until(lambda: any("streaming" in s for s in notify_socket.lines("STATUS=")), 20), daemon.output()
        ready = notify_socket.times("READY=1")[0]
        time.sleep(3.5)
        pings = [t for t in notify_socket.times("WATCHDOG=1") if t > ready]
        assert len(pings) >= 3, pings  # every WATCHDOG_USEC / 2 = 1 s
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.9 <= g <= 1.7 for g in gaps), gaps
        assert any("streaming" in s and "frames in" in s for s in notify_socket.lines("STATUS="))
        assert wait_until(lambda: read_status(root).get("kept", 0) > 0, 10)
        stopped = time.monotonic()
        assert daemon.stop() == 0, daemon.output()
        assert time.monotonic() - stopped < 5
    finally:
        daemon.stop()
    messages = notify_socket.lines()
    assert messages[-1] == "STOPPING=1" and messages.count("READY=1") == 1
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    rows = sqlite_rows(root)
    assert rows and index_total(root) == len(rows)  # saved at shutdown: no rebuild at the next start
    status = read_status(root)
    assert status["camera"] == "cam1" and status["kept"] == len(rows) and status["frames_in"] > 20
    shown = subprocess.run([sys.executable, "-m", "framecull", "status", "--root", str(root)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "not running" in shown.stdout and "frames in:" in shown.stdout


def test_sighup_reloads_a_good_config_and_keeps_the_old_one_when_the_new_is_bad(tmp_path, server, notify_socket):
    server.start()
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server))
    daemon = Daemon(config, tmp_path / "log", notify_socket)
    try:
        assert wait_until(lambda: read_status(root).get("kept", 0) > 0, 30), daemon.output()
        remembered = len(sqlite_rows(root))
        config.write_text(config.read_text().replace("[source]", "[gates.change]\nthreshold = 40\n[source]"))
        daemon.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: read_status(root).get("thresholds", {}).get("change") == 40.0, 10), daemon.output()
        assert read_status(root)["reloads"] == 1 and "reloaded" in daemon.output()
        assert len(sqlite_rows(root)) >= remembered  # the memory is kept across a reload

        config.write_text(config.read_text().replace("threshold = 40", "threshold = 999"))
        daemon.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in daemon.output(), 10), daemon.output()
        assert "gates.change.threshold" in daemon.output()
        before = read_status(root)["frames_in"]
        assert wait_until(lambda: read_status(root).get("frames_in", 0) > before + 10, 10)  # still running
        status = read_status(root)
        assert status["thresholds"]["change"] == 40.0 and status["reloads"] == 1
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    assert index_total(root) == len(sqlite_rows(root))


def test_a_camera_that_vanishes_and_comes_back_needs_no_restart(tmp_path, server, notify_socket):
    server.start()
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server))
    daemon = Daemon(config, tmp_path / "log", notify_socket)
    try:
        assert wait_until(lambda: read_status(root).get("frames_in", 0) > 10, 30), daemon.output()
        server.stop()
        assert wait_until(lambda: "reconnecting" in read_status(root).get("source", {}).get("state", ""), 15)
        assert any("reconnecting" in s for s in notify_socket.lines("STATUS="))
        assert wait_until(lambda: "NO FRAMES" in daemon.output(), 10)  # FRAMECULL_STALL_AFTER = 3 s: loud
        before = read_status(root)["frames_in"]
        server.start()  # same port
        assert wait_until(lambda: read_status(root).get("frames_in", 0) > before + 10, 20), daemon.output()
        assert read_status(root)["source"]["state"].startswith("streaming")
        assert daemon.process.poll() is None  # the same process all along
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_kill_9_at_random_moments_loses_no_kept_frame_and_corrupts_nothing(tmp_path):
    # The synthetic parking lot as a folder: a folder source stamps frames from the time it is
    # opened, so every run stores under new names (a replayed synthetic source would reuse them).
    scene = parking_lot()
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(scene.n_frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.resize(scene.render(i), (480, 270)),
                    [cv2.IMWRITE_PNG_COMPRESSION, 1])
    root = tmp_path / "root"
    # Keep every changed frame at once (no pacing): a commit is going on most of the time.
    config = write_config(tmp_path / "k.toml", root, f'kind = "folder"\nuri = "{folder}"',
                          "[lighting]\nmin_change = 0.0\n[pacing]\nmin_interval = 0\n"
                          "[gates.novelty]\nmin_distance = 0.0\nmin_region_distance = 0.0\n")
    rng = random.Random(7)
    kills = 0
    while kills < 20:
        daemon = Daemon(config, tmp_path / "log")
        # Once it runs (opening the folder reads every still's time first, ~2 s here): kills while
        # frames are being written and remembered.
        wait_until(lambda: read_status(root).get("pid") == daemon.process.pid or daemon.process.poll() is not None,
                   30)
        time.sleep(rng.uniform(0.0, 1.0))
        if daemon.process.poll() is None:
            daemon.process.kill()
            kills += 1
        daemon.process.wait(10)
        daemon._log_file.close()
        assert daemon.process.returncode in (0, -signal.SIGKILL), daemon.output()
    assert not list((root / "frames").glob("*/*.partial")) and not list((root / "frames").glob("*/.*"))
    # Stills are kept in their own format (here .png), camera frames as .jpg.
    images = {p.relative_to(root).as_posix() for p in (root / "frames").glob("*/*") if p.suffix != ".json"}
    sidecars = {p.relative_to(root).as_posix() for p in (root / "frames").glob("*/*.json")}
    stems, sidecar_stems = {i.rsplit(".", 1)[0] for i in images}, {s[:-5] for s in sidecars}
    assert images and stems <= sidecar_stems  # every image has its sidecar
    assert len(sidecar_stems - stems) <= kills  # a kill between the sidecar and its image
    rows = sqlite_rows(root)  # integrity_check ok
    remembered = {file for _, file in rows}
    assert remembered <= images  # memory never points at a missing image
    assert len(images - remembered) <= kills  # at most the frame being committed at each kill
    cfg = load_config(config)
    embedder = load_embedder(cfg.gates.novelty)
    with open_memory(cfg.gates.novelty, embedder, root) as memory:
        assert len(memory) == len(rows)  # the index agrees with SQLite after reopening
    # and the daemon still runs to the end on what the kills left
    last = Daemon(config, tmp_path / "log")
    assert last.process.wait(60) == 0, last.output()
    last._log_file.close()
    assert index_total(root) == len(sqlite_rows(root))


def test_a_full_disk_loses_frames_but_not_the_memory_and_writing_resumes(tmp_path, server, notify_socket, tiny_disk):
    server.start()
    root = tiny_disk / "root"
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server),
                          "[lighting]\nmin_change = 0.0\n[pacing]\nmin_interval = 0\n[gates.change]\nmin_changed = 0.0001\n"
                          "[gates.novelty]\nmin_distance = 0.0\nmin_region_distance = 0.0\n")
    ballast = tiny_disk / "ballast"
    ballast.write_bytes(b"\0" * 1200 * 1024)  # the daemon fills the rest of the 2 MB by itself
    daemon = Daemon(config, tmp_path / "log", notify_socket)
    try:
        assert wait_until(lambda: any("lost to storage" in s for s in notify_socket.lines("STATUS=")), 30), \
            daemon.output()
        assert "No space left on device" in daemon.output()
        time.sleep(1.0)
        assert daemon.process.poll() is None, daemon.output()
        remembered_when_full = len(sqlite_rows(root))  # integrity_check ok while the disk is full
        ballast.unlink()  # space is back
        status = {}

        def resumed() -> bool:
            nonlocal status
            status = read_status(root)
            return status.get("lost", 0) > 0 and status.get("kept", 0) > 0
        assert wait_until(resumed, 15), daemon.output()
        kept_then = status["kept"]
        assert wait_until(lambda: read_status(root).get("kept", 0) > kept_then + 5, 15), daemon.output()
        assert daemon.stop() == 0, daemon.output()
    finally:
        daemon.stop()
    rows = sqlite_rows(root)  # integrity_check ok
    assert len(rows) > remembered_when_full  # remembering resumed too
    assert all((root / file).exists() for _, file in rows)
    assert index_total(root) == len(rows)


class HangingSource(Source):
    """Delivers a few frames, then hangs as a stuck decoder does (until closed)."""

    kind = "hanging"
    frame_count = None

    def __init__(self, frames: int = 5) -> None:
        self.count = frames
        self.closed = threading.Event()

    def frames(self):
        from framecull.frame import Frame
        import numpy as np

        for i in range(self.count):
            yield Frame.from_bgr(i, time.time(), np.full((120, 160, 3), 10 * i, np.uint8), 160)
        self.closed.wait()

    def close(self) -> None:
        self.closed.set()


def test_a_hung_source_stops_the_watchdog_pings_so_systemd_restarts_it(tmp_path, notify_socket, monkeypatch):
    import framecull.service.loop as service

    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s while healthy
    monkeypatch.setattr(service, "open_camera", lambda config: HangingSource())
    monkeypatch.setattr(service, "setup_logging", lambda camera, verbose=False: None)
    config = write_config(tmp_path / "cam1.toml", tmp_path / "root", 'kind = "synthetic"',
                          "[gates.novelty]\nenabled = false\n")
    daemon = service.Service(config, status_interval=0.2, tick=0.1)
    stopper = threading.Timer(5.0, lambda: setattr(daemon, "_stop", True))
    stopper.start()
    try:
        assert daemon.run() == 0
    finally:
        stopper.cancel()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    ready = notify_socket.times("READY=1")[0]
    pings = notify_socket.times("WATCHDOG=1")
    assert daemon.frames_in == 5
    assert len([t for t in pings if t < ready + 1.5]) >= 5  # while frames were fresh
    assert not [t for t in pings if t > ready + 2.5]  # frames stopped 2 s ago: no more pings
    assert notify_socket.lines()[-1] == "STOPPING=1"


def test_prometheus_metrics_when_configured(tmp_path, server, notify_socket):
    pytest.importorskip("prometheus_client")
    import urllib.request

    server.start()
    root, port = tmp_path / "root", free_port()
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server),
                          f'[service]\nmetrics = "127.0.0.1:{port}"\n')
    daemon = Daemon(config, tmp_path / "log", notify_socket)
    try:
        assert wait_until(lambda: read_status(root).get("kept", 0) > 0, 30), daemon.output()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("framecull_")}
    assert values["framecull_kept_total"] >= 1 and values["framecull_lost_total"] == 0
    assert values["framecull_last_kept_timestamp"] > time.time() - 60
    assert any(k.startswith('framecull_frames_total{stage=') for k in values)


def test_a_memory_commit_that_fails_on_a_full_disk_is_counted_and_the_memory_stays_consistent(tmp_path, tiny_disk):
    import numpy as np

    from framecull.frame import Frame
    from framecull.runner import Runner

    root = tiny_disk / "root"
    config = load_config(write_config(tmp_path / "cam1.toml", root, 'kind = "synthetic"',
                                      "[pacing]\nmin_interval = 0\n[gates.novelty]\nmin_distance = 0.0\n"))
    rng = np.random.default_rng(0)
    frames = [Frame.from_bgr(i, 1000.0 + i, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), 160)
              for i in range(41)]
    with Runner(config, write=False) as runner:  # memory only: what fails here is SQLite
        runner.push(frames[0])
        ballast = fill(tiny_disk)
        for frame in frames[1:40]:
            runner.push(frame)  # does not raise
        assert runner.not_remembered > 0 and runner.kept == 40
        ballast.unlink()
        runner.push(frames[40])  # remembering resumes
    rows = sqlite_rows(root)  # integrity_check ok
    assert len(rows) == 41 - runner.not_remembered
    assert index_total(root) == len(rows)


# --- permanent problems, the live synthetic camera, reloads, signals at awkward moments -----------


def run_once(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framecull", *args, str(config)], capture_output=True, text=True,
                          timeout=60)


def test_what_no_restart_can_fix_exits_78_with_the_reason_and_check_config_finds_it(tmp_path, tiny_disk):
    afile = tmp_path / "afile"
    afile.write_text("")
    elsewhere = tiny_disk / "frames"
    elsewhere.mkdir()
    split = tmp_path / "split"
    (split / "tmp").mkdir(parents=True)
    (split / "frames").symlink_to(elsewhere)  # frames/ on another filesystem: renames would fail
    cases = {
        "bad URL": ('kind = "rtsp"\nuri = "rtsp://:99999/cam"', tmp_path / "r1", "source.uri"),
        "missing file": ('kind = "file"\nuri = "/nonexistent/clip.mp4"', tmp_path / "r2",
                         "video file '/nonexistent/clip.mp4' not found"),
        "missing module": ('kind = "picamera2"', tmp_path / "r3", "needs the Python module picamera2"),
        "unknown scene": ('kind = "synthetic"\nuri = "beach"', tmp_path / "r4", "unknown synthetic scene"),
        "root under a file": ('kind = "synthetic"', afile / "root", f"store.root: store root {afile / 'root'}"),
        "frames elsewhere": ('kind = "synthetic"', split, "is on another filesystem"),
    }
    for name, (source, root, reason) in cases.items():
        config = write_config(tmp_path / "cam1.toml", root, source)
        run = run_once(config, "run", "--config")
        assert run.returncode == EX_CONFIG and reason in run.stderr, (name, run.stderr)
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, (name, run.stderr)
        check = run_once(config, "check-config", "--quiet")
        assert check.returncode == EX_CONFIG and reason in check.stderr, (name, check.stderr)


def test_the_instance_name_is_the_camera(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "lot7.toml", root, 'kind = "synthetic"')  # camera = "cam1"
    for args in (("run", "--camera", "lot7", "--config"), ("check-config", "--camera", "lot7")):
        result = run_once(config, *args)
        assert result.returncode == EX_CONFIG, result.stderr
        assert "camera: 'cam1' differs from the instance name 'lot7'" in result.stderr
    config.write_text(config.read_text().replace('camera = "cam1"\n', ""))  # absent: the instance names it
    shown = run_once(config, "check-config", "--camera", "lot7")
    assert shown.returncode == 0 and 'camera = "lot7"' in shown.stdout, shown.stderr


def test_the_synthetic_camera_lives_in_real_time_until_stopped(tmp_path, notify_socket):
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, 'kind = "synthetic"\nfps = 5')
    daemon = Daemon(config, tmp_path / "log", notify_socket)
    try:
        assert wait_until(lambda: read_status(root).get("frames_in", 0) >= 5, 30), daemon.output()
        first, t0 = read_status(root)["frames_in"], time.monotonic()
        time.sleep(4)
        status = read_status(root)
        rate = (status["frames_in"] - first) / (time.monotonic() - t0)
        assert 3.5 < rate < 6.5, rate  # the scene's 5 frames/s, in real time
        assert abs(status["decisions"][-1]["timestamp"] - time.time()) < 5  # wall-clock stamps
        assert status["source"]["state"] == "streaming" and daemon.process.poll() is None
        assert "kept frame 0 (novelty)" in daemon.output()  # every kept frame is an INFO line
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_the_synthetic_scene_loops_with_fresh_noise():
    from framecull.config import SourceConfig
    from framecull.sources.synthetic import SyntheticCamera

    camera = SyntheticCamera(SourceConfig(kind="synthetic"))
    scene = camera.scene
    assert (scene.render(3, loop=0) == scene.render(3)).all()  # replay's frames are unchanged
    assert (scene.render(3, loop=1) != scene.render(3, loop=0)).any()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reloads_that_change_the_config_do_not_grow_memory(tmp_path):
    root = tmp_path / "root"
    config = tmp_path / "cam1.toml"

    def write(threshold: int) -> None:
        write_config(config, root, 'kind = "synthetic"', f"[gates.change]\nthreshold = {threshold}\n")

    write(25)
    daemon = Daemon(config, tmp_path / "log")
    try:
        assert wait_until(lambda: read_status(root).get("frames_in", 0) > 3, 30), daemon.output()

        def reloads(n: int, first: int) -> None:
            for i in range(first, first + n):
                write(26 - i % 2)  # 26, 25, 26...: each one a change
                daemon.process.send_signal(signal.SIGHUP)
                assert wait_until(lambda: read_status(root).get("reloads") == i + 1, 10), daemon.output()

        reloads(10, 0)  # warm up: allocator pools, the first sessions
        before = rss_mb(daemon.process.pid)
        reloads(40, 10)
        grown = rss_mb(daemon.process.pid) - before
        print(f"RSS {before:.0f} MB, after 40 more reloads {before + grown:.0f} MB")
        assert grown < 30, grown  # it was ~4 MB per reload: an old runner lived until a full collection
        assert daemon.stop() == 0
    finally:
        daemon.stop()


def test_each_different_refusal_reaches_the_log(tmp_path):
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, 'kind = "synthetic"')
    good = config.read_text()
    daemon = Daemon(config, tmp_path / "log", INVOCATION_ID="x")  # logs as under systemd (stderr, no journal module)
    try:
        assert wait_until(lambda: read_status(root).get("frames_in", 0) > 0, 30), daemon.output()
        mistakes = {"[gates.change]\nthreshold = 999\n": "gates.change.threshold",
                    "[gates.change]\nblur = 4\n": "gates.change.blur",
                    "[pacing]\nmin_interval = \"soon\"\n": "pacing.min_interval"}
        for mistake, key in mistakes.items():
            config.write_text(good + mistake)
            daemon.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: key in daemon.output(), 10), (key, daemon.output())
        assert daemon.output().count("reload refused") == 3
        assert daemon.process.poll() is None and daemon.stop() == 0
    finally:
        daemon.stop()


def ignores_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & 1 << (signal.SIGHUP - 1))
    return False


def test_sighup_while_loading_or_stopping_does_not_kill_it(tmp_path):
    # From the moment `run` starts (before the config, the model and the memory are loaded) to
    # the end. The interpreter's start and `import framecull.cli` come before (~0.5 s): a
    # SIGHUP then still kills a daemon started by hand; systemd sends none before READY=1.
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, 'kind = "synthetic"')
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        daemon = Daemon(config, tmp_path / "log")
        assert wait_until(lambda: ignores_sighup(daemon.process.pid), 30, step=0.002)
        time.sleep(delay)
        daemon.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: read_status(root).get("pid") == daemon.process.pid, 30), daemon.output()
        daemon.process.send_signal(signal.SIGTERM)
        for _ in range(40):  # reloads asked for all through the shutdown
            if daemon.process.poll() is not None:
                break
            daemon.process.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        assert daemon.process.wait(30) == 0, (delay, daemon.output()[-2000:])
        daemon.stop()


def test_sigterm_while_the_camera_is_stalled_exits_cleanly(tmp_path, server):
    server.start()
    root = tmp_path / "root"
    config = write_config(tmp_path / "cam1.toml", root, rtsp_source(server))
    for attempt in range(5):
        daemon = Daemon(config, tmp_path / "log")
        assert wait_until(lambda: read_status(root).get("pid") == daemon.process.pid
                          and read_status(root).get("frames_in", 0) > 5, 30), daemon.output()
        server.pause()  # the camera hangs: the reader thread sits in a read that times out in 2 s
        time.sleep(0.5 + 0.3 * attempt)
        daemon.process.send_signal(signal.SIGTERM)
        rc = daemon.process.wait(30)
        server.resume()
        assert rc == 0, (attempt, rc, daemon.output()[-2000:])  # was a segfault (rc -11) in 2 of 7
        daemon.stop()
