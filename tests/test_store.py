import errno
import json
import os
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from framecull.atomic import write_atomic
from framecull.config import config_from_dict
from framecull.frame import Frame
from framecull.pipeline import Decision
from framecull.store import Store, StoreError

HASH = "0123456789abcdef"


def store_at(root, camera: str = "cam", quality: int = 92, max_bytes: int = 0) -> Store:
    return Store(root, camera, quality, HASH, max_bytes)


def frame(index: int, seed: int = 0, size=(240, 320)) -> Frame:
    rng = np.random.default_rng(seed + index)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)  # noise: JPEGs of realistic size
    return Frame(index, 1_780_000_000.0 + index * 0.2, np.zeros((12, 16), np.uint8), image=image)


def decision(f: Frame) -> Decision:
    return Decision(f.index, f.timestamp, True, "change", {"change": {"changed": 0.1}})


def test_saved_frame_has_its_sidecar_and_a_dated_name(tmp_path):
    store = Store(tmp_path, "lot-north", 80, "abc123", 0)
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
    store = store_at(tmp_path)
    f = frame(1)
    paths = {store.save(f, decision(f)) for _ in range(3)}
    assert len(paths) == 3


def test_a_puller_never_sees_a_partial_file_or_an_image_without_sidecar(tmp_path):
    store = store_at(tmp_path, quality=95)
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


def test_leftovers_of_a_crash_are_finished_or_removed_and_nothing_else_is_touched(tmp_path):
    (tmp_path / "tmp").mkdir()
    partial = tmp_path / "tmp" / "x.jpg.tmp123.0123abcd"  # framecull's temp naming: partial by definition
    partial.write_bytes(b"half")
    users = tmp_path / "tmp" / "x.jpg.123.partial"  # not framecull's: never touched
    users.write_bytes(b"mine")
    store = store_at(tmp_path)
    kept = Path(store.save(frame(1), decision(frame(1))))
    # killed between the two renames: the whole image is still in tmp/, its sidecar in frames/
    image_bytes = kept.read_bytes()
    kept.rename(tmp_path / "tmp" / f"{kept.name}.tmp999.deadbeef")
    orphan = kept.with_name("cam_20260528T000000.000000Z_000099.json")  # e.g. the puller took its image
    orphan.write_text("{}")
    store.close()
    store_at(tmp_path).close()
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [users.name]
    assert kept.read_bytes() == image_bytes and kept.with_suffix(".json").exists()
    assert orphan.exists()


def test_a_second_run_with_the_same_capture_times_overwrites_nothing(tmp_path):
    first = [store_at(tmp_path).save(frame(i), decision(frame(i))) for i in range(3)]
    again = store_at(tmp_path)
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
    subprocess.run(["umount", "-l", str(mount)], check=False)  # -l: a Store left open holds its lock file


def test_disk_full_raises_damages_nothing_and_recovers(tiny_fs):
    store = store_at(tiny_fs, quality=95)
    saved, errors = [], []
    for i in range(40):  # each noise JPEG is ~80 KB: the disk fills after about a dozen
        f = frame(i)
        try:
            saved.append(Path(store.save(f, decision(f))))
        except StoreError as exc:
            errors.append(exc)
    assert saved and errors and store.saved == len(saved)
    assert isinstance(errors[0].__cause__, OSError) and "No space left" in str(errors[0])
    assert str(errors[0]).startswith(f"frame {len(saved)} (cam_")
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
    assert Path(store.save(f, decision(f))).is_file()


def test_a_frame_that_cannot_be_encoded_raises_and_leaves_nothing(tmp_path):
    store = store_at(tmp_path)
    empty = Frame(3, 1_780_000_000.0, np.zeros((12, 16), np.uint8), image=np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(StoreError, match=r"^frame 3 \(cam_.*\.jpg\) not stored") as raised:
        store.save(empty, decision(empty))
    assert isinstance(raised.value.__cause__, cv2.error)
    assert not (tmp_path / "frames").exists() or not list((tmp_path / "frames").rglob("*.*"))
    assert store.saved == 0


def test_a_read_only_store_raises_with_the_cause(tmp_path):
    store = store_at(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    # A read-only bind mount stops root too (permissions do not).
    mounted = subprocess.run(["mount", "--bind", str(temp), str(temp)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(temp)], check=True)
        f = frame(1)
        with pytest.raises(StoreError) as raised:
            store.save(f, decision(f))
        assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.EROFS
        assert not [p for p in (tmp_path / "frames").rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", "-l", str(temp)])


def test_from_config_reads_quality_budget_camera_and_digest(tmp_path):
    config = config_from_dict({"camera": "lot-north", "store": {"root": str(tmp_path / "root"), "quality": 70},
                               "budget": {"max_bytes": "500MB"}})
    store = Store.from_config(config)
    assert (store.root, store.camera, store.quality) == (tmp_path / "root", "lot-north", 70)
    assert store.max_bytes == 500_000_000 and store.config_hash == config.digest()
    assert Store.from_config(config, tmp_path / "elsewhere").root == tmp_path / "elsewhere"


def test_write_atomic_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "index.faiss"
    write_atomic(target, b"old")

    def failing(temp: Path) -> None:
        temp.write_bytes(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(target, failing)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["index.faiss"]
    write_atomic(target, lambda temp: temp.write_bytes(b"new"))
    write_atomic(tmp_path / "status.json", '{"state": "running \u2713"}')
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["index.faiss", "status.json"]
    assert json.loads((tmp_path / "status.json").read_text()) == {"state": "running \u2713"}


def test_write_atomic_honours_the_umask_and_the_temp_dir(tmp_path):
    (tmp_path / "tmp").mkdir()
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "frame.jpg", b"x", temp_dir=tmp_path / "tmp")
    finally:
        os.umask(old)
    # a puller logging in as another user must be able to read what was kept
    assert stat.S_IMODE((tmp_path / "frame.jpg").stat().st_mode) == 0o644
    assert list((tmp_path / "tmp").iterdir()) == []


def test_max_bytes_deletes_the_oldest_pairs_first(tmp_path):
    store = store_at(tmp_path, quality=90, max_bytes=400_000)
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
    store = store_at(tmp_path, quality=90, max_bytes=400_000)
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


def test_one_process_per_root_but_one_process_may_reopen_it(tmp_path):
    import sys

    from framecull.store import StoreRootError

    first = store_at(tmp_path)
    again = store_at(tmp_path)  # a reload opens the new store before closing the old one
    again.close()
    code = ("import sys; from framecull.store import Store, StoreRootError\n"
            "try:\n    Store(sys.argv[1], 'cam', 90, '', 0)\nexcept StoreRootError as e:\n    print(e); sys.exit(78)")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 78 and f"pid {os.getpid()}" in other.stdout, other.stdout + other.stderr
    first.close()
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 0, other.stdout + other.stderr
    assert StoreRootError


def test_check_root_names_what_is_wrong(tmp_path):
    from framecull.store import StoreRootError, check_root

    afile = tmp_path / "afile"
    afile.write_text("x")
    for root, reason in ((afile, "is a file"), (afile / "sub", f"under {afile}")):
        with pytest.raises(StoreRootError, match=reason):
            check_root(root)
    check_root(tmp_path / "new" / "root")  # can be made: fine, and nothing is made
    assert not (tmp_path / "new").exists()
    (tmp_path / "ok" / "tmp").mkdir(parents=True)
    check_root(tmp_path / "ok")
    assert list((tmp_path / "ok" / "tmp").iterdir()) == []
