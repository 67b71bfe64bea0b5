"""Writes kept frames where a puller takes them: atomically, sidecar first.

<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.jpg   the image
<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.json  its sidecar
<root>/tmp/                                             files being written (never pulled)

Each file is written to tmp/ on the same filesystem, fsynced, then renamed into frames/
(framecull.atomic), so an rsync of frames/ at any moment sees whole files only. The sidecar is
renamed in before its image, so every image a puller sees has its sidecar. A frame that cannot
be written raises StoreError and leaves nothing of itself in frames/; counting and logging such
failures is the caller's business.

Both files are written whole to tmp/ before either is renamed, so a process killed between the
two renames leaves a whole image in tmp/ beside its sidecar in frames/: the next start renames it
into place (finish_interrupted). Every other temp file of framecull's own naming in tmp/ is partial
and removed; nothing else, in tmp/ or frames/, is ever touched by the start-up cleanup.

One process per store root: a Store holds an exclusive lock on <root>/framecull.lock while it is
open (StoreRootError when another process holds it). check_root() is the one check that the root
can be used at all (a folder, writable, not full, frames/ on tmp/'s filesystem); the daemon exits
78 when it fails, and check-config can call it too.

With `max_bytes`, when frames/ grows past the cap the oldest image+sidecar pairs are deleted
(image first, so no image is ever left without its sidecar) until it is back under 95% of the
cap. Only framecull's own pairs are deleted: the memory of what was kept stays.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import cv2

from framecull.atomic import commit, discard, is_temp, write_temp
from framecull.frame import Frame

log = logging.getLogger("framecull.store")


LOCK_FILE = "framecull.lock"
# <camera>_<UTC time>_<seq>.jpg: the only images max_bytes may delete (a kept still is stored as
# the file it was, so it keeps its own suffix)
FRAME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*_(?P<time>(?P<day>\d{4}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01]))"
                        r"T([01]\d|2[0-3])[0-5]\d[0-5]\d\.\d{6})Z_\d{6,}"
                        r"\.(jpg|jpeg|png|bmp|tif|tiff|webp|json)$")


def capture_time(image: Path) -> float | None:
    """The capture time (seconds since the epoch) in the name of a stored frame (FRAME_NAME); None
    when the name is not one (or its date does not exist: 30 February)."""
    match = FRAME_NAME.match(image.name)
    try:
        return datetime.strptime(match["time"], "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def utc_text(when: datetime | float | None) -> str | None:
    """A time as sidecars, --list files and the status file write it: ISO 8601, UTC, with a Z."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


class StoreError(Exception):
    """A kept frame could not be written (disk full, read-only, not encodable); the cause is chained."""


class StoreRootError(Exception):
    """The store root cannot be used at all (a file, read-only, full, frames/ on another
    filesystem, in use by another process): a permanent problem, exit 78. str() is one line."""


