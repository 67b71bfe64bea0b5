"""Shared fixtures: the shared testdata (present in CI, absent in a fresh clone)."""

from __future__ import annotations

import os
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
