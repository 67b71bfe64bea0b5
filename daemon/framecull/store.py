"""Writes kept frames where a puller takes them: atomically, sidecar first.

<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.jpg   the image
<root>/frames/YYYY-MM-DD/<camera>_<UTC time>_<seq>.json  its sidecar
<root>/tmp/                                             files being written (never pulled)

Each file is written to tmp/ on the same filesystem, fsynced, then renamed into frames/
(framecull.atomic), so an rsync of frames/ at any moment sees whole files only. The sidecar is
renamed in before its image, so every image a puller sees has its sidecar. A frame that cannot
be written raises StoreError and leaves nothing of itself in frames/; counting and logging such
failures is the caller's business.

With `max_bytes`, when frames/ grows past the cap the oldest image+sidecar pairs are deleted
(image first, so no image is ever left without its sidecar) until it is back under 95% of the
cap. Only files are deleted: the memory of what was kept stays.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import cv2

from framecull.atomic import write_atomic
from framecull.frame import Frame

log = logging.getLogger("framecull.store")


class StoreError(Exception):
    """A kept frame could not be written (disk full, read-only, not encodable); the cause is chained."""


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
        self._clean_tmp()
        self._bytes = self._measure() if max_bytes else 0

    @classmethod
    def from_config(cls, config, root: str | Path | None = None) -> "Store":
        """The store the per-camera config describes, at `root` (default: its store root)."""
        return cls(config.store_root if root is None else root, config.camera, config.store.quality,
                   config.digest(), int(config.budget.max_bytes))

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

    def save(self, frame: Frame, decision) -> str:
        """Store one kept frame; returns the image path. StoreError when it could not be written."""
        when = datetime.fromtimestamp(frame.timestamp, timezone.utc)
        day_dir = self.frames_dir / when.strftime("%Y-%m-%d")
        while True:  # the sequence restarts with the process: never overwrite an earlier run's frame
            self._seq += 1
            stem = f"{self.camera}_{when.strftime('%Y%m%dT%H%M%S.%fZ')}_{self._seq:06d}"
            image_path, sidecar_path = day_dir / f"{stem}.jpg", day_dir / f"{stem}.json"
            if not (image_path.exists() or sidecar_path.exists()):
                break
        try:
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise ValueError("JPEG encoding failed")
            sidecar = json.dumps({
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
            }, indent=1).encode()
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            day_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(sidecar_path, sidecar, temp_dir=self.tmp_dir)
            try:
                write_atomic(image_path, jpeg.tobytes(), temp_dir=self.tmp_dir)
            except BaseException:
                sidecar_path.unlink(missing_ok=True)
                raise
        except (OSError, ValueError, cv2.error) as exc:
            raise StoreError(f"frame {frame.index} ({image_path.name}) not stored: {exc}") from exc
        self.saved += 1
        if self.max_bytes:
            self._bytes += len(jpeg) + len(sidecar)
            self._enforce_cap()
        return str(image_path)

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
