"""Which pixels count: the border crop and the masks of [regions], for every gate that looks at pixels."""

from __future__ import annotations

import cv2
import numpy as np

from framecull.config import RegionsConfig


def valid_mask(shape: tuple[int, int], regions: RegionsConfig, grow: int = 0) -> np.ndarray:
    """uint8 plane of `shape`, 255 where a pixel may count: inside the border crop, outside masks.

    `grow` (a kernel size in pixels) widens the masked area, so that a blur cannot carry a change
    inside a mask (a clock) into the counted pixels.
    """
    h, w = shape
    top, right, bottom, left = regions.border
    masked = np.full((h, w), 255, np.uint8)
    y0, y1 = round(top * h), h - round(bottom * h)
    x0, x1 = round(left * w), w - round(right * w)
    masked[y0:y1, x0:x1] = 0
    for mask in regions.masks:
        points = np.array([[x * (w - 1), y * (h - 1)] for x, y in mask.polygon], np.float32)
        cv2.fillPoly(masked, [np.round(points).astype(np.int32)], 255)
    if grow > 1 and masked.any():
        masked = cv2.dilate(masked, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    return cv2.bitwise_not(masked)


def any_region(regions: RegionsConfig) -> bool:
    """Whether anything is cropped or masked at all."""
    return bool(regions.masks or any(regions.border))
