"""The novelty gate's costs on one core: embedding, memory search and add, resident memory.

    python bench/bench_embed.py

Prints:
- ms/frame of the default model from a 640x360 BGR frame (resize and layout included; one
  onnxruntime thread, one OpenCV thread), and of SqueezeNet 1.1 fp16 read at fire9/concat_1
  (when ../shared/testdata is there);
- for a Memory of 1k, 10k and 100k kept frames of the default model (2304-d, grid=(16, 12), so
  FAISS holds the 2 x 2-pooled 576-d vectors): Memory.search with k=32 as the gate calls it
  (pooled FAISS search, then the exact re-rank from the float16 vectors in SQLite), split into
  its two parts; Memory.add (SQLite commit with fsync, then the index); Memory.evict of one frame
  at capacity (what follows each add once the memory is full); the open time;
- the resident memory of each of those processes, which hold the default embedder and the
  Memory as the daemon does: RSS after open, RSS after the adds (steady) and the peak (VmHWM).
  100k is opened twice: first with index.faiss missing (rebuilt from SQLite), then loading it.

Targets on the device: default model < 5 ms/frame, search < 2 ms at 10k, RSS < 300 MB at 100k.
Figures, not pass/fail. Takes about 20 s on an x86 desktop core (longer on a Pi) and about
0.5 GB of TMPDIR; set TMPDIR to the device's data disk for a true fsync cost. SQLite is read from
a warm OS cache here: just after a reboot the re-rank reads its 32 rows from the SD card.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from framecull.embedder import Embedder, ModelSpec, default_model_spec
from framecull.memory import Memory

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
SQUEEZENET = TESTDATA / "models" / "squeezenet1.1_fp16.onnx"
K = 32  # the gate's search: max(neighbours, LIGHT_NEIGHBOURS)
SIZES = (1_000, 10_000, 100_000)
BATCH = 10_000


def per_call_ms(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) * 1000 / repeat


def bench_embedders() -> Embedder:
    cv2.setNumThreads(1)
    image = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    default = Embedder(default_model_spec(), threads=1)
    total = per_call_ms(lambda: default.embed(image), 300)
    tensor = default.preprocess(image)
    model_only = per_call_ms(lambda: default._session.run(None, {"image": tensor}), 300)
    print(f"default model ({default.width}x{default.height}, dim {default.dim}, grid {default.grid}): "
          f"{total:.2f} ms/frame from 640x360 BGR ({model_only:.2f} ms in onnxruntime, the rest resize and layout)")
    if SQUEEZENET.exists():
        squeeze = Embedder(ModelSpec(SQUEEZENET, output="fire9/concat_1", dtype="float16",
                                     size=(224, 224)), threads=1)
        print(f"SqueezeNet 1.1 fp16 (224x224, fire9/concat_1 pooled, dim {squeeze.dim}): "
              f"{per_call_ms(lambda: squeeze.embed(image), 50):.2f} ms/frame from 640x360 BGR")
    else:
        print(f"SqueezeNet: skipped ({SQUEEZENET} not there)")
    cv2.setNumThreads(0)
    return default


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill_memory(root: Path, dim: int, grid: tuple[int, int], n: int) -> None:
    """n kept frames in memory.sqlite, written in batches (Memory.add would fsync each), and no
    index.faiss, so the first open rebuilds it as after a crash or an upgrade."""
    Memory(root, "bench", dim, capacity=10**9, forget_after=0.0, grid=grid).close()
    (root / "index.faiss").unlink()
    with sqlite3.connect(root / "memory.sqlite") as db:
        for start in range(0, n, BATCH):
            count = min(BATCH, n - start)
            vectors = unit_rows(count, dim, seed=start).astype("<f2")
            db.executemany(
                "INSERT INTO kept (time, file, embedding, model, threshold, light) VALUES (?, ?, ?, ?, ?, ?)",
                ((float(start + i), f"frames/{start + i:07d}.jpg", vectors[i].tobytes(), "bench", 0.05,
                  40.0 + (start + i) % 150) for i in range(count)))


def status_mb(*keys: str) -> list[float]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return [int(status[key].split()[0]) / 1024 for key in keys]


def child(root: str, dim: int, cols: int, rows: int) -> None:
    """Runs in a fresh process: the default embedder and a full Memory, as the daemon holds them."""
    Embedder(default_model_spec(), threads=1)
    start = time.perf_counter()
    memory = Memory(Path(root), "bench", dim, capacity=10**9, forget_after=0.0, grid=(cols, rows))
    opened = time.perf_counter() - start
    n = len(memory)
    memory.capacity = n  # full: from now on each add is followed by the eviction of the oldest
    (after_open,) = status_mb("VmRSS")

    queries = unit_rows(50, dim, seed=10**6)
    it = iter(range(10**9))
    search = per_call_ms(lambda: memory.search(queries[next(it) % 50], k=K), 200)
    pooled = memory._index_vectors(queries)  # the two parts of Memory.search
    faiss_part = per_call_ms(lambda: memory._index.search(pooled[next(it) % 50][None], K), 200)
    ids = [i for i, _ in memory.search(queries[0], k=K)]
    rerank = per_call_ms(lambda: memory.get_vectors(ids) @ queries[0], 200)

    add_ms, evict_ms = [], []
    for i in range(20):
        t0 = time.perf_counter()
        memory.add(queries[i], 1e9 + i, f"frames/new{i}.jpg", 0.05, None, 100.0)
        t1 = time.perf_counter()
        memory.evict(1e9 + i)
        t2 = time.perf_counter()
        add_ms.append((t1 - t0) * 1000)
        evict_ms.append((t2 - t1) * 1000)
    steady, peak = status_mb("VmRSS", "VmHWM")
    print(f"  {n:>7,} kept: search k={K} {search:.2f} ms (FAISS {faiss_part:.2f} + re-rank {rerank:.2f}), "
          f"add {np.median(add_ms):.2f} ms, evict {np.median(evict_ms):.2f} ms (medians); opened in {opened:.2f} s")
    print(f"           RSS {after_open:.0f} MB after open, {steady:.0f} MB steady, peak {peak:.0f} MB (VmHWM)")
    memory.close()


def run_child(root: Path, dim: int, grid: tuple[int, int]) -> None:
    subprocess.run([sys.executable, __file__, "--child", str(root), str(dim), str(grid[0]), str(grid[1])], check=True)


def bench_memory(dim: int, grid: tuple[int, int]) -> None:
    print(f"Memory, {dim}-d, grid {grid} (FAISS holds {dim // 4}-d pooled float16), default embedder loaded:")
    for n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:  # Memory.add's fsync time depends on TMPDIR's disk
            root = Path(tmp)
            fill_memory(root, dim, grid, n)
            size = (root / "memory.sqlite").stat().st_size / 1e6
            print(f" {n:,} kept frames (memory.sqlite {size:.0f} MB), index.faiss missing: rebuilt from SQLite")
            run_child(root, dim, grid)
            if n == SIZES[-1]:
                print(f" {n:,} kept frames, index.faiss ({(root / 'index.faiss').stat().st_size / 1e6:.0f} MB) loaded")
                run_child(root, dim, grid)


def main() -> None:
    start = time.perf_counter()
    default = bench_embedders()
    bench_memory(default.dim, default.grid)
    print(f"(one thread each for onnxruntime and FAISS; bench took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
