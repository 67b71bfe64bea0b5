"""Small colour pictures of kept stills, and how much of a still changed against them.

A car parked in one bay between two stills minutes apart moves a few cells of a grid embedding
only a little, less than the light of the day moves them; at pixel level it is a plain new blob.
The memory keeps a thumbnail of every kept still, and the novelty gate asks of a still the change
gate's question (framecull.difference, its rule for stills: histogram matched, shake tolerated, the
threshold above each picture's own grain) against the thumbnails of the nearest kept frames the
embedding found: a few small comparisons per candidate, never a scan of everything kept.
In colour, because a car that takes the place of another of the same grey is a new car.

Light and objects are told apart by their extent: light is smooth across a picture (floodlight
pools, a lamp, dusk coming from one side), objects are compact. The light field of two pictures is
the smooth ratio of their lights (a running median, which passes over a car); each picture is
compared in the other's light, so the scene kept by day is the same scene under floodlights, and
the field's largest step is the change of light the novelty gate judges.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from framecull.config import ChangeConfig, RegionsConfig
from framecull.difference import stills_difference
from framecull.lighting import DARKEST_MEAN
from framecull.regions import valid_mask

# Wide enough that a car in a lot seen whole is a blob of a few hundred pixels (a person some
# tens); as JPEG about 4 KB a kept still in memory.sqlite.
THUMB_WIDTH = 160
THUMB_QUALITY = 90
# The change gate's default blur (5 px at its 320 px analysis width), at the thumbnails' scale.
THUMB_BLUR = 3
# Light is smooth across a picture, objects are compact: the light that differs between a still and
# a kept one (floodlight pools, a cloud's shadow, dusk on one side) is the running median, over
# windows of this fraction of the width, of the ratio of the two pictures. An object smaller than
# about half a window (a car, a person at a fifth of the width) is an outlier to the median, so it
# stays a change; the light taken out of the picture is not one.
LIGHT_WINDOW = 0.2
_LOG_SCALE = 32.0  # log ratios as 8-bit codes for the median: 1/32 of a natural log a step


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

    def compare(self, thumb: bytes, kept: list[bytes | None], light_bar: float) -> tuple[float | None, float | None]:
        """(objects, light) of the still against the kept thumbnails of its size: objects, the
        changed fraction against the most similar of them, searched nearest first up to the first
        match (changed under min_changed); light, the least of their light steps (light_step),
        searched from the kept still nearest in mean level up to the first under `light_bar`.
        (None, None) when no kept thumbnail has its size (another aspect ratio, or kept before
        thumbnails were recorded)."""
        picture = decode(thumb)
        if self._valid is None or self._valid.shape != picture.shape[:2]:
            self._valid = valid_mask(picture.shape[:2], self.regions, grow=THUMB_BLUR)
        references = [r for r in map(decode, kept) if r is not None and r.shape == picture.shape]
        if not references:
            return None, None
        fields: dict[int, np.ndarray] = {}

        def field(i: int) -> np.ndarray:
            if i not in fields:
                fields[i] = light_field(picture, references[i])
            return fields[i]

        objects = math.inf
        for i, reference in enumerate(references):
            objects = min(objects, self.difference(picture, reference, field(i)))
            if objects < self.min_changed:
                break
        level = math.log(max(float(picture.mean()), DARKEST_MEAN))
        light = math.inf
        for i in sorted(range(len(references)),
                        key=lambda i: abs(math.log(max(float(references[i].mean()), DARKEST_MEAN)) - level)):
            light = min(light, light_step(field(i), self._valid))
            if light <= light_bar:
                break
        return objects, light

    def difference(self, picture: np.ndarray, reference: np.ndarray, field: np.ndarray) -> float:
        """The changed fraction of two pictures of one size, each relit to the other's light (field:
        their light_field), the lesser: a dim picture relit to a bright light has its grain and JPEG
        blocks amplified, a bright one relit to a dim light is compared under the dim one's grain;
        each way errs towards change for its own reason, an object differs both ways."""
        forward = stills_difference(relit(picture, field), reference, self._valid, THUMB_BLUR, self.threshold,
                                    self.min_area)
        if forward < self.min_changed:
            return forward
        return min(forward, stills_difference(picture, relit(reference, -field), self._valid, THUMB_BLUR,
                                              self.threshold, self.min_area))


def light_field(picture: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The light of the reference over the light of the picture, per pixel and channel, as a natural
    log: the running median of the log ratio of the two pictures over LIGHT_WINDOW of the width,
    smoothed. Levels under DARKEST_MEAN count as that (there a ratio is noise)."""
    size = max(3, round(LIGHT_WINDOW * picture.shape[1]) | 1)
    ratio = np.log(np.maximum(reference.astype(np.float32), DARKEST_MEAN)
                   / np.maximum(picture.astype(np.float32), DARKEST_MEAN))
    code = np.clip(128.5 + _LOG_SCALE * ratio, 0, 255).astype(np.uint8)  # rounded: the same field both ways
    smooth = cv2.GaussianBlur(cv2.medianBlur(code, size), (size, size), 0).astype(np.float32)
    return (smooth - 128.0) / _LOG_SCALE


def relit(picture: np.ndarray, field: np.ndarray) -> np.ndarray:
    """The picture in the other light of a light_field."""
    return np.clip(picture.astype(np.float32) * np.exp(field) + 0.5, 0, 255).astype(np.uint8)


def light_step(field: np.ndarray, valid: np.ndarray) -> float:
    """The largest change of light a light_field shows anywhere in the valid area, in any channel, as
    a ratio either way, minus 1 (the unit of framecull.lighting.lighting_change): a change of the
    whole light, of its colour, or of a part of the picture (floodlights)."""
    largest = float(np.abs(field).max(axis=2)[valid > 0].max(initial=0.0))
    return math.exp(largest) - 1.0
