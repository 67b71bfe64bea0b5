"""Deployment files, checked with the real tools: systemd-analyze, shellcheck, sshd + rsync +
rrsync, ansible-playbook.

System packages (Debian): systemd openssh-server openssh-client rsync shellcheck ansible-core.
Without them these tests skip, except under CI=true, where a missing tool is a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from net import free_port

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "framecull@.service"
INSTALL = REPO / "deploy" / "install.sh"
PULL = REPO / "deploy" / "pull"
ANSIBLE = REPO / "deploy" / "ansible"
SHIPPED_BIN = "/opt/framecull/venv/bin/framecull"
FRAMECULL = Path(sys.executable).parent / "framecull"


def need(*tools: str) -> None:
    """Skip (or, under CI=true, fail) when a system tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if missing:
        message = f"missing system tools: {', '.join(missing)} (apt-get install systemd openssh-server " \
                  "openssh-client rsync shellcheck ansible-core)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------------------------------------
# systemd units


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_key_settings():
    s = unit_settings(UNIT)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{SHIPPED_BIN} run --config /etc/framecull/%i.toml --camera %i"]
    # Reload checks the file first (so a refused config fails `systemctl reload`), then signals.
    assert s["ExecReload"] == [f"{SHIPPED_BIN} check-config --quiet --camera %i /etc/framecull/%i.toml",
                               "/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"] and s["RestartPreventExitStatus"] == ["78"]
    # A 78 from an ExecStartPre would not stop the restarts (systemd only looks at the main
    # process for RestartPreventExitStatus), so config checking belongs to `run` itself.
    assert "ExecStartPre" not in s
    assert int(s["WatchdogSec"][0]) >= 30
    assert s["User"] == ["framecull"] and s["SupplementaryGroups"] == ["video"]
    assert s["StateDirectory"] == ["framecull/%i"]
    assert s["ProtectSystem"] == ["strict"] and s["PrivateDevices"] == ["no"]
    # video4linux by its fixed major, not by a name resolved from /proc/devices at start.
    assert "char-81 rw" in s["DeviceAllow"] and "char-video4linux rw" not in s["DeviceAllow"]
    assert "char-media rw" in s["DeviceAllow"]
    assert "network-online.target" not in " ".join(s.get("After", []) + s.get("Wants", []))  # never holds up boot


def _test_copy(unit: Path, tmp_path: Path, replace: dict[str, str]) -> Path:
    """A copy of a unit whose executables exist here; the shipped file keeps its real paths."""
    text = unit.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    copy = tmp_path / "units" / unit.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(text)
    return copy


def verify(*units: Path) -> subprocess.CompletedProcess:
    return run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
               env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})


def test_unit_verifies(tmp_path):
    need("systemd-analyze")
    fake = tmp_path / "bin" / "framecull"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    copy = _test_copy(UNIT, tmp_path, {SHIPPED_BIN: str(fake)})
    instance = copy.parent / "framecull@lot-north.service"
    result = verify(instance)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "Ignoring" not in result.stderr, result.stderr
    # ...and verify does look at the executable: without it the same unit fails.
    fake.unlink()
    assert verify(instance).returncode != 0

    sec = run(["systemd-analyze", "security", "--offline=true", str(instance)])
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", sec.stdout)
    assert match, sec.stdout + sec.stderr
    print("systemd-analyze security:", match.group(0))
    assert float(match.group(1)) <= 2.0


def test_pull_units_verify(tmp_path):
    need("systemd-analyze")
    service = _test_copy(PULL / "framecull-pull.service", tmp_path,
                         {"/usr/local/bin/framecull-pull": str(PULL / "pull.sh")})
    timer = service.parent / "framecull-pull.timer"
    shutil.copy(PULL / "framecull-pull.timer", timer)
    result = verify(service, timer)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# shell scripts


def test_scripts_are_shellcheck_clean():
    need("shellcheck")
    scripts = [INSTALL, PULL / "pull.sh", PULL / "pull-only.sh"]
    result = run(["shellcheck", *map(str, scripts)])
    assert result.returncode == 0, result.stdout
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} is not executable"


# ---------------------------------------------------------------------------------------------
# deploy/install.sh into a throwaway root


