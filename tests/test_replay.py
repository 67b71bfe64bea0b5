"""The whole pipeline through the CLI: real files in, decisions and kept frames out."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from scenes import encode_video, textured_background, to_bgr, with_car

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framecull", *args], capture_output=True, text=True, timeout=300)


def read_decisions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def car_clip(tmp_path: Path) -> tuple[Path, list[range]]:
    """20 quiet frames, a car drives in (10), parks (30 quiet), drives off (10), 30 quiet."""
    rng = np.random.default_rng(3)
    scene = textured_background(height=240, width=320)
    xs = list(range(-40, 160, 20)) + [160] * 30 + list(range(180, 380, 20))
    images = [to_bgr(scene, rng) for _ in range(20)]
    images += [to_bgr(with_car(scene, x=x, y=120, w=60, h=30), rng) for x in xs]
    images += [to_bgr(scene, rng) for _ in range(30)]
    events = [range(20, 31), range(60, 71)]
    return encode_video(tmp_path / "car.mp4", images, fps=10), events


def test_replay_writes_one_decision_per_frame_and_the_kept_frames(tmp_path):
    clip, events = car_clip(tmp_path)
    out = tmp_path / "out"
    log = out / "decisions.jsonl"
    result = run_cli("replay", str(clip), "--out", str(out))
    assert result.returncode == 0, result.stderr
    decisions = read_decisions(log)
    assert [d["index"] for d in decisions] == list(range(100))
    assert all({"index", "kept", "stage", "scores"} <= d.keys() for d in decisions)
    kept = [d for d in decisions if d["kept"]]
    for d in kept:
        assert Path(d["path"]).is_file() and Path(d["path"]).with_suffix(".json").is_file()
    assert len(list((out / "frames").rglob("*.jpg"))) == len(kept)
    kept_indices = {d["index"] for d in kept}
    for event in events:
        assert kept_indices & set(event), f"nothing kept of the event at frames {event}"
    # Quiet stretches: only the first frame after an event (the new state) may pass.
    for quiet in (range(1, 20), range(32, 60), range(72, 100)):
        assert len(kept_indices & set(quiet)) <= 1, sorted(kept_indices & set(quiet))
    dropped = [d for d in decisions if not d["kept"]]
    assert dropped and all("moving" in d["scores"]["motion_vectors"] for d in decisions)
    assert {d["stage"] for d in dropped} <= {"motion_vectors", "change", "novelty", "pacing"}
    assert any(d["stage"] == "motion_vectors" for d in dropped), "the H.264 vectors dropped no still frame"
    assert all("changed" in d["scores"]["change"] for d in decisions if d["stage"] != "motion_vectors")
    assert "frames in: 100" in result.stdout and f"kept: {len(kept)}" in result.stdout
    assert "frames/s" in result.stdout


def test_replay_of_a_folder_with_a_corrupt_image_finishes(tmp_path):
    rng = np.random.default_rng(0)
    scene = textured_background(height=120, width=160)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), to_bgr(with_car(scene, x=10 * i, y=40, w=30, h=15), rng))
    (folder / "003.jpg").write_bytes(b"\xff\xd8 truncated")
    log = tmp_path / "out" / "decisions.jsonl"
    result = run_cli("replay", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "003.jpg" in result.stderr and "WARNING" in result.stderr
    assert [d["index"] for d in read_decisions(log)] == [0, 1, 2, 4, 5]


def test_replay_of_a_missing_source_is_a_clear_error(tmp_path):
    result = run_cli("replay", str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "out"))
    assert result.returncode == 66
    assert "nothing.mp4" in result.stderr and "Traceback" not in result.stderr


# Rough visits (frame ranges) from shared/testdata/SOURCES.md.
CLIPS = {
    "intel_car-detection.mp4": [(57, 110), (188, 236), (316, 372)],
    "intel_one-by-one-person-detection.mp4": [(60, 90), (179, 250), (432, 460), (503, 540), (677, 710),
                                              (742, 780), (847, 877), (925, 950), (1178, 1270), (1339, 1370)],
    "bgslibrary_video.avi": [(59, 86), (104, 156), (197, 216), (290, 316)],
}


@pytest.mark.parametrize("clip", sorted(CLIPS))
def test_real_clips_keep_every_visit_and_fewer_frames_than_the_input(testdata, tmp_path, clip):
    log = tmp_path / "out" / "decisions.jsonl"
    result = run_cli("replay", str(testdata / "videos" / clip), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    decisions = read_decisions(log)
    kept = {d["index"] for d in decisions if d["kept"]}
    for start, end in CLIPS[clip]:
        assert kept & set(range(start, end + 1)), f"{clip}: visit {start}-{end} has no kept frame"
    assert len(kept) < 0.75 * len(decisions)
    print(f"{clip}: {len(decisions)} frames, {len(kept)} kept")


def test_busy_highway_clip_ends_cleanly_at_its_truncation(testdata, tmp_path):
    log = tmp_path / "o" / "decisions.jsonl"
    result = run_cli("replay", str(testdata / "videos" / "bgslibrary_video02.avi"), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert len(read_decisions(log)) == 748


def test_replay_report_and_report_command_write_one_thumbnail_per_kept_frame(tmp_path):
    clip, _ = car_clip(tmp_path)
    out, page = tmp_path / "out", tmp_path / "run.html"
    log = out / "decisions.jsonl"
    result = run_cli("replay", str(clip), "--out", str(out), "--report", str(page))
    assert result.returncode == 0, result.stderr
    kept = sum(d["kept"] for d in read_decisions(log))
    assert kept >= 2 and page.read_text().count('class="thumb"') == kept
    again = tmp_path / "again.html"
    result = run_cli("report", str(log), "--frames", str(out / "frames"), "--out", str(again))
    assert result.returncode == 0, result.stderr
    assert again.read_text().count('class="thumb"') == kept


def test_run_and_replay_count_a_full_disk_the_same_way(tmp_path, tiny_disk):
    """Both entry points go through the runner: a disk that fills up ends neither, both count it."""
    clip, _ = car_clip(tmp_path)  # a file source: `run` ends with it
    ballast = tiny_disk / "ballast"
    ballast.write_bytes(b"\0" * 1024 * 1024)  # the frames fill the rest
    results = {}
    for command in ("run", "replay"):
        root = tiny_disk / command
        toml = tmp_path / f"{command}.toml"
        # Thresholds that keep nearly every frame, so that the disk fills up soon.
        toml.write_text(f'camera = "lot"\n[source]\nkind = "file"\nuri = "{clip}"\n[store]\nroot = "{root}"\n'
                        "[lighting]\nmin_change = 0\n[pacing]\nmin_interval = 0\n"
                        "[gates.motion_vectors]\nenabled = false\n[gates.change]\nmin_changed = 0.0\n"
                        "[gates.novelty]\nmin_distance = 0.0\nmin_region_distance = 0.0\n")
        if command == "run":
            results[command] = run_cli("run", "--config", str(toml))
        else:
            results[command] = run_cli("replay", str(clip), "--config", str(toml), "--out", str(root))
        shutil.rmtree(root)  # room for the next one
    for result in results.values():
        assert result.returncode == 0, result.stderr
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "lost to storage: not written:" in results["replay"].stdout
    assert "lost to storage" in results["run"].stderr.splitlines()[-1]  # "stopped: ... N lost to storage"


def test_replaying_twice_keeps_the_same_frames_and_never_mixes_memories(tmp_path):
    clip, _ = car_clip(tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    def replay(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "framecull", "replay", str(clip), *args], cwd=work,
                              capture_output=True, text=True, timeout=300)

    runs = [replay(), replay()]  # as a new user does: replay, change nothing (or a threshold), replay again
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    folders = sorted((work / "replay-out").iterdir())
    assert len(folders) == 2, "each replay gets a folder of its own"
    kept = [[(d["index"], d["kept"]) for d in read_decisions(f / "decisions.jsonl")] for f in folders]
    assert kept[0] == kept[1] and any(k for _, k in kept[0])
    # An explicit --out that holds a memory is refused, naming the ways out; nothing in it is touched.
    before = sorted(p.stat().st_mtime_ns for p in folders[0].rglob("*"))
    refused = replay("--out", str(folders[0]))
    assert refused.returncode == 64 and "--continue" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(p.stat().st_mtime_ns for p in folders[0].rglob("*")) == before
    # --continue builds on that memory on purpose: the same clip again adds little (only frames that
    # pacing dropped in favour of a neighbour and that differ enough from it).
    again = replay("--out", str(folders[0]), "--continue")
    assert again.returncode == 0, again.stderr
    both = read_decisions(folders[0] / "decisions.jsonl")
    assert len(both) == 2 * 100  # appended
    first, second = sum(d["kept"] for d in both[:100]), sum(d["kept"] for d in both[100:])
    assert second < first, (first, second)
    assert not both[100]["kept"] and both[100]["stage"] == "novelty", "the scene it starts with is remembered"
