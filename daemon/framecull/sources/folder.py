"""Folder source: the images of a directory, in natural name order (frame2 before frame10)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterator

import cv2

from framecull.frame import Frame
from framecull.sources import Source, SourceError

log = logging.getLogger("framecull.source.folder")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


class FolderSource(Source):
    """Images are taken to be 1/fps seconds apart (1 s when fps is 0), starting when opened.

    An image that cannot be read is logged and skipped; its index stays used so that
    decisions keep pointing at the right file.
    """

    kind = "folder"

    def __init__(self, folder: str | Path, width: int, fps: float) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"folder source: {self.folder} is not a directory")
        self.paths = sorted(
            (p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=_natural_key,
        )
        if not self.paths:
            raise SourceError(f"folder source: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        self.width = width
        self.period = 1.0 / fps if fps > 0 else 1.0
        self.frame_count = len(self.paths)
        self.skipped = 0

    def frames(self) -> Iterator[Frame]:
        start = time.time()
        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or image.size == 0:
                self.skipped += 1
                log.warning("skipping unreadable image %s", path)
                continue
            yield Frame.from_bgr(index, start + index * self.period, image, self.width)