def manifest(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def test_install_into_root_is_idempotent(tmp_path):
    root = tmp_path / "root"
    first = run(["bash", str(INSTALL), "--root", str(root), "--camera", "lot-south", "--skip-venv"])
    assert first.returncode == 0, first.stderr
    assert "systemctl enable --now framecull@lot-south" in first.stdout

    unit = root / "etc/systemd/system/framecull@.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    assert (root / "opt/framecull/bin/framecull-pull-only").read_bytes() == (PULL / "pull-only.sh").read_bytes()
    assert os.access(root / "opt/framecull/bin/framecull-pull-only", os.X_OK)
    assert (root / "etc/framecull/camera.toml.example").exists()
    config = root / "etc/framecull/lot-south.toml"
    text = config.read_text()
    assert 'camera = "lot-south"' in text and 'root = "/var/lib/framecull/lot-south"' in text
    # Not a Pi: a camera that runs here (picamera2 could not be installed, and would be refused).
    assert re.search(r'^kind = "synthetic"', text, re.M)
    assert config.stat().st_mode & 0o777 == 0o640  # may hold an RTSP password
    assert (root / "var/lib/framecull/.ssh").stat().st_mode & 0o777 == 0o700
    assert (root / "var/lib/framecull/lot-south/frames").is_dir()  # what the server pulls
    # The generated config is valid (check-config also loads the model).
    check = run([str(FRAMECULL), "check-config", str(config)])
    assert check.returncode == 0, check.stderr

    config.write_text(text.replace("fps = 5.0", "fps = 2.0"))  # the operator's edit
    before = manifest(root)
    time.sleep(0.01)
    second = run(["bash", str(INSTALL), "--root", str(root), "--camera", "lot-south", "--skip-venv"])
    assert second.returncode == 0, second.stderr
    assert manifest(root) == before, "a second run changed files"
    assert not re.search(r"^(installed|created) ", second.stdout, re.M), second.stdout
    assert "fps = 2.0" in config.read_text()


def test_install_rejects_bad_camera_name(tmp_path):
    result = run(["bash", str(INSTALL), "--root", str(tmp_path), "--camera", "../etc", "--skip-venv"])
    assert result.returncode != 0 and not (tmp_path / "etc").exists()


def test_install_creates_the_venv(tmp_path):
    """The venv step for real (system site packages, framecull's entry point), without
    downloading the dependencies again: PIP_NO_DEPS is pip's own environment switch."""
    if run(["/usr/bin/python3", "-c", "import ensurepip"]).returncode != 0:
        need("/usr/bin/python3 with python3-venv")
    root = tmp_path / "root"
    env = {**os.environ, "PIP_NO_DEPS": "1"}
    result = run(["bash", str(INSTALL), "--root", str(root)], env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    venv = root / "opt/framecull/venv"
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert os.access(venv / "bin/framecull", os.X_OK)
    version = run([str(venv / "bin/python"), "-c", "import framecull; print(framecull.__version__)"])
    assert version.returncode == 0 and version.stdout.strip(), version.stderr


# ---------------------------------------------------------------------------------------------
# the rsync pull over a real sshd, with the restricted key



@pytest.fixture
def sshd(tmp_path):
    need("/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync", "/usr/bin/rrsync")
    d = tmp_path / "ssh"
    d.mkdir()
    served = tmp_path / "device" / "var-lib-framecull"  # stands for /var/lib/framecull
    served.mkdir(parents=True)
    for name in ("host_key", "client_key"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    pubkey = (d / "client_key.pub").read_text().strip()
    (d / "authorized_keys").write_text(
        f'command="{PULL / "pull-only.sh"} {served}",restrict {pubkey}\n')
    port = free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {proc.communicate()[0]}")
            time.sleep(0.05)
    hosts = d / "hosts"
    hosts.write_text(f"# test device\n127.0.0.1 {port}\n")
    ssh = ["ssh", "-i", str(d / "client_key"), "-p", str(port), "-o", "BatchMode=yes",
           "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
           "-o", "StrictHostKeyChecking=accept-new"]
    env = {**os.environ, "PULL_KEY": str(d / "client_key"), "PULL_KNOWN_HOSTS": str(d / "known_hosts"),
           "PULL_USER": user}
    yield SimpleNamespace(served=served, hosts=hosts, env=env, ssh=ssh, user=user, port=port)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_pull_takes_whole_pairs_while_the_device_writes(sshd, tmp_path):
    from framecull.frame import Frame
    from framecull.store import Store

    dest = tmp_path / "server"
    north = Store(sshd.served / "lot-north", "lot-north", quality=90, config_hash="", max_bytes=0)
    south = Store(sshd.served / "lot-south", "lot-south", quality=90, config_hash="", max_bytes=0)
    # install.sh --camera creates <camera>/frames/; pulling it before the first frame is fine.
    (sshd.served / "lot-north" / "frames").mkdir(parents=True)
    empty = run([str(PULL / "pull.sh"), str(sshd.hosts), str(dest)], env=sshd.env)
    assert empty.returncode == 0, empty.stderr
    memory = sshd.served / "lot-north" / "memory.sqlite"
    memory.write_bytes(b"the device's memory")  # never to be pulled or removed
    decision = SimpleNamespace(stage="novelty", scores={"novelty": 0.5})
    rng = np.random.default_rng(0)
    stop = threading.Event()
    written: list[str] = []

    def writer():
        i = 0
        while not stop.is_set():
            # Noisy pictures make large JPEGs, so transfers overlap with writes.
            bgr = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            store = north if i % 3 else south
            path = store.save(Frame(i, time.time(), gray, image=bgr), decision)
            assert path
            written.append(Path(path).name)
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        pulls = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            result = run([str(PULL / "pull.sh"), str(sshd.hosts), str(dest)], env=sshd.env)
            assert result.returncode == 0, result.stderr
            pulls.append(result)
    finally:
        stop.set()
        thread.join()
    final = run([str(PULL / "pull.sh"), str(sshd.hosts), str(dest)], env=sshd.env)
    assert final.returncode == 0, final.stderr
    assert len(pulls) >= 3 and len(written) >= 30, (len(pulls), len(written))
    print(f"{len(pulls)} pulls while {len(written)} frames were written")

    got = dest / "127.0.0.1"
    images = sorted(got.rglob("*.jpg"))
    assert sorted(p.name for p in images) == sorted(written), "every kept frame arrives once"
    for image in images:
        assert image.parent.parent.name == "frames"
        assert image.parts[-4] in ("lot-north", "lot-south")  # <host>/<camera>/frames/<day>/
        sidecar = json.loads(image.with_suffix(".json").read_text())
        assert sidecar["image"] == image.name
        picture = cv2.imread(str(image))
        assert picture is not None and picture.shape == (480, 640, 3), image
    names = [p.name for p in got.rglob("*") if p.is_file()]
    assert not [n for n in names if n.startswith(".") or "partial" in n or not n.endswith((".jpg", ".json"))]
    assert len(names) == 2 * len(images)
    # Pulled files are gone from the device; its memory and tmp/ stay.
    assert not [p for p in sshd.served.glob("*/frames/**/*") if p.is_file()]
    assert memory.read_bytes() == b"the device's memory"
    assert not (got / "lot-north" / "memory.sqlite").exists()


def test_the_pull_key_can_do_nothing_else(sshd, tmp_path):
    cam = sshd.served / "lot-north"
    (cam / "frames" / "2026-01-01").mkdir(parents=True)
    (cam / "frames" / "2026-01-01" / "a.json").write_text("{}")
    memory = cam / "memory.sqlite"
    memory.write_text("memory")
    (sshd.served / ".ssh").mkdir()
    keys = sshd.served / ".ssh" / "authorized_keys"
    keys.write_text("keys")
    local = tmp_path / "local.txt"
    local.write_text("pushed")
    remote = f"{sshd.user}@127.0.0.1:"
    e = " ".join(sshd.ssh)
    dest = tmp_path / "got"
    dest.mkdir()

    def rsync(*args):
        return run(["rsync", "-e", e, *args])

    # Pushes are refused, inside frames/ and outside it.
    for target in ("lot-north/frames/", "lot-north/", "", ".ssh/"):
        result = rsync("-a", str(local), remote + target)
        assert result.returncode != 0, target
        assert "refused" in result.stderr, result.stderr
    assert not list(sshd.served.rglob("local.txt"))
    # Pulling (and so removing) anything outside a frames/ directory is refused.
    for source in ("lot-north/memory.sqlite", "lot-north/", ".ssh/authorized_keys", "*",
                   "lot-north/frames/../memory.sqlite", "../", "/etc/passwd"):
        result = rsync("-a", "--remove-source-files", remote + source, str(dest) + "/")
        assert result.returncode != 0, source
    assert memory.read_text() == "memory" and keys.read_text() == "keys"
    # Options that would read a file list or write a log elsewhere are refused.
    # (":" and -M send them to the device's rsync.)
    for option in ("--files-from=:.ssh/authorized_keys", "-M--log-file=lot-north/x.log",
                   "-M--only-write-batch=lot-north/batch"):
        result = rsync("-a", option, remote + "lot-north/frames/", str(dest) + "/")
        assert result.returncode != 0 and "refused" in result.stderr, (option, result.stderr)
    assert sorted(p.name for p in cam.iterdir()) == ["frames", "memory.sqlite"]
    # No shell: a command is refused, and nothing ran.
    marker = tmp_path / "ran"
    result = run([*sshd.ssh, "127.0.0.1", f"touch {marker}"])
    assert result.returncode != 0 and not marker.exists()
    result = run([*sshd.ssh, "127.0.0.1", f"rsync --server --sender -e.LsfxC . lot-north/frames/; touch {marker}"])
    assert result.returncode != 0 and not marker.exists()
    # ...and the one thing it may do still works.
    result = rsync("-a", "--remove-source-files", remote + "lot-north/frames/", str(dest) + "/")
    assert result.returncode == 0, result.stderr
    assert (dest / "2026-01-01" / "a.json").exists() and not (cam / "frames" / "2026-01-01" / "a.json").exists()


# ---------------------------------------------------------------------------------------------
# deploy/ansible: syntax, then a local run into a throwaway root


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"), "ANSIBLE_RETRY_FILES_ENABLED": "0"}


def test_playbook_syntax(tmp_path):
    need("ansible-playbook")
    result = run(["ansible-playbook", "--syntax-check", "-i", str(ANSIBLE / "inventory.example.yml"),
                  str(ANSIBLE / "site.yml")], env=ansible_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_playbook_runs_locally_into_a_root(tmp_path):
    need("ansible-playbook")
    root = tmp_path / "root"
    wheel = tmp_path / "framecull-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not installed: --skip-venv")
    cameras = [
        {"name": "lot-north", "settings": {
            "source": {"kind": "synthetic", "fps": 5.0},
            "regions": {"masks": [
                {"name": "timestamp", "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 0.06], [0.0, 0.06]]}]},
            "gates": {"change": {"min_changed": 0.01}, "novelty": {"min_distance": 0.07}},
            "pacing": {"heartbeat": "30m"},
            "budget": {"max_bytes": "20GB"}}},
        {"name": "shop-door"},
    ]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"framecull": {"hosts": {"testdevice": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    # Extra vars outrank everything, so this run can only ever touch the throwaway root.
    extra = {"framecull_root": str(root), "framecull_become": False, "framecull_install_args": ["--skip-venv"],
             "framecull_wheel": str(wheel), "framecull_check_cmd": f"{FRAMECULL} check-config %s",
             "framecull_pull_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest puller@server",
             "framecull_cameras": cameras}

    def play(cameras_now):
        (tmp_path / "extra.json").write_text(json.dumps({**extra, "framecull_cameras": cameras_now}))
        return run(["ansible-playbook", "-i", str(inventory), "-e", f"@{tmp_path / 'extra.json'}",
                    str(ANSIBLE / "site.yml")], env=ansible_env(tmp_path), timeout=180)

    def recap(result) -> dict[str, int]:
        line = re.search(r"^testdevice\s+:\s+(.*)$", result.stdout, re.M).group(1)
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}

    first = play(cameras)
    assert first.returncode == 0, first.stdout[-3000:]
    assert recap(first)["changed"] > 0
    north = root / "etc/framecull/lot-north.toml"
    shown = run([str(FRAMECULL), "check-config", str(north)])
    assert shown.returncode == 0, shown.stderr
    assert "min_distance = 0.07" in shown.stdout and '"timestamp"' in shown.stdout
    assert 'root = "/var/lib/framecull/lot-north"' in north.read_text()
    assert (root / "etc/framecull/shop-door.toml").exists()
    assert (root / "etc/systemd/system/framecull@.service").read_bytes() == UNIT.read_bytes()
    assert (root / "var/lib/framecull/shop-door/frames").is_dir()
    keys = (root / "var/lib/framecull/.ssh/authorized_keys").read_text()
    assert keys.startswith('command="/opt/framecull/bin/framecull-pull-only /var/lib/framecull",restrict ssh-ed25519 ')

    second = play(cameras)
    assert second.returncode == 0 and recap(second)["changed"] == 0, second.stdout[-3000:]

    # One camera's config changes: only that camera is reloaded.
    cameras[1] = {"name": "shop-door", "settings": {"source": {"fps": 2.0}}}
    third = play(cameras)
    assert third.returncode == 0 and recap(third)["changed"] == 1, third.stdout[-3000:]
    handler = third.stdout.split("RUNNING HANDLER [Reload changed cameras]")[1]
    assert "item=shop-door" in handler and "item=lot-north" not in handler
    assert "fps = 2.0" in (root / "etc/framecull/shop-door.toml").read_text()

    # A bad value is refused on the device by check-config; the running config stays.
    before = north.read_text()
    cameras[0]["settings"]["gates"]["change"]["threshold"] = 999
    bad = play(cameras)
    assert bad.returncode != 0 and "gates.change.threshold" in bad.stdout, bad.stdout[-3000:]
    assert north.read_text() == before
