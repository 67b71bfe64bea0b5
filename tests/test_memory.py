"""Memory on real SQLite files and real FAISS indexes in tmp_path."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest

from framecull.memory import Memory, ModelMismatch

DIM = 32
SHA = "a" * 64
CAPACITY = 100_000
FOREVER = 0.0  # forget_after: never


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(memory: Memory, vectors: np.ndarray, times=None) -> list[int]:
    times = range(len(vectors)) if times is None else times
    return [memory.add(v, float(t), f"frames/{t}.jpg", 0.05, None) for v, t in zip(vectors, times)]


def sqlite_ids(root) -> list[int]:
    with sqlite3.connect(root / "memory.sqlite") as db:
        return [r[0] for r in db.execute("SELECT id FROM kept ORDER BY id")]


def rebuild_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "framecull.memory" and r.levelno == logging.WARNING and "rebuilding" in r.getMessage()]


def test_search_finds_nearest_with_cosine_distance(tmp_path):
    vectors = unit_vectors(50)
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert memory.search(vectors[0]) == []
        ids = fill(memory, vectors)
        query = vectors[17] + 0.05 * unit_vectors(1, seed=9)[0]
        query /= np.linalg.norm(query)
        hits = memory.search(query, k=3)
        assert [h[0] for h in hits][0] == ids[17]
        assert hits[0][1] == pytest.approx(1.0 - float(query @ vectors[17]), abs=2e-3)
        assert hits[0][1] <= hits[1][1] <= hits[2][1]
        assert len(memory.search(query, k=500)) == 50
        # a stored vector is at distance ~0 from itself, and get_vectors returns it
        assert memory.search(vectors[3])[0] == (ids[3], pytest.approx(0.0, abs=1e-3))
        np.testing.assert_allclose(memory.get_vectors([ids[3], ids[5]]), vectors[[3, 5]], atol=1e-3)
        with pytest.raises(KeyError):
            memory.get_vectors([10_000])
        with pytest.raises(ValueError, match="32-d"):
            memory.add(np.ones(5), 0.0, "x.jpg", 0.05, None)


def test_add_records_metadata(tmp_path):
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        first = memory.add(unit_vectors(1)[0], 100.5, "frames/a.jpg", 0.05, None)
        # numpy scalars, as a caller computing them would pass, are stored as plain numbers
        second = memory.add(unit_vectors(1, seed=1)[0], np.float64(101.0), "frames/b.jpg", np.float32(0.07),
                            (np.int64(first), np.float32(0.3)))
    with sqlite3.connect(tmp_path / "memory.sqlite") as db:
        rows = db.execute("SELECT id, time, file, length(embedding), model, threshold, nearest_id,"
                          " nearest_distance FROM kept ORDER BY id").fetchall()
    assert rows == [(first, 100.5, "frames/a.jpg", DIM * 2, SHA, 0.05, None, None),
                    (second, 101.0, "frames/b.jpg", DIM * 2, SHA, pytest.approx(0.07), first, pytest.approx(0.3))]


def test_kept_times_are_the_last_days_before_the_newest(tmp_path):
    day = 86400.0
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert memory.kept_times(2) == []
        fill(memory, unit_vectors(4), times=[10 * day, 12 * day, 13.5 * day, 14 * day])
        assert sorted(memory.kept_times(2)) == [13.5 * day, 14 * day]
        assert len(memory.kept_times(5)) == 4


def test_reopen_loads_saved_index(tmp_path, caplog):
    vectors = unit_vectors(40)
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        fill(memory, vectors)
        before = memory.search(vectors[7], k=5)
    assert (tmp_path / "index.faiss").stat().st_size > 40 * DIM * 2  # float16
    with caplog.at_level(logging.WARNING), Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert len(memory) == len(sqlite_ids(tmp_path)) == 40
        assert memory.search(vectors[7], k=5) == before
    assert rebuild_warnings(caplog) == []


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "other_dim", "float32_flat"])
def test_damaged_index_is_rebuilt_from_sqlite(tmp_path, caplog, damage):
    vectors = unit_vectors(30)
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        fill(memory, vectors)
        before = [memory.search(v, k=3) for v in vectors[:5]]
    index = tmp_path / "index.faiss"
    if damage == "delete":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"this is not a FAISS index" * 100)
    elif damage == "truncate":
        index.write_bytes(index.read_bytes()[:500])
    elif damage == "other_dim":  # a valid index of the wrong shape
        with Memory(tmp_path / "other", SHA, 16, CAPACITY, FOREVER) as other:
            fill(other, unit_vectors(30, dim=16))
        index.write_bytes((tmp_path / "other" / "index.faiss").read_bytes())
    else:  # right ids and vectors, but not the float16 index Memory builds
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        flat.add_with_ids(vectors, np.array(sqlite_ids(tmp_path), dtype=np.int64))
        faiss.write_index(flat, str(index))
    with caplog.at_level(logging.WARNING), Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert len(memory) == 30
        assert [memory.search(v, k=3) for v in vectors[:5]] == before
    assert len(rebuild_warnings(caplog)) == 1
    caplog.clear()
    # the rebuilt index was saved
    with caplog.at_level(logging.WARNING), Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER):
        pass
    assert rebuild_warnings(caplog) == []


def test_index_behind_sqlite_after_crash_is_rebuilt(tmp_path, caplog):
    vectors = unit_vectors(15)
    memory = Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER)
    fill(memory, vectors[:10])
    memory.save()
    ids = fill(memory, vectors[10:], times=range(10, 15))
    del memory  # a crash: committed to SQLite, the index file never saved again
    with caplog.at_level(logging.WARNING), Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert len(memory) == 15
        assert memory.search(vectors[12])[0][0] == ids[2]
    assert "holds 10 vectors where memory.sqlite has 15 rows" in " ".join(rebuild_warnings(caplog))


def test_same_count_but_other_vectors_is_rebuilt(tmp_path, caplog):
    """An index file from another memory with the same ids must not be trusted."""
    with (Memory(tmp_path / "a", SHA, DIM, CAPACITY, FOREVER) as a,
          Memory(tmp_path / "b", SHA, DIM, CAPACITY, FOREVER) as b):
        fill(a, unit_vectors(5, seed=1))
        fill(b, unit_vectors(5, seed=2))
    (tmp_path / "a" / "index.faiss").write_bytes((tmp_path / "b" / "index.faiss").read_bytes())
    with caplog.at_level(logging.WARNING), Memory(tmp_path / "a", SHA, DIM, CAPACITY, FOREVER) as a:
        assert a.search(unit_vectors(5, seed=1)[4])[0][1] == pytest.approx(0.0, abs=1e-3)
    assert "differs from memory.sqlite" in " ".join(rebuild_warnings(caplog))


def test_other_model_is_refused_unless_rebuilding(tmp_path):
    other = "b" * 64
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        old_ids = fill(memory, unit_vectors(4))
    with pytest.raises(ModelMismatch) as refused:
        Memory(tmp_path, other, DIM, CAPACITY, FOREVER)
    message = str(refused.value)
    assert SHA in message and other in message and "framecull memory rebuild" in message
    with pytest.raises(ModelMismatch, match="dim 32.*dim 64"):
        Memory(tmp_path, SHA, 64, CAPACITY, FOREVER)
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:  # the refusals changed nothing
        assert len(memory) == 4

    with Memory(tmp_path, other, DIM, CAPACITY, FOREVER, rebuild=True) as memory:
        # the frames' images (frames/<t>.jpg) are not on disk: none can be re-embedded
        assert memory.reembed(lambda image: unit_vectors(1)[0], 320) == (0, 4)
        assert len(memory) == 0 and sqlite_ids(tmp_path) == []
        new_id = memory.add(unit_vectors(1)[0], 0.0, "x.jpg", 0.05, None)
    assert new_id > max(old_ids)  # ids are never reused
    with Memory(tmp_path, other, DIM, CAPACITY, FOREVER) as memory:  # the new model is now the recorded one
        assert len(memory) == 1 and memory.stats()["model_sha256"] == other


def test_capacity_evicts_oldest_by_time(tmp_path):
    vectors = unit_vectors(8)
    times = [5, 0, 7, 1, 6, 2, 4, 3]  # insertion order is not age order
    with Memory(tmp_path, SHA, DIM, capacity=5, forget_after=FOREVER) as memory:
        ids = fill(memory, vectors, times)
        assert memory.evict(now=10.0) == 3
        assert memory.evict(now=10.0) == 0
        gone = [i for i, t in zip(ids, times) if t < 3]
        kept = [i for i, t in zip(ids, times) if t >= 3]
        assert len(memory) == 5 and sorted(sqlite_ids(tmp_path)) == sorted(kept)
        assert memory.stats()["oldest"] == 3.0
        for i, v in zip(ids, vectors):
            assert (memory.search(v)[0][0] == i) == (i in kept)
        with pytest.raises(KeyError):
            memory.get_vectors(gone[:1])
    with Memory(tmp_path, SHA, DIM, capacity=5, forget_after=FOREVER) as memory:
        assert len(memory) == 5


def test_forget_after_lets_a_scene_be_kept_again(tmp_path):
    scene, other = unit_vectors(2)
    with Memory(tmp_path, SHA, DIM, capacity=CAPACITY, forget_after=3600.0) as memory:
        old = memory.add(scene, 1000.0, "old.jpg", 0.05, None)
        recent = memory.add(other, 4000.0, "recent.jpg", 0.05, None)
        assert memory.search(scene)[0] == (old, pytest.approx(0.0, abs=1e-3))
        assert memory.evict(now=4500.0) == 0  # 3500 s old: still remembered
        assert memory.evict(now=4700.0) == 1
        hit = memory.search(scene)[0]
        assert hit[0] == recent and hit[1] > 0.5  # the scene is novel again
        assert sqlite_ids(tmp_path) == [recent]


def test_stats_and_export(tmp_path):
    vectors = unit_vectors(3)
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        ids = fill(memory, vectors, times=[10.0, 20.0, 30.0])
        memory.add(vectors[0], 40.0, "frames/x.jpg", 0.06, (ids[0], 0.01))
        memory.save()
        stats = memory.stats()
        assert stats["count"] == 4 and stats["oldest"] == 10.0 and stats["newest"] == 40.0
        assert stats["dim"] == DIM and stats["model_sha256"] == SHA and stats["index_bytes"] > 4 * DIM * 2
        assert memory.export(tmp_path / "out.npz") == 4
    data = np.load(tmp_path / "out.npz")  # no pickle needed
    assert data["embeddings"].dtype == np.float16 and data["embeddings"].shape == (4, DIM)
    np.testing.assert_allclose(data["embeddings"][:3].astype(np.float32), vectors, atol=1e-3)
    assert list(data["files"]) == ["frames/10.0.jpg", "frames/20.0.jpg", "frames/30.0.jpg", "frames/x.jpg"]
    assert list(data["nearest_ids"]) == [-1, -1, -1, ids[0]]
    assert str(data["model_sha256"]) == SHA and int(data["dim"]) == DIM


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from framecull.memory import Memory
    root, dim = sys.argv[1], int(sys.argv[2])
    memory = Memory(root, "c" * 64, dim, 100_000, 0.0)
    rng = np.random.default_rng(0)
    for n in range(100_000):
        row = memory.add(rng.normal(size=dim), float(n), f"frames/{n}.jpg", 0.05, None)
        print(n, row, flush=True)  # reported only after add() returned, i.e. committed
        if n % 5 == 4:
            memory.save()
""")


