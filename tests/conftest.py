"""Shared fixtures: the shared testdata (present in CI, absent in a fresh clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
VIDEOS = TESTDATA / "videos"


@pytest.fixture
def testdata() -> Path:
    if not VIDEOS.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA} (present in CI, absent in a fresh clone)")
    return TESTDATA
