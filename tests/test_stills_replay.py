"""`framecull replay DIR` on folders of stills, from the command line: cameras, outputs, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from scenes import textured_background, to_bgr, with_car

pytestmark = pytest.mark.slow

START = datetime(2021, 3, 27, 10, 0, 0)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framecull", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def read_decisions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: name -> (size, mtime, sha256)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns,
                                               hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def lot_stills(folder: Path, camera: str, name_format: str, n: int, car_from: int, car_until: int,
               size=(640, 360), resize_from: int | None = None, suffix: str = ".png", seed: int = 0) -> list[Path]:
    """n stills 3 minutes apart of a textured lot; a car is parked from still `car_from` to `car_until`;
    from still `resize_from` on the camera writes 1280x720."""
    rng = np.random.default_rng(seed)
    scene = textured_background(seed=seed, height=size[1], width=size[0])
    car = with_car(scene, x=size[0] // 3, y=size[1] // 2)
    paths = []
    for i in range(n):
        when = START + timedelta(minutes=3 * i, seconds=seed)
        image = to_bgr(car if car_from <= i < car_until else scene, rng)
        if resize_from is not None and i >= resize_from:
            image = cv2.resize(image, (size[0] * 2, size[1] * 2), interpolation=cv2.INTER_CUBIC)
        path = folder / f"{camera}_{when.strftime(name_format)}{suffix}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


@pytest.fixture
def two_cameras(tmp_path) -> Path:
    folder = tmp_path / "stills"
    folder.mkdir()
    # c21: PNG, 2021_03_27__10_36_36; c22: JPEG, 20210327-103636, 1280x720 from its still 12 on.
    lot_stills(folder, "c21", "%Y_%m_%d__%H_%M_%S", 20, car_from=8, car_until=14)
    lot_stills(folder, "c22", "%Y%m%d-%H%M%S", 20, car_from=5, car_until=20, resize_from=12, suffix=".jpg", seed=1)
    good = next(folder.glob("c22_*.jpg")).read_bytes()
    (folder / "c22_20210327-101530.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (folder / "c21_2021_03_27__10_16_30.png").write_bytes(b"")  # empty
    (folder / "c21_2021_03_27__10_17_30.png").write_text("not an image at all")
    return folder


def test_per_camera_replay_keeps_each_camera_apart_in_capture_time_with_its_own_files(two_cameras, tmp_path):
    before = snapshot(two_cameras)
    out = tmp_path / "out"
    result = run_cli("replay", str(two_cameras), "--per-camera", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "camera c21: 22 stills, skipped 2 unreadable" in result.stdout
    assert "camera c22: 21 stills, skipped 1 unreadable" in result.stdout
    assert result.stderr.count("skipping") == 3 and "Traceback" not in result.stderr
    assert snapshot(two_cameras) == before  # the input folder is never modified

    for camera, car in (("c21", range(8, 14)), ("c22", range(5, 20))):
        decisions = read_decisions(out / camera / "decisions.jsonl")
        assert (out / camera / "memory.sqlite").exists()
        assert len(decisions) == 20 and {d["camera"] for d in decisions} == {camera}
        assert all(Path(d["file"]).name.startswith(camera + "_") for d in decisions)
        times = [d["timestamp"] for d in decisions]
        assert np.allclose(np.diff(times), 180.0)  # capture times from the names, not 1 s apart
        kept = [i for i, d in enumerate(decisions) if d["kept"]]
        assert kept[0] == 0 and any(i in car for i in kept)  # the lot, then the car
        for d in decisions:
            if d["kept"]:  # a kept still is the input file itself, at its own size, with its sidecar
                stored, original = Path(d["path"]), Path(d["file"])
                assert stored.suffix == original.suffix and stored.read_bytes() == original.read_bytes()
                sidecar = json.loads(stored.with_suffix(".json").read_text())
                assert sidecar["file"] == d["file"] and sidecar["camera"] == camera
                assert sidecar["time"] == datetime.fromtimestamp(d["timestamp"], timezone.utc).isoformat()[:19] + "Z"
    c22 = read_decisions(out / "c22" / "decisions.jsonl")
    assert not c22[12]["kept"] and not c22[12]["scores"]["change"].get("first")  # a new size is no new scene
    assert cv2.imread(c22[5]["path"]).shape[:2] == (360, 640)
    # c22's car leaves nothing to keep once the memory holds it: 2 kept (lot, car), not one per size.
    assert sum(d["kept"] for d in c22) == 2


def test_list_describes_every_input_file_and_copies_nothing(two_cameras, tmp_path):
    out, listing = tmp_path / "out", tmp_path / "stills.csv"
    result = run_cli("replay", str(two_cameras), "--per-camera", "--out", str(out), "--list", str(listing))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(listing.open()))
    assert sorted(Path(r["file"]).name for r in rows) == sorted(p.name for p in two_cameras.iterdir())
    assert {r["camera"] for r in rows} == {"c21", "c22"}
    assert [r["stage"] for r in rows].count("unreadable") == 3
    kept = [r for r in rows if r["kept"] == "1"]
    assert kept and all(json.loads(r["scores"])["novelty"] for r in kept)
    assert rows[0]["time"] == "2021-03-27T10:00:00Z"
    assert not list(out.rglob("frames/*/*.*"))  # nothing copied


def test_link_hard_links_kept_stills(two_cameras, tmp_path):
    out = tmp_path / "out"
    result = run_cli("replay", str(two_cameras), "--out", str(out), "--link")
    assert result.returncode == 0, result.stderr
    decisions = read_decisions(out / "decisions.jsonl")
    assert len(decisions) == 40 and {d["camera"] for d in decisions} == {"c21", "c22"}
    kept = [d for d in decisions if d["kept"]]
    assert kept
    for d in kept:
        assert os.path.samefile(d["path"], d["file"])


def test_a_still_repeated_byte_for_byte_is_never_kept_twice(tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    rng = np.random.default_rng(5)
    scene = textured_background(seed=5)
    views = [to_bgr(scene, rng), to_bgr(with_car(scene, x=100, y=100), rng), to_bgr(with_car(scene, x=400), rng)]
    frozen = cv2.imencode(".jpg", to_bgr(with_car(scene, x=250, y=60, value=220), rng))[1].tobytes()
    order = [0, "frozen", 1, "frozen", 2, "frozen", "frozen", 0, "frozen"]
    for i, view in enumerate(order):
        path = folder / f"cam_{(START + timedelta(minutes=5 * i)).strftime('%Y%m%d_%H%M%S')}.jpg"
        path.write_bytes(frozen if view == "frozen" else cv2.imencode(".jpg", views[view])[1].tobytes())
    result = run_cli("replay", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    decisions = read_decisions(tmp_path / "out" / "decisions.jsonl")
    kept_frozen = [d for d in decisions if d["kept"] and Path(d["file"]).read_bytes() == frozen]
    assert len(kept_frozen) == 1
    assert sum(d["kept"] for d in decisions) == 4  # each of the four views once


def test_an_interrupted_run_continued_ends_like_an_uninterrupted_one(tmp_path):
    folder = tmp_path / "stills"
    folder.mkdir()
    for k, camera in enumerate(("north", "south")):  # 240 stills each, cars come and go all along
        (folder / camera).mkdir()
        rng = np.random.default_rng(k)
        scene = textured_background(seed=k, height=180, width=320)
        for i in range(240):
            x = (i // 9) % 5  # a car in one of 4 bays, or none, for 9 stills at a time
            view = scene if x == 4 else with_car(scene, x=20 + 70 * x, y=60, w=45, h=25, value=30 + 40 * x)
            when = START + timedelta(minutes=3 * i)
            cv2.imwrite(str(folder / camera / f"{when:%Y-%m-%dT%H_%M_%S}.png"), to_bgr(view, rng, gain=1 - i / 600))
    whole = tmp_path / "whole"
    assert run_cli("replay", str(folder), "--per-camera", "--out", str(whole)).returncode == 0

    parts = tmp_path / "parts"
    child = subprocess.Popen([sys.executable, "-m", "framecull", "replay", str(folder), "--per-camera", "--out",
                              str(parts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = parts / "north" / "decisions.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not first.exists() or len(first.read_text().splitlines()) < 60):
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the first camera
    child.communicate(timeout=60)
    interrupted = len(read_decisions(first))
    assert 60 <= interrupted < 240, interrupted
    refused = run_cli("replay", str(folder), "--per-camera", "--out", str(parts))
    assert refused.returncode == 64 and "--continue" in refused.stderr
    again = run_cli("replay", str(folder), "--per-camera", "--out", str(parts), "--continue")
    assert again.returncode == 0, again.stderr
    assert f"{interrupted} decided before (--continue)" in again.stdout

    for camera in ("north", "south"):
        expected = [(d["file"], d["kept"], d["stage"]) for d in read_decisions(whole / camera / "decisions.jsonl")]
        got = [(d["file"], d["kept"], d["stage"]) for d in read_decisions(parts / camera / "decisions.jsonl")]
        assert got == expected
        assert len(list((parts / camera / "frames").rglob("*.png"))) == sum(k for _, k, _ in expected)