def test_kill_9_while_adding_leaves_a_consistent_memory(tmp_path):
    dim = 256  # large enough that a kill often lands inside save()
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(dim)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported = {}
    try:
        for line in process.stdout:
            n, row = map(int, line.split())
            reported[row] = n
            if len(reported) >= 60:
                break
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        stderr = process.stderr.read()
    assert len(reported) >= 60, stderr
    assert process.returncode == -signal.SIGKILL

    rng = np.random.default_rng(0)
    expected = rng.normal(size=(max(reported.values()) + 1, dim)).astype(np.float32)
    with Memory(tmp_path, "c" * 64, dim, CAPACITY, FOREVER) as memory:
        rows = sqlite_ids(tmp_path)
        assert len(memory) == len(rows) >= len(reported)
        assert set(reported) <= set(rows)
        for row, n in reported.items():
            want = expected[n] / np.linalg.norm(expected[n])
            assert memory.search(want)[0] == (row, pytest.approx(0.0, abs=1e-3))
    assert not list(tmp_path.glob("index.faiss.tmp*"))


def test_pooled_grid_index_finds_the_nearest_and_survives_a_rebuild(tmp_path, caplog):
    grid, channels = (16, 12), 12
    dim = grid[0] * grid[1] * channels
    rng = np.random.default_rng(7)
    # 30 scenes, each kept 10 times with a little noise, as a fixed camera makes them
    scenes = unit_vectors(30, seed=1, dim=dim)
    stored = np.repeat(scenes, 10, axis=0) + 0.002 * rng.normal(size=(300, dim)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    memory = Memory(tmp_path, "sha-grid", dim, CAPACITY, FOREVER, grid=grid)
    assert memory.index_dim == dim // 4
    ids = fill(memory, stored)
    exact_vectors = stored.astype(np.float16).astype(np.float32)
    for scene in (0, 17, 29):
        query = scenes[scene] + 0.002 * rng.normal(size=dim).astype(np.float32)
        query /= np.linalg.norm(query)
        exact = 1.0 - exact_vectors @ query
        [(nearest, distance)] = memory.search(query, k=1)
        assert ids.index(nearest) // 10 == scene, "a frame of another scene came back"
        assert distance == pytest.approx(float(1.0 - exact_vectors[ids.index(nearest)] @ query), abs=1e-5)
        assert distance <= exact.min() + 0.002
    [(same, zero)] = memory.search(stored[42], k=1)
    assert same == ids[42] and zero < 1e-3
    assert np.array_equal(memory.get_vectors([ids[5]])[0], exact_vectors[5])
    memory.close()
    (tmp_path / "index.faiss").unlink()
    with caplog.at_level(logging.WARNING), Memory(tmp_path, "sha-grid", dim, CAPACITY, FOREVER, grid=grid) as again:
        assert len(again) == 300 and again.search(stored[42], k=1)[0][0] == ids[42]
    assert "rebuilding" in caplog.text


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE kept (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, file TEXT NOT NULL, embedding BLOB NOT NULL,
    model TEXT NOT NULL, threshold REAL NOT NULL, nearest_id INTEGER, nearest_distance REAL, light REAL);
CREATE INDEX kept_time ON kept (time);
"""


def test_a_memory_from_before_thumbnails_opens_with_its_frames_and_records_them_from_then_on(tmp_path):
    vectors = unit_vectors(2)
    db = sqlite3.connect(tmp_path / "memory.sqlite")
    db.executescript(OLD_SCHEMA)
    with db:
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("model_sha256", SHA), ("dim", str(DIM))])
        db.execute("INSERT INTO kept (time, file, embedding, model, threshold, light) VALUES (?, ?, ?, ?, ?, ?)",
                   (1.0, "frames/a.jpg", vectors[0].astype("<f2").tobytes(), SHA, 0.05, 80.0))
    db.close()
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert len(memory) == 1 and memory.search(vectors[0])[0][0] == 1
        assert memory.get_thumbs([1]) == [None]
        new = memory.add(vectors[1], 2.0, "frames/b.jpg", 0.05, None, 90.0, thumb=b"\xff\xd8jpeg")
    with Memory(tmp_path, SHA, DIM, CAPACITY, FOREVER) as memory:
        assert memory.get_thumbs([1, new]) == [None, b"\xff\xd8jpeg"]
        assert memory.get_light([1, new]) == [80.0, 90.0]
