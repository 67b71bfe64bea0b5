"""Folder source: the stills of a directory (and its subfolders), in capture-time order.

Capture times come from the names, EXIF or the file times (framecull.stills). When no still
has a capture time, the stills are taken in natural name order (frame2 before frame10), 1/fps
seconds apart (1 s when fps is 0), starting when the source is opened.

A file that is not a whole image (corrupt, truncated, not an image at all) is skipped with one
warning and counted; its index stays used, so decisions keep pointing at the right file. A still
without a capture time in a folder where others have one is skipped the same way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from framecull.frame import BadPicture, Frame, analysis_plane, check_geometry
from framecull.sources import Source, SourceError
from framecull.stills import IMAGE_SUFFIXES, Naming, Still, scan

log = logging.getLogger("framecull.source.folder")

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


class StillFrame(Frame):
    """A Frame read from a file: `file` is its path, `camera` the camera its name tells."""

    __slots__ = ("file", "camera")

    def __init__(self, index: int, timestamp: float, image: np.ndarray, width: int, file: str, camera: str) -> None:
        super().__init__(index, timestamp, analysis_plane(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), width),
                         image=image)
        self.file = file
        self.camera = camera


def read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """(BGR image, "") or (None, why it is not a whole image)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, str(exc)
    if not data:
        return None, "empty file"
    if data.startswith(JPEG_START) and JPEG_END not in data.rstrip(b"\0")[-64:]:
        return None, "truncated JPEG (no end marker)"  # libjpeg would fill the missing rows with grey
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None, "not a readable image"
    try:
        check_geometry(image.shape[1], image.shape[0])  # a 30000 x 1 PNG would cost gigabytes
    except BadPicture as exc:
        return None, str(exc)
    return image, ""


class FolderSource(Source):
    """The stills of `folder`, or the given `stills` (one camera's, framecull.stills.by_camera).

    start         index of the first still to deliver (an interrupted replay goes on from there)
    on_unreadable called with (index, still, reason) for each file skipped
    """

    kind = "folder"

    def __init__(self, folder: str | Path, width: int, fps: float, naming: Naming = Naming(), *,
                 stills: list[Still] | None = None, start: int = 0,
                 on_unreadable: Callable[[int, Still, str], None] | None = None) -> None:
        self.folder = Path(folder)
        if stills is None:
            if not self.folder.is_dir():
                raise SourceError(f"folder source: {self.folder} is not a directory")
            stills = scan(self.folder, naming)
        if not stills:
            raise SourceError(f"folder source: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        self.stills = stills
        self.width = width
        self.period = 1.0 / fps if fps > 0 else 1.0
        self.timed = any(s.time is not None for s in stills)
        self.start = start
        self.frame_count = len(stills) - start
        self.on_unreadable = on_unreadable
        self.skipped = 0  # files that are not whole images
        self.untimed = 0  # stills without a capture time among timed ones

    def path(self, still: Still) -> Path:
        return self.folder / still.name

    def frames(self) -> Iterator[Frame]:
        opened = time.time()
        for index in range(self.start, len(self.stills)):
            still = self.stills[index]
            if self.timed and still.time is None:
                self.untimed += 1
                self._skip(index, still, "no capture time in the name or EXIF (try --time-format or --mtime)")
                continue
            image, reason = read_image(self.path(still))
            if image is None:
                self.skipped += 1
                self._skip(index, still, reason)
                continue
            timestamp = still.time if self.timed else opened + index * self.period
            yield StillFrame(index, timestamp, image, self.width, str(self.path(still)), still.camera)

    def _skip(self, index: int, still: Still, reason: str) -> None:
        log.warning("skipping %s: %s", self.path(still), reason)
        if self.on_unreadable is not None:
            self.on_unreadable(index, still, reason)
