import json
import subprocess
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from framecull.frame import Frame
from framecull.pipeline import Decision
from framecull.store import Store


def frame(index: int, seed: int = 0, size=(240, 320)) -> Frame:
    rng = np.random.default_rng(seed + index)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)  # noise: JPEGs of realistic size
    return Frame(index, 1_780_000_000.0 + index * 0.2, np.zeros((12, 16), np.uint8), image=image)


def decision(f: Frame) -> Decision:
    return Decision(f.index, f.timestamp, True, "change", {"change": {"changed": 0.1}})


def test_saved_frame_has_its_sidecar_and_a_dated_name(tmp_path):
    store = Store(tmp_path, "lot-north", quality=80, config_hash="abc123")
    f = frame(7)
    path = Path(store.save(f, decision(f)))
    assert path.parent == tmp_path / "frames" / "2026-05-28"
    assert path.name.startswith("lot-north_20260528T") and path.suffix == ".jpg"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["camera"] == "lot-north" and sidecar["index"] == 7
    assert sidecar["image"] == path.name and sidecar["config"] == "abc123"
    assert sidecar["scores"] == {"change": {"changed": 0.1}} and sidecar["time"].endswith("Z")
    assert cv2.imread(str(path)).shape == (240, 320, 3)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_names_are_unique_for_frames_with_the_same_time(tmp_path):
    store = Store(tmp_path, "cam")
    f = frame(1)
    paths = {store.save(f, decision(f)) for _ in range(3)}
    assert len(paths) == 3


def test_a_puller_never_sees_a_partial_file_or_an_image_without_sidecar(tmp_path):
    store = Store(tmp_path, "cam", quality=95)
    frames = [frame(i, size=(480, 640)) for i in range(60)]
    problems, seen = [], set()
    done = threading.Event()

    def puller():
        while not done.is_set():
            for image in (tmp_path / "frames").rglob("*.jpg"):
                if not image.with_suffix(".json").exists():
                    problems.append(f"{image.name} without sidecar")
                data = image.read_bytes()
                if image not in seen:
                    seen.add(image)
                    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
                        problems.append(f"{image.name} is partial")
            for other in (tmp_path / "frames").rglob("*"):
                if other.is_file() and other.suffix not in (".jpg", ".json"):
                    problems.append(f"stray file {other.name}")

    thread = threading.Thread(target=puller)
    thread.start()
    for f in frames:
        assert store.save(f, decision(f))
    done.set()
    thread.join()
    assert problems == []
    assert len(seen) > 5, "the puller did not look often enough to prove anything"


def test_leftovers_of_a_crash_are_removed_at_start(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "x.jpg.123.partial").write_bytes(b"half")
    store = Store(tmp_path, "cam")
    kept = Path(store.save(frame(1), decision(frame(1))))
    orphan = kept.with_name("cam_20260528T000000.000000Z_000099.json")  # killed before its image
    orphan.write_text("{}")
    Store(tmp_path, "cam")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not orphan.exists() and kept.exists() and kept.with_suffix(".json").exists()


def test_a_second_run_with_the_same_capture_times_overwrites_nothing(tmp_path):
    first = [Store(tmp_path, "cam").save(frame(i), decision(frame(i))) for i in range(3)]
    again = Store(tmp_path, "cam")
    second = [again.save(frame(i), decision(frame(i))) for i in range(3)]
    assert not set(first) & set(second)
    assert len(list((tmp_path / "frames").rglob("*.jpg"))) == 6


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 1 MiB tmpfs: writes beyond it fail with ENOSPC like a full SD card."""
    mount = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_counts_lost_frames_damages_nothing_and_recovers(tiny_fs, caplog):
    store = Store(tiny_fs, "cam", quality=95)
    saved, lost = [], 0
    for i in range(40):  # each noise JPEG is ~80 KB: the disk fills after about a dozen
        f = frame(i)
        path = store.save(f, decision(f))
        if path:
            saved.append(Path(path))
        else:
            lost += 1
    assert saved and lost > 0 and store.lost == lost
    assert "lost to storage" in caplog.text
    images = sorted((tiny_fs / "frames").rglob("*.jpg"))
    assert images == sorted(saved), "an image that failed to write is visible"
    for image in images:
        assert cv2.imread(str(image)) is not None
        json.loads(image.with_suffix(".json").read_text())
    assert sorted((tiny_fs / "frames").rglob("*.json")) == sorted(p.with_suffix(".json") for p in images)
    assert list((tiny_fs / "tmp").iterdir()) == []
    # Space comes back (the puller removed some frames): writing resumes.
    for image in images[:4]:
        image.unlink()
        image.with_suffix(".json").unlink()
    f = frame(100)
    assert store.save(f, decision(f)) is not None


def test_max_bytes_deletes_the_oldest_pairs_first(tmp_path):
    store = Store(tmp_path, "cam", quality=90, max_bytes=400_000)
    paths = []
    for i in range(20):  # ~70 KB each: about 6 fit under the cap
        f = frame(i)
        paths.append(Path(store.save(f, decision(f))))
    remaining = sorted((tmp_path / "frames").rglob("*.jpg"))
    assert remaining == sorted(paths[-len(remaining):]), "not the oldest were deleted"
    assert 3 <= len(remaining) < 20 and store.deleted == 20 - len(remaining)
    total = sum(p.stat().st_size for p in (tmp_path / "frames").rglob("*") if p.is_file())
    assert total <= 400_000
    assert sorted((tmp_path / "frames").rglob("*.json")) == [p.with_suffix(".json") for p in remaining]


def test_max_bytes_counts_what_the_puller_took_away(tmp_path):
    store = Store(tmp_path, "cam", quality=90, max_bytes=400_000)
    for i in range(5):
        f = frame(i)
        store.save(f, decision(f))
    for path in (tmp_path / "frames").rglob("*"):
        if path.is_file():
            path.unlink()  # rsync --remove-source-files
    for i in range(5, 10):
        f = frame(i)
        store.save(f, decision(f))
    assert store.deleted == 0, "frames were deleted although the puller had made room"
