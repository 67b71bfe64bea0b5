"""framecull@.service under a real systemd: PID 1 of a Debian bookworm container (container.py),
framecull installed by deploy/install.sh from a wheel of this tree, checked with systemctl and
journalctl as an operator would. The container shares the host's network, so the RTSP test
server on 127.0.0.1 is a camera it can reach.

The first boot installs and enables two cameras: cam1 (the synthetic camera install.sh writes on
a machine that is not a Pi) and dead (an RTSP camera nothing answers for); the second boot is the
one under test: a dead camera must not hold it up. A drop-in sets RestartSec=1 so that a restart
(or its absence) shows within seconds; nothing else of the shipped unit is changed, except where
a test says so (a short WatchdogSec).

Needs root, systemd-nspawn, debootstrap and a cgroup v2 hierarchy; skipped with the reason
otherwise, failed instead when CI is set (CI must run it). About 3 minutes, the first time 1.5
more for debootstrap.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import container as nspawn
import net
import rtsp_server
from net import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
JOURNAL_SAMPLE = nspawn.HOME / "journal-sample.txt"  # real lines for the README, from the last run


# systemctl and journalctl are processes of their own: poll them gently.
wait_until = functools.partial(net.wait_until, step=0.25)


def log(message: str) -> None:
    print(f"[systemd test] {message}", file=sys.stderr, flush=True)


def wheels(into: Path) -> None:
    """The dependencies (downloaded on the host: pip in the container would not trust this
    network's certificates) and a wheel of this tree."""
    cache = nspawn.HOME / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "-d", str(cache), str(REPO),
                    "prometheus-client"], check=True, capture_output=True, timeout=600)
    shutil.copytree(cache, into, dirs_exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(into), str(REPO)],
                   check=True, capture_output=True, timeout=600)


def write(machine: nspawn.Container, path: str, text: str) -> None:
    target = machine.root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


class Unit:
    def __init__(self, machine: nspawn.Container, camera: str) -> None:
        self.machine, self.camera, self.name = machine, camera, f"framecull@{camera}.service"

    def show(self, *props: str) -> dict[str, str]:
        out = self.machine.sh(f"systemctl show {self.name} -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def systemctl(self, verb: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.machine.sh(f"systemctl {verb} {self.name}", check=check)

    def journal(self, *match: str, output: str = "json") -> list[dict]:
        out = self.machine.sh(f"journalctl -u {self.name} {' '.join(match)} -o {output} --no-pager").stdout
        return [json.loads(line) for line in out.splitlines()] if output == "json" else out

    def messages(self) -> str:
        return "\n".join(e.get("MESSAGE", "") for e in self.journal() if isinstance(e.get("MESSAGE"), str))

    def status(self) -> dict:
        out = self.machine.sh(f"cat /var/lib/framecull/{self.camera}/status.json", check=False).stdout
        try:
            return json.loads(out)
        except ValueError:
            return {}

    def config(self, text: str) -> None:
        write(self.machine, f"/etc/framecull/{self.camera}.toml", text)


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def machine(dead_port):
    reason = nspawn.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"a real systemd cannot run here: {reason} (CI must run as root with "
                        "apt-get install systemd-container debootstrap)")
        pytest.skip(f"a real systemd cannot run here: {reason}")
    box = nspawn.Container(nspawn.base_rootfs(log))
    try:
        wheels(box.root / "root/wheels")
        source = box.root / "root/src"
        for part in ("deploy", "systemd", "README.md"):
            (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, source / part)
        box.boot()
        wheel = next((box.root / "root/wheels").glob("framecull-*.whl")).name
        install = box.sh(f"PIP_NO_INDEX=1 PIP_FIND_LINKS=/root/wheels bash /root/src/deploy/install.sh "
                         f"--source /root/wheels/{wheel} --camera cam1", timeout=600)
        log(install.stdout.strip().splitlines()[-1])
        write(box, "/etc/systemd/system/framecull@.service.d/test.conf", "[Service]\nRestartSec=1\n")
        write(box, "/etc/framecull/dead.toml",
              f'camera = "dead"\n[source]\nkind = "rtsp"\nuri = "rtsp://127.0.0.1:{dead_port}/cam"\n'
              'timeout = 2\nreconnect_max = 2\n')
        # The watchdog must be fed while the camera is away: a short one shows it within seconds.
        write(box, "/etc/systemd/system/framecull@dead.service.d/watchdog.conf", "[Service]\nWatchdogSec=4\n")
        box.sh("systemctl daemon-reload && systemctl enable framecull@cam1 framecull@dead")
        box.poweroff()
        box.boot_seconds = box.boot()
        log(f"second boot, with a dead camera enabled: up in {box.boot_seconds:.1f} s")
        yield box
        cam1 = Unit(box, "cam1")
        JOURNAL_SAMPLE.write_text(cam1.journal(output="short-iso") + Unit(box, "dead").journal(output="short-iso"))
    finally:
        box.close()


