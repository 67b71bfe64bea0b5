"""The memory of kept frames: SQLite is the truth, a FAISS index is a cache of it.

root/memory.sqlite  one row per kept frame: time, file, float16 embedding (the full vector), the
                    model that made it, the threshold in force, the nearest kept frame at the
                    time, the frame's mean grey level, and for stills a small colour thumbnail
                    (JPEG; the novelty gate compares stills with it, framecull.thumbnails)
root/index.faiss    what FAISS searches (the embeddings, or their pooled grid, see below);
                    rebuilt from SQLite whenever it is missing, unreadable or does not hold
                    exactly SQLite's rows

The index is an IndexIDMap2 (ids = SQLite row ids) over an exhaustive inner-product index that
stores float16 (IndexScalarQuantizer QT_fp16): half the RAM of IndexFlatIP, and faster to scan,
memory bandwidth being the bottleneck. What it holds is L2-normalised, so inner product = cosine
similarity, and distances are 1 - inner product, in [0, 2].

Grid embeddings (Memory(grid=(cols, rows)) with an even number of cells each way) are indexed
pooled: FAISS holds each 2 x 2 block of cells averaged, a quarter of the values, L2-normalised.
It only finds candidates: search() takes the k nearest by the pooled vectors, reads their full
vectors from SQLite and returns them ordered by their exact cosine distance to the full query;
get_vectors() always reads SQLite. For the default model (16 x 12 cells x 12 channels = 2304-d)
the index holds 576-d vectors, about 115 MB at 100,000 kept frames, where the full vectors would
need 460 MB; the full vectors (about 470 MB of memory.sqlite at 100k) stay on disk. Only the k
candidates are re-ranked, so with a small k the true nearest can be missed: ask for tens (the
novelty gate asks for 32). Other embeddings (no grid, or an odd one) are indexed as they are, and
search() reports the index's own distances.

Each change commits to SQLite first, then touches the index in memory; the index file is only
written by save() (and so by close()), atomically. A crash at any moment therefore loses nothing
that was committed: at the next start the index file disagrees with SQLite and is rebuilt from it.

After a model change, Memory(..., rebuild=True) opens the old memory and reembed() re-embeds the
kept frames whose images are still under root, in place (ids, times, light kept), in one
transaction; the frames the server already pulled away cannot be re-embedded and are forgotten.

This module is the only code that knows the `kept` table: tools that only read it (the report)
use kept_files(), which needs no model.

At open the memory checks itself: a file SQLite cannot read, one that fails its integrity check
(PRAGMA quick_check, once per process) or lacks the schema is moved aside to
memory.sqlite.damaged-<UTC time> and a new one is started, which the runner fills again from the
frames on disk (Memory.forgotten); rows whose embedding is not `dim` finite float16 values are
dropped with a warning. Embeddings with NaN are refused (ValueError), never stored.

Threading: one writer thread owns a Memory (the pipeline's), and only one process opens a root
at a time. No locks are taken; FAISS runs single-threaded.

synchronous=FULL: a commit is fsynced before add() returns, so a kept frame is remembered even
across a power cut (common on battery or badly powered Pis). Commits happen once per kept frame,
a few per minute at most, so the extra fsync costs nothing that matters. NORMAL would survive a
process crash but could forget the last frames on power loss, and the daemon would then keep
them again.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sqlite3
import time as clock
from pathlib import Path
from typing import Callable, Iterable

import cv2
import faiss
import numpy as np

from framecull.atomic import write_atomic
from framecull.frame import analysis_plane

log = logging.getLogger("framecull.memory")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kept (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after eviction or a rebuild
    time REAL NOT NULL,                    -- capture time, seconds since the epoch
    file TEXT NOT NULL,                    -- the stored image, relative to the store root
    embedding BLOB NOT NULL,               -- float16 little-endian, dim values, L2-normalised
    model TEXT NOT NULL,                   -- sha256 of the model file that made the embedding
    threshold REAL NOT NULL,               -- min_distance in force when the frame was kept
    nearest_id INTEGER,                    -- nearest kept frame at that time, if any
    nearest_distance REAL,
    light REAL,                            -- mean grey level of the frame (its lighting state)
    thumb BLOB                             -- stills: JPEG, framecull.thumbnails.THUMB_WIDTH wide
);
CREATE INDEX IF NOT EXISTS kept_time ON kept (time);
"""
REBUILD_BATCH = 1_000  # rows per step when rebuilding, so memory use stays near the index size
MIN_CANDIDATES = 32  # FAISS candidates re-ranked exactly: the pooled index only approximates the order
INDEX_FILE = "index.faiss"
FP16 = faiss.ScalarQuantizer.QT_fp16
DB_FILE = "memory.sqlite"
COLUMNS = {"id", "time", "file", "embedding", "model", "threshold", "nearest_id", "nearest_distance", "light"}
# Columns added since the first schema: a memory without them gets them (empty) when opened.
ADDED_COLUMNS = {"thumb": "BLOB"}
_checked: set[tuple[int, int]] = set()  # (st_dev, st_ino) of memory files checked by this process


