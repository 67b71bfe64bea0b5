"""Writes kept frames where a puller takes them: atomically, sidecar first.

<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.jpg   the image
<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.json  its sidecar
<root>/tmp/                                             files being written (never pulled)

Each file is written to tmp/ on the same filesystem, fsynced, then renamed into frames/, so
an rsync of frames/ at any moment sees whole files only. The sidecar is renamed in before
its image, so every image a puller sees has its sidecar.

With `max_bytes`, when frames/ grows past the cap the oldest image+sidecar pairs are deleted
(image first, so no image is ever left without its sidecar) until it is back under 95% of the
cap. Only files are deleted: the memory of what was kept stays.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

from framecull.frame import Frame

log = logging.getLogger("framecull.store")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, root: str | Path, camera: str, quality: int = 92, config_hash: str = "",
                 max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.frames_dir = self.root / "frames"
        self.tmp_dir = self.root / "tmp"
        self.camera = camera
        self.quality = quality
        self.config_hash = config_hash
        self.saved = 0
        self.lost = 0  # kept frames that could not be written (disk full, read-only, ...)
        self._seq = 0
        self._last_error = 0.0
        self.max_bytes = max_bytes
        self.deleted = 0  # old frames deleted to stay under max_bytes
        self._clean_tmp()
        self._bytes = self._measure() if max_bytes else 0

    @classmethod
    def from_config(cls, config, root: Path | None = None) -> "Store":
        """The store the per-camera config describes, at `root` (default: its store root)."""
        return cls(root or config.store_root, config.camera, config.store.quality, config.digest(),
                   int(config.store.max_bytes))

    def _clean_tmp(self) -> None:
        """Leftovers of a crash: anything in tmp/ is partial by definition, and a sidecar whose
        image never arrived (killed between the two renames) describes nothing."""
        leftovers = list(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []
        leftovers += [p for p in self.frames_dir.glob("*/*.json") if not p.with_suffix(".jpg").exists()]
        for leftover in leftovers:
            try:
                leftover.unlink()
            except OSError as exc:
                log.warning("cannot remove leftover %s: %s", leftover, exc)

    def _write_atomic(self, data: bytes, target: Path) -> None:
        tmp = self.tmp_dir / f"{target.name}.{os.getpid()}.partial"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def save(self, frame: Frame, decision) -> str | None:
        """Store one kept frame; returns the image path, or None when it could not be written."""
        when = datetime.fromtimestamp(frame.timestamp, timezone.utc)
        day_dir = self.frames_dir / when.strftime("%Y-%m-%d")
        while True:  # the sequence restarts with the process: never overwrite an earlier run's frame
            self._seq += 1
            stem = f"{self.camera}_{when.strftime('%Y%m%dT%H%M%S.%fZ')}_{self._seq:06d}"
            image_path, sidecar_path = day_dir / f"{stem}.jpg", day_dir / f"{stem}.json"
            if not (image_path.exists() or sidecar_path.exists()):
                break
        sidecar = {
            "camera": self.camera,
            "time": when.isoformat().replace("+00:00", "Z"),
            "timestamp": frame.timestamp,
            "index": frame.index,
            "image": image_path.name,
            "width": frame.image.shape[1],
            "height": frame.image.shape[0],
            "stage": decision.stage,
            "scores": decision.scores,
            "config": self.config_hash,
        }
        try:
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            day_dir.mkdir(parents=True, exist_ok=True)
            self._write_atomic(json.dumps(sidecar, indent=1).encode(), sidecar_path)
            try:
                self._write_atomic(jpeg.tobytes(), image_path)
            except BaseException:
                sidecar_path.unlink(missing_ok=True)
                raise
            _fsync_dir(day_dir)
        except (OSError, ValueError) as exc:
            self.lost += 1
            self._log_error(f"frame {frame.index} lost to storage ({self.lost} lost so far): {exc}")
            return None
        self.saved += 1
        if self.max_bytes:
            self._bytes += len(jpeg) + sidecar_path.stat().st_size
            self._enforce_cap()
        return str(image_path)

    def _measure(self) -> int:
        return sum(p.stat().st_size for p in self.frames_dir.glob("*/*") if p.is_file())

    def _enforce_cap(self) -> None:
        if self._bytes <= self.max_bytes:
            return
        self._bytes = self._measure()  # the puller may have taken files away since
        target = int(self.max_bytes * 0.95)
        deleted = 0
        # Names start with <camera>_<UTC time>, so name order is age order.
        for image in sorted(self.frames_dir.glob("*/*.jpg"), key=lambda p: p.name):
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
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()
        self.deleted += deleted
        log.info("deleted the %d oldest frames to keep frames/ under %d bytes", deleted, self.max_bytes)

    def _log_error(self, message: str) -> None:
        # A full disk fails every write; one line a minute is enough for the journal.
        now = time.monotonic()
        if now - self._last_error >= 60.0 or self.lost == 1:
            log.error(message)
            self._last_error = now
