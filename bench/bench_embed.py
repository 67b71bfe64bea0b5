"""Embedding, FAISS and memory figures on one core.

    python bench/bench_embed.py

Prints: ms/frame of the default model from a 640x360 BGR frame (preprocessing included) and of
SqueezeNet 1.1 (when ../shared/testdata is there); FAISS search and add at 1k, 10k and 100k
stored vectors of the default model's dim (float16 as Memory stores them, and float32); the resident memory of a process holding the default
embedder and a Memory of 100k kept frames (SQLite + FAISS), with its rebuild and load times.
Targets on the device: < 5 ms/frame, search < 2 ms at 10k, RSS < 300 MB at 100k. Takes about a
minute. Figures, not pass/fail. Set TMPDIR to the device's data disk for a true fsync cost.
The first Memory.add after loading a full index reallocates the index storage once (one copy),
which is where the peak RSS of the second open comes from.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from framecull.embedder import Embedder, ModelSpec, default_model_spec
from framecull.memory import FP16, Memory

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
SQUEEZENET = TESTDATA / "models" / "squeezenet1.1_fp16.onnx"


def per_call_ms(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) * 1000 / repeat


def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)


def bench_embedders() -> int:
    image = frame()
    default = Embedder(default_model_spec(), threads=1)
    total = per_call_ms(lambda: default.embed(image), 300)
    tensor = default.preprocess(image)
    model_only = per_call_ms(lambda: default._session.run(None, {"image": tensor}), 300)
    print(f"default model ({default.width}x{default.height}, dim {default.dim}): {total:.2f} ms/frame "
          f"from 640x360 BGR ({model_only:.2f} ms in onnxruntime, the rest resize and layout)")
    if SQUEEZENET.exists():
        squeeze = Embedder(ModelSpec(SQUEEZENET, output="fire9/concat_1", mean=(104, 117, 123)), threads=1)
        print(f"SqueezeNet 1.1 fp16 (224x224, fire9/concat_1 pooled, dim {squeeze.dim}): "
              f"{per_call_ms(lambda: squeeze.embed(image), 30):.2f} ms/frame")
    else:
        print(f"SqueezeNet: skipped ({SQUEEZENET} not there)")
    return default.dim


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_faiss(dim: int) -> None:
    faiss.omp_set_num_threads(1)
    queries = unit_rows(200, dim, seed=1)
    for n in (1_000, 10_000, 100_000):
        stored = unit_rows(n, dim, seed=2)
        for name, inner in [("float16 (Memory's)", faiss.IndexScalarQuantizer(dim, FP16, faiss.METRIC_INNER_PRODUCT)),
                            ("float32 IndexFlatIP", faiss.IndexFlatIP(dim))]:
            index = faiss.IndexIDMap2(inner)
            index.add_with_ids(stored, np.arange(n, dtype=np.int64))
            it = iter(range(10**9))
            search = per_call_ms(lambda: index.search(queries[next(it) % 200][None], 1), 200 if n < 100_000 else 50)
            add = per_call_ms(lambda: index.add_with_ids(queries[:1], np.array([n + next(it)], np.int64)), 200)
            print(f"FAISS {n:>7,} vectors of {dim}-d, {name:<19}: search k=1 {search:.3f} ms, add {add:.3f} ms")
        del stored, index, inner


def build_memory(root: Path, dim: int, n: int) -> None:
    """n kept frames in memory.sqlite, written in one transaction (Memory.add fsyncs each)."""
    Memory(root, "bench", dim).close()
    (root / "index.faiss").unlink()
    vectors = unit_rows(n, dim, seed=3).astype("<f2")
    with sqlite3.connect(root / "memory.sqlite") as db:
        db.executemany(
            "INSERT INTO kept (time, file, embedding, model, threshold) VALUES (?, ?, ?, ?, ?)",
            ((float(i), f"frames/{i:07d}.jpg", vectors[i].tobytes(), "bench", 0.05) for i in range(n)))


def rss_child(root: str, dim: int) -> None:
    """Runs in a fresh process: the embedder and a full memory, as the daemon holds them."""
    Embedder(default_model_spec(), threads=1)
    start = time.perf_counter()
    memory = Memory(Path(root), "bench", dim)
    opened = time.perf_counter() - start
    query = unit_rows(1, dim, seed=4)[0]
    search = per_call_ms(lambda: memory.search(query), 20)
    add = per_call_ms(lambda: memory.add(query, 0.0, "x.jpg", 0.05, None), 20, warmup=0)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss, peak = (int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    print(f"  opened in {opened:.2f} s; Memory.search {search:.2f} ms, Memory.add {add:.2f} ms "
          f"(SQLite commit with fsync); RSS {rss:.0f} MB (peak {peak:.0f} MB)")
    memory.close()


def bench_memory(dim: int, n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:  # Memory.add's fsync time depends on TMPDIR's disk
        root = Path(tmp)
        build_memory(root, dim, n)
        print(f"Memory of {n:,} kept frames ({dim}-d; memory.sqlite "
              f"{(root / 'memory.sqlite').stat().st_size / 1e6:.0f} MB), default embedder loaded:")
        print(" first open (index.faiss missing: rebuilt from SQLite, then saved):")
        subprocess.run([sys.executable, __file__, "--rss", str(root), str(dim)], check=True)
        print(f" second open (index.faiss {(root / 'index.faiss').stat().st_size / 1e6:.0f} MB loaded):")
        subprocess.run([sys.executable, __file__, "--rss", str(root), str(dim)], check=True)


def main() -> None:
    start = time.perf_counter()
    dim = bench_embedders()
    bench_faiss(dim)
    bench_memory(dim)
    print(f"(one thread each for onnxruntime and FAISS; bench took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss":
        rss_child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
