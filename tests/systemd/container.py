"""A real systemd to test the unit under: Debian bookworm booted with `systemd-nspawn --boot`.

The root filesystem is made once with debootstrap and kept in /var/tmp/framecull-systemd/base
(rebuilt when the package list changes); each run boots an overlay of it, so nothing of a run
survives it. The container shares the host's network (the RTSP test server on 127.0.0.1 is its
camera) and gets its own cgroup subtrees, removed afterwards with /run/systemd/nspawn's entries.

Why the flags: without --register=no --keep-unit nspawn wants machined on the host's system bus;
without the unified cgroup hierarchy and the bpf system call, the inner systemd cannot enforce
DevicePolicy= (silently).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

HOME = Path("/var/tmp/framecull-systemd")
PACKAGES = ("systemd,systemd-sysv,dbus,python3,python3-venv,python3-systemd,python3-pip,ca-certificates,"
            "rsync,openssh-server,procps")
MIRROR = "http://deb.debian.org/debian"
# cgroup hierarchies nspawn writes to on this kind of host (hybrid: v1 name=systemd + unified v2).
CGROUP_ROOTS = [Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup")]


def unavailable() -> str | None:
    """Why no container can be booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, overlay mounts)"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if not _cgroup2_root():
        return "no cgroup v2 hierarchy mounted (the inner systemd needs one to enforce device policies)"
    return None


def _cgroup2_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").exists() and (root / "cgroup.subtree_control").exists():
            return root
    return None


def base_rootfs(log) -> Path:
    """The debootstrapped root, built on first use (about 1.5 min with a nearby mirror)."""
    base = HOME / "base"
    stamp = base / ".framecull-packages"
    if stamp.exists() and stamp.read_text() == PACKAGES:
        return base
    HOME.mkdir(parents=True, exist_ok=True)
    new = HOME / "base.new"
    shutil.rmtree(new, ignore_errors=True)
    log(f"debootstrap bookworm into {new} (once)")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(new), MIRROR],
                   check=True, capture_output=True, timeout=900)
    (new / ".framecull-packages").write_text(PACKAGES)
    shutil.rmtree(base, ignore_errors=True)
    new.rename(base)
    return base


class Container:
    """An overlay of the base root, booted and powered off on demand; `sh` runs a command in it."""

    def __init__(self, base: Path) -> None:
        self.name = f"framecull-test-{uuid.uuid4().hex[:8]}"
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=HOME))
        self.root = self.dir / "root"
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
                        str(self.root)], check=True, capture_output=True)
        self.cgroups = [root / self.name for root in CGROUP_ROOTS[:2] if (root / "cgroup.procs").exists()]
        self.nspawn: subprocess.Popen | None = None
        self.leader = 0
        self.boots = 0

    def boot(self, timeout: float = 90) -> float:
        """Boot; returns the seconds until systemd says the system is up (running or degraded)."""
        for group in self.cgroups:
            group.mkdir(exist_ok=True)
        started = time.monotonic()
        self.console = open(self.dir / f"console-{self.boots}.log", "wb")
        self.boots += 1
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
             f"--machine={self.name}", "--console=read-only", "--system-call-filter=bpf"],
            env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
            stdout=self.console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=self._enter_cgroups)
        deadline = started + timeout
        while not self.leader:  # the container's PID 1, once nspawn's intermediate child has exec'd it
            self.leader = next((pid for pid in _children(self.nspawn.pid) if _comm(pid) == "systemd"), 0)
            self._check(deadline)
            time.sleep(0.05)
        while True:
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - started
            self._check(deadline)
            time.sleep(0.2)

    def _enter_cgroups(self) -> None:
        for group in self.cgroups:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def _check(self, deadline: float) -> None:
        if self.nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode}: {self.console_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the container did not boot in time: {self.console_text()[-2000:]}")

    def console_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.dir.glob("console-*.log")))

    def sh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/bash", "-c", command],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def poweroff(self, timeout: float = 60) -> None:
        """Shut down cleanly; failing that, nspawn's own shutdown (SIGTERM); failing that, kill
        every process of the container (killing nspawn alone would leave them running)."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        if self.leader:
            self.sh("systemctl poweroff --no-block", check=False)
        for ask in (None, self.nspawn.terminate):
            if ask:
                ask()
            try:
                self.nspawn.wait(timeout / 2)
                break
            except subprocess.TimeoutExpired:
                pass
        else:
            for group in self.cgroups:
                for procs in group.rglob("cgroup.procs"):
                    for pid in procs.read_text().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            self.nspawn.kill()
            self.nspawn.wait()
        self.console.close()
        self.leader = 0

    def close(self) -> None:
        """Power off, unmount, and remove what nspawn leaves behind."""
        try:
            self.poweroff()
        finally:
            subprocess.run(["umount", "-R", str(self.root)], capture_output=True)
            for group in self.cgroups:
                _remove_cgroup(group)
            nspawn_run = Path("/run/systemd/nspawn")
            for leftover in (nspawn_run / "propagate" / self.name, nspawn_run / "unix-export" / self.name):
                shutil.rmtree(leftover, ignore_errors=True)
            for empty in (nspawn_run / "propagate", nspawn_run / "unix-export", nspawn_run / "locks", nspawn_run):
                try:
                    empty.rmdir()  # only when no other container uses it
                except OSError:
                    pass
            if os.path.ismount(self.root):  # still busy: leave it rather than delete through it
                return
            shutil.rmtree(self.dir, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _remove_cgroup(group: Path) -> None:
    """rmdir a cgroup subtree, deepest first (cgroup directories go with rmdir only)."""
    if not group.exists():
        return
    for path in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:
            pass
    try:
        group.rmdir()
    except OSError:
        pass