@pytest.fixture(scope="module")
def cam1(machine) -> Unit:
    return Unit(machine, "cam1")


# --- rows 1 and 9: start, boot, a dead camera, the synthetic camera -----------------------------


def test_a_dead_camera_neither_holds_up_boot_nor_cycles_and_is_picked_up_when_it_comes(machine, dead_port, rtsp_ready):
    dead = Unit(machine, "dead")
    assert machine.boot_seconds < 30  # with READY at the first frame this took TimeoutStartSec (3 min)
    state = dead.show("ActiveState", "SubState", "NRestarts", "StatusText", "MainPID")
    assert state["ActiveState"] == "active" and state["NRestarts"] == "0", state
    assert "waiting for camera" in state["StatusText"], state
    time.sleep(13)  # over 3 x WatchdogSec=4: fed while the daemon reconnects
    later = dead.show("ActiveState", "NRestarts", "StatusText", "MainPID")
    assert later["ActiveState"] == "active" and later["NRestarts"] == "0", later
    assert later["MainPID"] == state["MainPID"] and "reconnecting" in later["StatusText"], later
    server = rtsp_server.RtspServer(width=320, height=240, fps=10)
    server.port = dead_port
    server.start()
    try:
        assert wait_until(lambda: "streaming" in dead.show("StatusText")["StatusText"], 30), dead.show("StatusText")
        assert wait_until(lambda: dead.status().get("kept", 0) > 0, 20), dead.status()
    finally:
        server.stop()
    assert dead.show("MainPID", "NRestarts") == {"MainPID": state["MainPID"], "NRestarts": "0"}


def test_enable_now_of_a_camera_that_is_not_there_returns_at_once(machine):
    late = Unit(machine, "late")
    late.config(f'[source]\nkind = "rtsp"\nuri = "rtsp://127.0.0.1:{free_port()}/cam"\n')
    started = time.monotonic()
    machine.sh(f"systemctl enable --now {late.name}")
    assert time.monotonic() - started < 20
    assert late.show("ActiveState")["ActiveState"] == "active"
    machine.sh(f"systemctl disable --now {late.name}")


def test_active_only_after_ready_and_the_synthetic_camera_runs_until_stopped(cam1):
    cam1.systemctl("restart", check=True)
    assert cam1.show("ActiveState")["ActiveState"] == "active"
    entries = cam1.journal()
    invocation = cam1.show("InvocationID")["InvocationID"]
    ready = [e for e in entries if e.get("_SYSTEMD_INVOCATION_ID") == invocation
             and str(e.get("MESSAGE", "")).startswith("ready:")]
    started = [e for e in entries if e.get("INVOCATION_ID") == invocation
               and str(e.get("MESSAGE", "")).startswith("Started ")]
    assert ready and started, [e.get("MESSAGE") for e in entries[-10:]]
    assert int(ready[0]["__MONOTONIC_TIMESTAMP"]) < int(started[0]["__MONOTONIC_TIMESTAMP"])
    pid = cam1.show("MainPID")["MainPID"]
    assert wait_until(lambda: cam1.status().get("frames_in", 0) > 5, 20)
    first = cam1.status()["frames_in"]
    time.sleep(10.5)  # status.json is written every 5 s
    assert cam1.status()["frames_in"] >= first + 20  # 5 frames/s in real time, for as long as it runs
    assert cam1.show("MainPID")["MainPID"] == pid
    cam1.systemctl("stop", check=True)
    stopped = cam1.show("Result", "ExecMainStatus", "ActiveState")
    assert stopped == {"Result": "success", "ExecMainStatus": "0", "ActiveState": "inactive"}, stopped
    assert "stopped:" in cam1.messages()
    cam1.systemctl("start", check=True)


def test_a_reload_asked_for_while_it_starts_waits_for_ready(machine, cam1):
    # The daemon ignores SIGHUP from `run`'s first line only (the interpreter starts before):
    # systemd must hold a reload back until READY=1, as it does for Type=notify.
    restarts = cam1.show("NRestarts")["NRestarts"]
    machine.sh(f"systemctl restart --no-block {cam1.name} && systemctl reload {cam1.name}")
    time.sleep(2)
    state = cam1.show("ActiveState", "NRestarts", "Result")
    assert state == {"ActiveState": "active", "NRestarts": restarts, "Result": "success"}, state
    assert "code=killed, status=1/HUP" not in cam1.journal(output="cat")


