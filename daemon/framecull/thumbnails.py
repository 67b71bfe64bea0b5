"""Small colour pictures of kept stills, and how much of a still changed against them.

A car parked in one bay between two stills minutes apart moves a few cells of a grid embedding
only a little, less than the light of the day moves them; at pixel level it is a plain new blob.
The memory keeps a thumbnail of every kept still, and the novelty gate asks of a still the change
gate's question (framecull.difference, its rule for stills: histogram matched, shake tolerated, the
threshold above each picture's own grain) against the thumbnails of the nearest kept frames the
embedding found: a few small comparisons per candidate, never a scan of everything kept.
In colour, because a car that takes the place of another of the same grey is a new car.
"""

from __future__ import annotations

import cv2
import numpy as np

from framecull.config import ChangeConfig, RegionsConfig
from framecull.difference import stills_difference
from framecull.regions import valid_mask

# Wide enough that a car in a lot seen whole is a blob of a few hundred pixels (a person some
# tens); as JPEG about 4 KB a kept still in memory.sqlite.
THUMB_WIDTH = 160
THUMB_QUALITY = 90
# The change gate's default blur (5 px at its 320 px analysis width), at the thumbnails' scale.
THUMB_BLUR = 3


def thumbnail(image: np.ndarray) -> bytes:
    """The thumbnail of a BGR picture as stored: THUMB_WIDTH wide, the aspect ratio kept, JPEG."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])[1].tobytes()


def decode(blob: bytes | None) -> np.ndarray | None:
    if not blob:
        return None
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)


class StillsComparison:
    """How much of a still changed against kept thumbnails, with the change gate's settings and
    the masks of [regions]."""

    def __init__(self, change: ChangeConfig, regions: RegionsConfig) -> None:
        self.min_changed = change.min_changed
        self.threshold = change.threshold
        self.min_area = change.min_area
        self.regions = regions
        self._valid: np.ndarray | None = None

    def changed(self, thumb: bytes, kept: list[bytes | None]) -> float | None:
        """The changed fraction of the still against the most similar of the kept thumbnails of its
        size, nearest first; the search ends at the first one it matches (changed under
        min_changed). None when no kept thumbnail has its size (another aspect ratio, or kept
        before thumbnails were recorded)."""
        picture = decode(thumb)
        if self._valid is None or self._valid.shape != picture.shape[:2]:
            self._valid = valid_mask(picture.shape[:2], self.regions, grow=THUMB_BLUR)
        least = None
        for reference in map(decode, kept):
            if reference is None or reference.shape != picture.shape:
                continue
            fraction = stills_difference(picture, reference, self._valid, THUMB_BLUR, self.threshold, self.min_area)
            least = fraction if least is None else min(least, fraction)
            if least < self.min_changed:
                break
        return least
