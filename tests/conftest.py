"""Shared fixtures: the shared testdata (present in CI, absent in a fresh clone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
VIDEOS = TESTDATA / "videos"


@pytest.fixture
def testdata() -> Path:
    if not VIDEOS.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA} (present in CI, absent in a fresh clone)")
    return TESTDATA


@pytest.fixture(scope="session")
def rtsp_ready():
    """Skip (or, in CI, fail) when the real RTSP test server cannot run here."""
    import rtsp_server

    reason = rtsp_server.unavailable()
    if reason:
        message = f"the RTSP test server cannot run: {reason}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must install: apt-get install {rtsp_server.DEBIAN_PACKAGES})")
        pytest.skip(message)


@pytest.fixture
def tiny_disk():
    """A real 2 MB tmpfs, to fill up (needs root to mount)."""
    where = Path(tempfile.mkdtemp(prefix="fc-tmpfs-", dir="/tmp"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)])
    shutil.rmtree(where, ignore_errors=True)


def fill(disk: Path) -> Path:
    """Fill a disk to the last byte with a ballast file; returns it (unlink it to free the space)."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return ballast