# --- rows 7 and 8: the journal -------------------------------------------------------------------


def test_kept_frames_are_info_lines_with_fields_and_onnxruntime_says_nothing(cam1):
    assert wait_until(lambda: cam1.journal("CAMERA=cam1", "STAGE=novelty"), 30)
    kept = cam1.journal("CAMERA=cam1", "STAGE=novelty")
    entry = kept[-1]
    assert entry["PRIORITY"] == "6" and entry["MESSAGE"].startswith("kept frame")
    assert entry["FRAME"].endswith(".jpg") and "SCORE_CHANGE_CHANGED" in entry
    text = cam1.messages()
    assert "onnxruntime" not in text and "telemetry" not in text.lower(), text


# --- rows 4 and 5: reload ------------------------------------------------------------------------


def test_reload_applies_a_good_config_and_fails_on_a_bad_one_keeping_the_old(machine, cam1):
    good = (machine.root / "etc/framecull/cam1.toml").read_text()
    pid = cam1.show("MainPID")["MainPID"]
    changed = re.sub(r"(?m)^threshold = 25\.0", "threshold = 30.0", good)
    assert changed != good
    cam1.config(changed)
    assert cam1.systemctl("reload").returncode == 0
    assert wait_until(lambda: cam1.status().get("thresholds", {}).get("change") == 30.0, 15), cam1.status()
    assert "reloaded /etc/framecull/cam1.toml" in cam1.messages()

    mistakes = [("threshold = 30.0", "threshold = 999.0", "gates.change.threshold"),
                ("threshold = 30.0", "threshold = 30.0\nwhatever = 1", "gates.change.whatever: unknown key"),
                ('root = "/var/lib/framecull/cam1"', 'root = "/var/lib/elsewhere"', "store.root: store root /var/lib/elsewhere")]
    for old, new, reason in mistakes:
        cam1.config(changed.replace(old, new, 1))
        result = cam1.systemctl("reload")
        assert result.returncode != 0, result  # "Job for framecull@cam1.service failed"
        assert wait_until(lambda: reason in cam1.messages(), 10), (reason, cam1.messages()[-3000:])
    assert cam1.messages().count("Reload failed for framecull@cam1") == 3, cam1.messages()[-3000:]
    state = cam1.show("MainPID", "ActiveState")
    assert state == {"MainPID": pid, "ActiveState": "active"}
    assert cam1.status()["thresholds"]["change"] == 30.0

    # The daemon's own refusals (a SIGHUP not sent through systemctl reload): each its own line.
    for old, new, reason in mistakes:
        cam1.config(changed.replace(old, new, 1))
        machine.sh(f"systemctl kill -s HUP --kill-who=main {cam1.name}")
        assert wait_until(lambda: any(reason in m and "reload refused" in m for m in cam1.messages().splitlines()),
                          10), (reason, cam1.messages()[-3000:])
    cam1.config(good)
    assert cam1.systemctl("reload").returncode == 0


# --- rows 2 and 3: what no restart can fix -------------------------------------------------------

PERMANENT = {
    "badurl": ('[source]\nkind = "rtsp"\nuri = "rtsp://:99999/cam"\n', "source.uri"),
    "nofile": ('[source]\nkind = "file"\nuri = "/srv/missing.mp4"\n', "video file '/srv/missing.mp4' not found"),
    "nopicam": ('[source]\nkind = "picamera2"\n', "needs the Python module picamera2"),
    "lot7": ('camera = "lot-north"\n[source]\nkind = "synthetic"\n', "differs from the instance name 'lot7'"),
    "elsewhere": ('[source]\nkind = "synthetic"\n[store]\nroot = "/var/lib/elsewhere"\n', "store.root"),
}


def test_permanent_problems_exit_78_once_with_the_reason_and_check_config_finds_them(machine):
    units = {}
    for camera, (text, _) in PERMANENT.items():
        units[camera] = unit = Unit(machine, camera)
        unit.config(text)
        assert unit.systemctl("start").returncode != 0
    time.sleep(3)  # RestartSec=1: a restart would have happened by now
    for camera, (_, reason) in PERMANENT.items():
        unit = units[camera]
        state = unit.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
        assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, \
            (camera, state)
        assert reason in unit.messages(), (camera, unit.messages())
        # check-config, as the service's user, says the same before anything is started
        check = machine.sh(f"runuser -u framecull -- /opt/framecull/venv/bin/framecull check-config --quiet "
                           f"--camera {camera} /etc/framecull/{camera}.toml", check=False)
        assert check.returncode == 78 and reason in check.stderr, (camera, check.stderr)
        unit.systemctl("reset-failed")