def check_root(root: str | Path) -> None:
    """Raise StoreRootError unless framecull can work in `root`: it is a folder or can be made
    one, framecull may write there (not read-only, not full), and frames/ (when it exists) is on
    tmp/'s filesystem. Creates nothing that is left behind."""
    root = Path(root)
    existing = next(p for p in (root, *root.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under {existing}, which is a file"
        raise StoreRootError(f"store root {root} {where}, not a folder")
    if existing != root:  # the daemon creates it: its nearest folder must be writable
        if not os.access(existing, os.W_OK | os.X_OK):
            raise StoreRootError(f"store root {root} cannot be created: {existing} is not writable")
        return
    for sub in ("tmp", "frames"):
        if (root / sub).exists() and not (root / sub).is_dir():
            raise StoreRootError(f"store root {root}: {sub} is a file, not a folder")
    probe_dir = root / "tmp" if (root / "tmp").is_dir() else root
    try:
        discard(write_temp(probe_dir / ".framecull-probe", b"\0" * 4096))
    except OSError as exc:
        reason = {errno.EROFS: "read-only", errno.ENOSPC: "full", errno.EDQUOT: "full (quota)"}.get(
            exc.errno, exc.strerror or str(exc))
        raise StoreRootError(f"store root {root} is not writable: {reason} ({probe_dir})") from None
    if (root / "frames").is_dir():  # tmp/ is made on the root's filesystem when missing
        if os.stat(probe_dir).st_dev != os.stat(root / "frames").st_dev:
            raise StoreRootError(
                f"store root {root}: frames/ ({(root / 'frames').resolve()}) is on another filesystem than "
                f"tmp/, so a frame cannot be renamed into place whole; mount the other disk at the store root "
                f"instead of linking frames/ to it")
    if (root / "frames").is_symlink():
        raise StoreRootError(f"store root {root}: frames/ is a symbolic link, which the pull key does not follow; "
                             f"make frames/ a folder of the store root")


_locks: dict[tuple[int, int], list] = {}  # (st_dev, st_ino) of a root -> [fd, Stores using it]


def _lock(root: Path) -> tuple[int, int]:
    """Take the root's lock for this process (shared by its Stores: a reload opens a new Store
    before closing the old one); StoreRootError when another process holds it."""
    st = os.stat(root)
    key = (st.st_dev, st.st_ino)
    if key in _locks:
        _locks[key][1] += 1
        return key
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreRootError(f"store root {root} is in use by another framecull process (pid {holder}); "
                             "one process per store root: give each camera its own [store] root") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _locks[key] = [fd, 1]
    return key


def _unlock(key: tuple[int, int]) -> None:
    held = _locks.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _locks[key]
        os.close(held[0])  # releases the flock


class Store:
    def __init__(self, root: str | Path, camera: str, quality: int, config_hash: str, max_bytes: int) -> None:
        self.root = Path(root)
        self.frames_dir = self.root / "frames"
        self.tmp_dir = self.root / "tmp"
        self.camera = camera
        self.quality = quality
        self.config_hash = config_hash
        self.saved = 0
        self._seq = 0
        self.max_bytes = max_bytes  # 0 = no cap
        self.deleted = 0  # old frames deleted to stay under max_bytes
        self.link_stills = False  # kept stills: hard-link the input file instead of copying it
        self._lock = None
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)  # frames/ comes with the first frame
        except OSError:
            pass  # check_root says why, in one line
        check_root(self.root)
        self._lock = _lock(self.root)
        self.finish_interrupted()
        self._bytes = self._measure() if max_bytes else 0

    @classmethod
    def from_config(cls, config, root: str | Path | None = None) -> "Store":
        """The store the per-camera config describes, at `root` (default: its store root)."""
        return cls(config.store_root if root is None else root, config.camera, config.store.quality,
                   config.digest(), int(config.budget.max_bytes))

    def finish_interrupted(self) -> None:
        """What a killed process left in tmp/ (only framecull's own temp files are looked at): an
        image whose sidecar is in frames/ was whole before its sidecar appeared and is renamed into
        place; anything else is partial and removed."""
        for temp in sorted(self.tmp_dir.iterdir()):
            target = is_temp(temp)
            if target is None:
                continue  # not framecull's: never touched
            match = FRAME_NAME.match(target)
            if match and not target.endswith(".json"):
                day = match["day"]
                image = self.frames_dir / f"{day[:4]}-{day[4:6]}-{day[6:]}" / target
                if image.with_suffix(".json").is_file() and not image.exists():
                    try:
                        commit(temp, image)
                        log.info("finished storing %s (the process was stopped between its two renames)", image)
                        continue
                    except OSError as exc:
                        log.warning("cannot finish storing %s: %s", image, exc)
            discard(temp)

    def close(self) -> None:
        """Release the root's lock (the last Store of this process on the root releases it)."""
        if self._lock is not None:
            _unlock(self._lock)
            self._lock = None

    def load(self, image: Path, width: int) -> Frame | None:
        """A stored frame as its sidecar describes it (None when it cannot be read)."""
        try:
            meta = json.loads(image.with_suffix(".json").read_text())
            picture = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if picture is None:
                raise ValueError("not a readable image")
            return Frame.from_bgr(int(meta["index"]), float(meta["timestamp"]), picture, width)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the stored frame %s: %s", image, exc)
            return None

    def images(self) -> list[Path]:
        """framecull's stored images that have their sidecar, oldest first."""
        if not self.frames_dir.is_dir():
            return []
        return sorted((p for p in self.frames_dir.glob("*/*") if p.suffix != ".json"
                       and FRAME_NAME.match(p.name) and p.with_suffix(".json").is_file()), key=lambda p: p.name)

    def save(self, frame: Frame, decision) -> str:
        """Store one kept frame; returns the image path. StoreError when it could not be written."""
        try:
            when = datetime.fromtimestamp(frame.timestamp, timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:  # sources.steady() keeps labels sane
            raise StoreError(f"frame {frame.index}: capture time {frame.timestamp} is not a date: {exc}") from exc
        day_dir = self.frames_dir / when.strftime("%Y-%m-%d")
        original = Path(decision.file) if getattr(decision, "file", None) else None
        suffix = original.suffix.lower() if original is not None else ".jpg"
        while True:  # the sequence restarts with the process: never overwrite an earlier run's frame
            self._seq += 1
            stem = f"{self.camera}_{when.strftime('%Y%m%dT%H%M%S.%fZ')}_{self._seq:06d}"
            image_path, sidecar_path = day_dir / f"{stem}{suffix}", day_dir / f"{stem}.json"
            if not (image_path.exists() or sidecar_path.exists()):
                break
        try:
            if original is not None:  # a still: kept as the file it is (its size, format, EXIF)
                jpeg = self._link(original) if self.link_stills else original.read_bytes()
            else:
                ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise ValueError("JPEG encoding failed")
                jpeg = jpeg.tobytes()
            sidecar = json.dumps({
                "camera": self.camera,
                "time": utc_text(when),
                "timestamp": frame.timestamp,
                "index": frame.index,
                "image": image_path.name,
                "width": frame.image.shape[1],
                "height": frame.image.shape[0],
                "stage": decision.stage,
                "scores": decision.scores,
                "config": self.config_hash,
                **({"file": str(original)} if original is not None else {}),  # the input still
            }, indent=1).encode()
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            day_dir.mkdir(parents=True, exist_ok=True)
            # Both whole on disk before either appears: see finish_interrupted().
            sidecar_temp = write_temp(sidecar_path, sidecar, temp_dir=self.tmp_dir)
            try:
                image_temp = write_temp(image_path, jpeg, temp_dir=self.tmp_dir)
            except BaseException:
                discard(sidecar_temp)
                raise
            try:
                commit(sidecar_temp, sidecar_path)
            except BaseException:
                discard(image_temp)
                raise
            try:
                commit(image_temp, image_path)
            except BaseException:
                sidecar_path.unlink(missing_ok=True)
                raise
        except (OSError, ValueError, cv2.error) as exc:
            raise StoreError(f"frame {frame.index} ({image_path.name}) not stored: {exc}") from exc
        self.saved += 1
        if self.max_bytes:
            self._bytes += (image_path.stat().st_size if callable(jpeg) else len(jpeg)) + len(sidecar)
            self._enforce_cap()
        return str(image_path)

    @staticmethod
    def _link(original: Path):
        """A writer for write_temp that hard-links `original` in place of the temp file (a copy
        when tmp/ is on another filesystem). The input file is not modified."""
        def write(temp: Path) -> None:
            temp.unlink()
            try:
                os.link(original, temp)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copyfile(original, temp)
        return write

    def _measure(self) -> int:
        total = 0
        for path in self.frames_dir.glob("*/*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except FileNotFoundError:  # the puller took it meanwhile
                pass
        return total

    def _enforce_cap(self) -> None:
        if self._bytes <= self.max_bytes:
            return
        self._bytes = self._measure()  # the puller may have taken files away since
        target = int(self.max_bytes * 0.95)
        deleted = 0
        # Names start with <camera>_<UTC time>, so name order is age order.
        for image in self.images():
            if self._bytes <= target:
                break
            sidecar = image.with_suffix(".json")
            for path in (image, sidecar):
                try:
                    size = path.stat().st_size
                    path.unlink()
                    self._bytes -= size
                except FileNotFoundError:
                    pass
            deleted += 1
        for day in self.frames_dir.iterdir():
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", day.name) and day.is_dir() and not any(day.iterdir()):
                day.rmdir()
        self.deleted += deleted
        log.info("deleted the %d oldest frames to keep frames/ under %d bytes", deleted, self.max_bytes)
