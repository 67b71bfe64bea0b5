"""Frame: one picture from a source, with the gray plane the gates analyse."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def analysis_plane(gray: np.ndarray, width: int) -> np.ndarray:
    """Resize a full-resolution gray plane to the analysis width, keeping the aspect ratio."""
    h, w = gray.shape[:2]
    if w == width:
        return np.ascontiguousarray(gray)
    height = max(1, round(h * width / w))
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)


class Frame:
    """A frame as the pipeline sees it.

    index      0-based position in the source (frames the source skipped keep their numbers)
    timestamp  capture time, seconds since the epoch (UTC)
    gray       uint8 analysis plane, already at the configured analysis width; sources may
               supply it lazily (load_gray) so that frames the motion-vector gate drops are
               never even read
    image      BGR uint8 picture at full resolution; sources may supply it lazily so that frames
               dropped early are never converted
    motion_vectors  structured array of framecull.motion_vectors.MOTION_VECTOR_DTYPE, or None
               when unknown (key frame, or a source without vectors)
    """

    __slots__ = ("index", "timestamp", "motion_vectors", "_gray", "_load_gray", "_image", "_load_image")

    def __init__(
        self,
        index: int,
        timestamp: float,
        gray: np.ndarray | None = None,
        image: np.ndarray | None = None,
        load_image: Callable[[], np.ndarray] | None = None,
        motion_vectors: np.ndarray | None = None,
        load_gray: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if gray is None and load_gray is None:
            raise ValueError("a Frame needs a gray plane or a way to load one")
        if image is None and load_image is None:
            raise ValueError("a Frame needs an image or a way to load one")
        self.index = index
        self.timestamp = timestamp
        self.motion_vectors = motion_vectors
        self._gray = gray
        self._load_gray = load_gray
        self._image = image
        self._load_image = load_image

    @property
    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = self._load_gray()
            self._load_gray = None
        return self._gray

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = self._load_image()
            self._load_image = None
        return self._image

    @classmethod
    def from_bgr(cls, index: int, timestamp: float, image: np.ndarray, width: int) -> "Frame":
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return cls(index, timestamp, analysis_plane(gray, width), image=image)

    def __repr__(self) -> str:
        gray = "not loaded" if self._gray is None else self._gray.shape
        return f"Frame(index={self.index}, timestamp={self.timestamp:.3f}, gray={gray})"