# --- restarts: kill -9 and the watchdog ----------------------------------------------------------

INTEGRITY = """
import pathlib, sqlite3
root = pathlib.Path("/var/lib/framecull/cam1")
images = {p.relative_to(root).as_posix() for p in root.glob("frames/*/*.jpg")}
sidecars = {p.relative_to(root).as_posix()[:-5] + ".jpg" for p in root.glob("frames/*/*.json")}
db = sqlite3.connect(root / "memory.sqlite")
rows = {f for (f,) in db.execute("SELECT file FROM kept")}
print(db.execute("PRAGMA integrity_check").fetchone()[0], len(images), len(images - sidecars), len(rows - images))
"""


def integrity(machine) -> tuple[str, int, int, int]:
    ok, images, without_sidecar, rows_without_image = machine.sh(f"python3 -c '{INTEGRITY}'").stdout.split()
    return ok, int(images), int(without_sidecar), int(rows_without_image)


def test_kill_9_restarts_it_with_the_data_intact(machine, cam1):
    assert wait_until(lambda: cam1.status().get("kept", 0) > 0, 30)
    before = cam1.show("MainPID", "NRestarts")
    kept_before = integrity(machine)[1]
    machine.sh(f"systemctl kill -s KILL --kill-who=main {cam1.name}")
    assert wait_until(lambda: cam1.show("NRestarts")["NRestarts"] == str(int(before["NRestarts"]) + 1), 15)
    assert wait_until(lambda: cam1.show("ActiveState")["ActiveState"] == "active", 30)
    assert cam1.show("MainPID")["MainPID"] != before["MainPID"]
    ok, images, without_sidecar, rows_without_image = integrity(machine)
    assert ok == "ok" and images >= kept_before and without_sidecar == 0 and rows_without_image == 0


def test_a_hung_daemon_is_restarted_by_the_watchdog(machine, cam1):
    write(machine, "/etc/systemd/system/framecull@cam1.service.d/watchdog.conf", "[Service]\nWatchdogSec=3\n")
    try:
        machine.sh(f"systemctl daemon-reload && systemctl restart {cam1.name}")
        restarts = int(cam1.show("NRestarts")["NRestarts"])
        time.sleep(4)  # fed while frames flow: no restart
        assert int(cam1.show("NRestarts")["NRestarts"]) == restarts
        machine.sh(f"systemctl kill -s STOP --kill-who=main {cam1.name}")
        assert wait_until(lambda: int(cam1.show("NRestarts")["NRestarts"]) == restarts + 1, 20)
        assert "Watchdog timeout" in cam1.journal(output="cat") or "watchdog" in cam1.journal(output="cat").lower()
        assert wait_until(lambda: cam1.show("ActiveState")["ActiveState"] == "active", 30)
    finally:
        (machine.root / "etc/systemd/system/framecull@cam1.service.d/watchdog.conf").unlink()
        machine.sh(f"systemctl daemon-reload && systemctl restart {cam1.name}")


# --- row 6 and the sandbox -----------------------------------------------------------------------


def test_a_video_device_that_appears_after_the_start_is_allowed(machine, cam1):
    # No video4linux driver on this machine: a device node of major 81 answers ENXIO when the
    # sandbox lets it through and EPERM when the device policy stops it, which tells them apart.
    assert "video4linux" not in machine.sh("cat /proc/devices").stdout
    machine.sh("test -e /dev/video0 || mknod /dev/video0 c 81 0")  # after the unit started
    group = cam1.show("ControlGroup")["ControlGroup"]
    inside = machine.sh(f"echo $$ > /sys/fs/cgroup{group}/cgroup.procs && exec cat /dev/video0", check=False)
    assert "No such device or address" in inside.stderr, inside.stderr
    # ...where allowing it by name (char-video4linux, resolved from /proc/devices at start) fails
    by_name = machine.sh("systemd-run --wait --pipe -p DevicePolicy=closed -p 'DeviceAllow=char-video4linux rw' "
                         "cat /dev/video0", check=False)
    assert "Operation not permitted" in by_name.stderr, by_name.stderr


def test_the_sandbox_exposure_stays_low(machine, cam1):
    out = machine.sh(f"systemd-analyze security {cam1.name} --no-pager").stdout
    level = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    log(f"systemd-analyze security: {level}")
    assert level <= 2.0