class ModelMismatch(Exception):
    """The memory was built with another embedding model than the one configured."""


class DamagedMemory(Exception):
    """memory.sqlite cannot serve as the memory: not a database, failing its integrity check."""


class Memory:
    def __init__(self, root: Path, model_sha256: str, dim: int, capacity: int, forget_after: float,
                 rebuild: bool = False, grid: tuple[int, int] | None = None) -> None:
        """rebuild: open a memory made with another model too; it holds nothing until reembed()."""
        if dim < 1 or capacity < 1 or forget_after < 0:
            raise ValueError("dim and capacity must be positive and forget_after not negative")
        self.root = Path(root)
        self.model_sha256 = model_sha256
        self.dim = dim
        self.capacity = capacity
        self.forget_after = forget_after
        pooled = grid is not None and grid[0] % 2 == 0 and grid[1] % 2 == 0 and dim % (grid[0] * grid[1]) == 0
        self.grid = grid if pooled else None
        self.index_dim = dim // 4 if pooled else dim
        self.index_path = self.root / INDEX_FILE
        self.root.mkdir(parents=True, exist_ok=True)
        faiss.omp_set_num_threads(1)

        try:
            self._open(rebuild)
        except DamagedMemory as exc:
            self._move_aside(exc)
            self._open(rebuild)

    # -- opening -------------------------------------------------------------------------

    def _open(self, rebuild: bool) -> None:
        self._db = self._open_db()
        try:
            self._stale = self._check_model(rebuild)  # rows of another model, awaiting reembed()
            if not self._stale:
                self._drop_malformed_rows()
            self._remove_stale_temp_files()
            self._dirty = False
            self._index = self._new_index() if self._stale else self._load_index()
        except sqlite3.OperationalError:  # locked, read-only, no space: the disk, not the file
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:  # a damaged page met while opening
            self._db.close()
            raise DamagedMemory(str(exc)) from exc
        except BaseException:
            self._db.close()
            raise

    def _open_db(self) -> sqlite3.Connection:
        path = self.root / DB_FILE
        db = sqlite3.connect(path, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            key = (os.stat(path).st_dev, os.stat(path).st_ino)
            if key not in _checked:  # reads every page: once per process, not at every reload
                problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise DamagedMemory("; ".join(problems))
                _checked.add(key)
            with db:
                db.executescript(SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(kept)")}
            if not COLUMNS <= columns:
                raise DamagedMemory(f"table kept lacks columns {sorted(COLUMNS - columns)}")
            with db:
                for name, kind in ADDED_COLUMNS.items():
                    if name not in columns:
                        db.execute(f"ALTER TABLE kept ADD COLUMN {name} {kind}")
            return db
        except sqlite3.OperationalError:  # locked, read-only, no space: the disk, not the file
            db.close()
            raise
        except (sqlite3.DatabaseError, DamagedMemory) as exc:  # not a database, malformed
            db.close()
            raise exc if isinstance(exc, DamagedMemory) else DamagedMemory(str(exc)) from exc

    def _move_aside(self, problem: Exception) -> None:
        aside = f"{DB_FILE}.damaged-{clock.strftime('%Y%m%dT%H%M%SZ', clock.gmtime())}"
        for suffix in ("", "-wal", "-shm"):
            source = self.root / (DB_FILE + suffix)
            if source.exists():
                source.replace(self.root / (aside + suffix))
        log.error("%s: memory.sqlite is damaged (%s): moved aside to %s; starting a new memory, filled again "
                  "from the kept frames still on disk", self.root, problem, aside)

    def _drop_malformed_rows(self) -> None:
        bad = [r[0] for r in self._db.execute(
            "SELECT id FROM kept WHERE typeof(embedding) != 'blob' OR length(embedding) != ?", (2 * self.dim,))]
        if bad:
            log.warning("%s: dropping %d rows whose embedding is not %d float16 values: ids %s",
                        self.root, len(bad), self.dim, bad[:10])
            with self._db:
                self._db.executemany("DELETE FROM kept WHERE id = ?", [(i,) for i in bad])

    def _check_model(self, rebuild: bool) -> bool:
        """Record the model in meta; True when the memory is another model's (allowed by rebuild),
        which stays recorded until reembed() commits."""
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        recorded = meta.get("model_sha256")
        recorded_dim = int(meta.get("dim", 0))
        if recorded is not None and (recorded, recorded_dim) != (self.model_sha256, self.dim):
            if not rebuild:
                raise ModelMismatch(
                    f"{self.root}: the memory was built with model {recorded} (dim {recorded_dim}), "
                    f"but the configured model is {self.model_sha256} (dim {self.dim}). Embeddings of "
                    "different models cannot be compared. Run `framecull memory rebuild` to re-embed "
                    "the kept frames with the configured model: those whose images are no longer on "
                    "disk (pulled away) cannot be re-embedded and are forgotten.")
            return True
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", self._meta())
        return False

    def _meta(self) -> list[tuple[str, str]]:
        return [("schema", "2"), ("model_sha256", self.model_sha256), ("dim", str(self.dim))]

    def _remove_stale_temp_files(self) -> None:
        for path in self.root.glob(INDEX_FILE + ".tmp*"):  # a save() that was interrupted
            path.unlink(missing_ok=True)

    def _load_index(self) -> faiss.IndexIDMap2:
        rows = self._db.execute("SELECT COUNT(*) FROM kept").fetchone()[0]
        if self.index_path.exists():
            try:
                index = faiss.read_index(str(self.index_path))
                problem = self._index_problem(index)
            except Exception as exc:  # FAISS raises RuntimeError with a C++ message on a bad file
                problem = f"cannot read it ({exc!s:.200})"
            if problem is None:
                return index
            log.warning("%s: %s; rebuilding it from memory.sqlite (%d rows)", self.index_path, problem, rows)
        elif rows:
            log.warning("%s: missing; rebuilding it from memory.sqlite (%d rows)", self.index_path, rows)
        return self._rebuild_index()

    def _index_problem(self, index) -> str | None:
        """Why a loaded index cannot serve as the cache of SQLite, or None when it can."""
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        if (not isinstance(inner, faiss.IndexScalarQuantizer) or inner.sq.qtype != FP16
                or index.metric_type != faiss.METRIC_INNER_PRODUCT):
            return f"it is not an IndexIDMap2 over a float16 inner-product index ({type(inner).__name__})"
        if index.d != self.index_dim:
            return f"it holds {index.d}-d vectors where {self.index_dim}-d ones are indexed"
        ids = np.sort(faiss.vector_to_array(index.id_map))
        rows = np.array([r[0] for r in self._db.execute("SELECT id FROM kept ORDER BY id")], dtype=np.int64)
        if not np.array_equal(ids, rows):
            return f"it holds {len(ids)} vectors where memory.sqlite has {len(rows)} rows (or other ids)"
        newest = self._db.execute("SELECT id, embedding FROM kept ORDER BY id DESC LIMIT 1").fetchone()
        if newest is not None and not np.array_equal(index.reconstruct(newest[0]),
                                                     self._index_vectors(_from_blob(newest[1])[None])[0]):
            return f"its vector for id {newest[0]} differs from memory.sqlite"
        return None

    def _new_index(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.index_dim, FP16, faiss.METRIC_INNER_PRODUCT))

    def _index_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """What the index holds for full vectors [n, dim]: the vectors, or their 2 x 2-pooled grid,
        L2-normalised and rounded to float16 as the index stores them."""
        if self.grid is not None:
            cols, rows = self.grid
            cells = vectors.reshape(len(vectors), rows // 2, 2, cols // 2, 2, -1).mean(axis=(2, 4))
            vectors = cells.reshape(len(vectors), -1)
            lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(lengths, 1e-12)
        return vectors.astype(np.float16).astype(np.float32)

    def _rebuild_index(self) -> faiss.IndexIDMap2:
        index = self._new_index()
        cursor = self._db.execute("SELECT id, embedding FROM kept ORDER BY id")
        malformed = []
        while batch := cursor.fetchmany(REBUILD_BATCH):
            good = [(i, blob) for i, blob in batch
                    if len(blob) == 2 * self.dim and np.isfinite(_from_blob(blob)).all()]
            malformed += sorted({i for i, _ in batch} - {i for i, _ in good})
            if good:
                ids = np.array([i for i, _ in good], dtype=np.int64)
                vectors = np.stack([_from_blob(blob) for _, blob in good])
                index.add_with_ids(self._index_vectors(vectors), ids)
        if malformed:  # cannot be compared with anything: drop them from the truth as well
            log.warning("%s: dropping %d rows whose embedding is not %d finite float16 values: ids %s",
                        self.root, len(malformed), self.dim, malformed[:10])
            with self._db:
                self._db.executemany("DELETE FROM kept WHERE id = ?", [(i,) for i in malformed])
        self._dirty = True
        release_freed_memory()
        return index

    # -- use -----------------------------------------------------------------------------

    def _vector(self, vector) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"expected a {self.dim}-d embedding, got {v.shape[0]} values")
        if not np.isfinite(v).all():
            raise ValueError("the embedding holds NaN or infinite values (a broken model?)")
        length = np.linalg.norm(v)
        return v / length if length > 0 else v

    def search(self, vector, k: int = 1) -> list[tuple[int, float]]:
        """The k nearest kept frames as (id, cosine distance in [0, 2]), nearest first."""
        if self._index.ntotal == 0 or k < 1:
            return []
        query = self._vector(vector)
        if self.grid is None:
            similarities, ids = self._index.search(query[None], min(k, self._index.ntotal))
            return [(int(i), float(np.clip(1.0 - s, 0.0, 2.0))) for s, i in zip(similarities[0], ids[0]) if i != -1]
        wanted = min(max(k, MIN_CANDIDATES), self._index.ntotal)
        _, ids = self._index.search(self._index_vectors(query[None]), wanted)
        found = [int(i) for i in ids[0] if i != -1]
        exact = 1.0 - self.get_vectors(found) @ query
        order = np.argsort(exact, kind="stable")[:k]
        return [(found[j], float(np.clip(exact[j], 0.0, 2.0))) for j in order]

    def add(self, vector, time: float, file: str, threshold: float,
            nearest: tuple[int, float] | None, light: float | None = None, thumb: bytes | None = None) -> int:
        """Remember a kept frame; committed to SQLite before it returns. Returns its id."""
        if self._stale:
            raise RuntimeError(f"{self.root}: the memory is another model's; reembed() it first")
        # stored as float16; the index gets the same rounded values, so a rebuild changes nothing
        half = self._vector(vector).astype("<f2")
        nearest_id, nearest_distance = (int(nearest[0]), float(nearest[1])) if nearest else (None, None)
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO kept (time, file, embedding, model, threshold, nearest_id, nearest_distance, light, thumb)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (float(time), str(file), half.tobytes(), self.model_sha256, float(threshold),
                 nearest_id, nearest_distance, None if light is None else float(light), thumb))
        row_id = cursor.lastrowid
        self._index.add_with_ids(self._index_vectors(half.astype(np.float32)[None]), np.array([row_id], dtype=np.int64))
        self._dirty = True
        return row_id

    def forgotten(self, files: list[str]) -> list[str]:
        """Of the stored files given (relative to root; names sort by capture time), those this
        memory should hold and does not: the ones stored after the newest remembered frame (a stop
        between storing and remembering), or all of them when the memory is empty (missing, or
        damaged and moved aside: said loudly)."""
        newest = self._db.execute("SELECT file FROM kept ORDER BY id DESC LIMIT 1").fetchone()
        if newest is None:
            if files:
                log.error("%s: the memory is empty beside %d kept frames on disk: remembering them again "
                          "from their images. Frames already pulled away cannot be: scenes like theirs may "
                          "be kept again", self.root, len(files))
            return list(files)
        later = [f for f in files if f > newest[0]]
        known = set()
        for start in range(0, len(later), 500):  # SQLite takes a limited number of parameters
            chunk = later[start:start + 500]
            known |= {r[0] for r in self._db.execute(
                f"SELECT file FROM kept WHERE file IN ({','.join('?' * len(chunk))})", chunk)}
        missing = [f for f in later if f not in known]
        if missing:
            log.warning("%s: %d kept frames on disk are not in the memory (stopped between storing and "
                        "remembering them): remembering them now", self.root, len(missing))
        return missing

    def kept_times(self, days: float) -> list[float]:
        """Capture times of the frames remembered, from `days` before the newest one."""
        rows = self._db.execute("SELECT time FROM kept WHERE time > (SELECT MAX(time) FROM kept) - ?",
                                (days * 86400.0,))
        return [row[0] for row in rows]

    def get_vectors(self, ids: Iterable[int]) -> np.ndarray:
        """float32 [len(ids), dim] from SQLite, in the order given; KeyError for an unknown id."""
        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        marks = ",".join("?" * len(ids))
        found = dict(self._db.execute(f"SELECT id, embedding FROM kept WHERE id IN ({marks})", ids))
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no kept frame with id {missing[0]}")
        return np.stack([_from_blob(found[i]) for i in ids])

    def get_light(self, ids: Iterable[int]) -> list[float | None]:
        """The recorded mean grey level of each kept frame, in the order given (None: unknown)."""
        ids = [int(i) for i in ids]
        marks = ",".join("?" * len(ids))
        found = dict(self._db.execute(f"SELECT id, light FROM kept WHERE id IN ({marks})", ids)) if ids else {}
        return [found.get(i) for i in ids]

    def get_thumbs(self, ids: Iterable[int]) -> list[bytes | None]:
        """The recorded thumbnail (JPEG) of each kept still, in the order given (None: none recorded)."""
        ids = [int(i) for i in ids]
        marks = ",".join("?" * len(ids))
        found = dict(self._db.execute(f"SELECT id, thumb FROM kept WHERE id IN ({marks})", ids)) if ids else {}
        return [found.get(i) for i in ids]

    def evict(self, now: float) -> int:
        """Forget frames older than forget_after, then the oldest beyond capacity. Returns the count."""
        ids: list[int] = []
        cutoff = now - self.forget_after if self.forget_after > 0 else float("-inf")
        if self.forget_after > 0:
            ids += [r[0] for r in self._db.execute("SELECT id FROM kept WHERE time < ?", (cutoff,))]
        excess = self._index.ntotal - len(ids) - self.capacity
        if excess > 0:
            ids += [r[0] for r in self._db.execute(
                "SELECT id FROM kept WHERE time >= ? ORDER BY time, id LIMIT ?", (cutoff, excess))]
        if not ids:
            return 0
        with self._db:
            self._db.executemany("DELETE FROM kept WHERE id = ?", [(i,) for i in ids])
        self._index.remove_ids(np.array(ids, dtype=np.int64))
        self._dirty = True
        return len(ids)

    def save(self) -> None:
        """Write the index file atomically; on failure (a full disk) the old file stays valid."""
        if self._stale or (not self._dirty and self.index_path.exists()):
            return
        write_atomic(self.index_path, lambda temp: faiss.write_index(self._index, str(temp)))
        self._dirty = False

    def reembed(self, embed: Callable[[np.ndarray], np.ndarray], analysis_width: int) -> tuple[int, int]:
        """Re-embed, with this memory's model, every kept frame another model embedded, from its
        image under root; returns (re-embedded, forgotten).

        Each row keeps its id, time, file, threshold, nearest, light and thumbnail; a frame whose
        image is gone is forgotten. A row without a light (a rebuild by an older version lost it)
        gets it back from its image: the mean of its gray analysis plane, as the novelty gate
        measures it. One transaction: if interrupted, the memory is as it was."""
        rows = self._db.execute("SELECT id, file, model, light FROM kept ORDER BY id").fetchall()
        reembedded, gone = 0, []
        # the old index first: a crash after this leaves SQLite whole and no index, still consistent
        self.index_path.unlink(missing_ok=True)
        with self._db:
            for row_id, file, model, light in rows:
                current = model == self.model_sha256
                if current and light is not None:
                    continue
                image = cv2.imread(str(self.root / file)) if file else None
                if image is None:
                    if not current:
                        gone.append(row_id)
                    continue
                if light is None:
                    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                    light = float(analysis_plane(gray, analysis_width).mean())
                if current:
                    self._db.execute("UPDATE kept SET light = ? WHERE id = ?", (light, row_id))
                    continue
                blob = self._vector(embed(image)).astype("<f2").tobytes()
                self._db.execute("UPDATE kept SET embedding = ?, model = ?, light = ? WHERE id = ?",
                                 (blob, self.model_sha256, light, row_id))
                reembedded += 1
            self._db.executemany("DELETE FROM kept WHERE id = ?", [(i,) for i in gone])
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", self._meta())
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL held every new embedding
        log.info("%s: re-embedded %d kept frames with model %s; forgot %d whose images are gone",
                 self.root, reembedded, self.model_sha256, len(gone))
        self._stale = False
        self._index = self._rebuild_index()
        self.save()
        return reembedded, len(gone)

    def close(self) -> None:
        if self._db is None:
            return
        self.save()
        self._db.close()
        self._db = None

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def stats(self) -> dict:
        count, oldest, newest = self._db.execute("SELECT COUNT(*), MIN(time), MAX(time) FROM kept").fetchone()
        return {
            "count": count,
            "oldest": oldest,
            "newest": newest,
            "model_sha256": self.model_sha256,
            "dim": self.dim,
            "capacity": self.capacity,
            "forget_after": self.forget_after,
            "index_bytes": self.index_path.stat().st_size if self.index_path.exists() else 0,
        }

    def export(self, path: Path) -> int:
        """Write every kept frame's embedding and metadata to an .npz for a server. Returns the count.

        Arrays: ids int64, times float64, files str, embeddings float16 [n, dim], thresholds,
        nearest_ids (-1 = none), nearest_distances (NaN = none); model_sha256 and dim as 0-d arrays.
        Readable with numpy.load(path) (no pickle).
        """
        rows = self._db.execute("SELECT id, time, file, embedding, threshold, nearest_id, nearest_distance"
                                " FROM kept ORDER BY id").fetchall()
        embeddings = np.empty((len(rows), self.dim), dtype=np.float16)
        for n, row in enumerate(rows):
            embeddings[n] = np.frombuffer(row[3], "<f2")

        def write(temp: Path) -> None:
            with open(temp, "wb") as f:  # a file object: given a path, np.savez would append ".npz"
                np.savez(
                    f,
                    ids=np.array([r[0] for r in rows], dtype=np.int64),
                    times=np.array([r[1] for r in rows], dtype=np.float64),
                    files=np.array([r[2] for r in rows], dtype=str),
                    embeddings=embeddings,
                    thresholds=np.array([r[4] for r in rows], dtype=np.float64),
                    nearest_ids=np.array([-1 if r[5] is None else r[5] for r in rows], dtype=np.int64),
                    nearest_distances=np.array([np.nan if r[6] is None else r[6] for r in rows],
                                               dtype=np.float64),
                    model_sha256=np.array(self.model_sha256),
                    dim=np.array(self.dim),
                )

        write_atomic(path, write)
        return len(rows)


def kept_files(root: Path) -> dict[int, str]:
    """id -> file (relative to root) of every kept frame in root/memory.sqlite, read-only and
    without the model; {} when there is no memory. sqlite3.Error when it cannot be read."""
    db = Path(root) / "memory.sqlite"
    if not db.is_file():
        return {}
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, file FROM kept"))
    finally:
        conn.close()


def release_freed_memory() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise: +150 MB resident after rebuilding
    100k fine-grid vectors; +10% after a reload built a second runner). A no-op where
    malloc_trim is missing."""
    try:  # the process's own symbols: ctypes.util.find_library would start a subprocess each time
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)
