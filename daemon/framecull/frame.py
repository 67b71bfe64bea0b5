"""Frame: one picture from a source, with the gray plane the gates analyse.

Pictures have bounds (check_geometry): a side of 8 to 16384 px and an aspect ratio up to 8:1.
A picture outside them (a 5000 x 1 PNG) would make an analysis plane of gigabytes; it raises
BadPicture when its gray plane is first asked for, and the pipeline drops it at stage "source".
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


MIN_SIDE, MAX_SIDE = 8, 16384  # pixels
MAX_ASPECT = 8.0  # 32:9 panoramas are 3.6:1


class BadPicture(ValueError):
    """A picture whose size no camera makes; judging it would cost gigabytes."""


def check_geometry(width: int, height: int) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE) or \
            max(width / height, height / width) > MAX_ASPECT:
        raise BadPicture(f"a {width}x{height} picture is outside what framecull judges (sides of {MIN_SIDE} to "
                         f"{MAX_SIDE} px, aspect ratio up to {MAX_ASPECT:g}:1)")


def analysis_plane(gray: np.ndarray, width: int) -> np.ndarray:
    """Resize a full-resolution gray plane to the analysis width, keeping the aspect ratio.
    BadPicture for a picture outside the bounds."""
    h, w = gray.shape[:2]
    check_geometry(w, h)
    if w == width:
        return np.ascontiguousarray(gray)
    height = max(1, round(h * width / w))
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA)


class Frame:
    """A frame as the pipeline sees it.

    index      0-based position in the source (frames the source skipped keep their numbers)
    timestamp  capture time, seconds since the epoch (UTC): a label (names, sidecars, reports);
               it follows the wall clock and the stream, so it may jump
    clock      seconds on a clock that never runs backwards, for pacing, throttling and budgets:
               a live source's monotonic receipt time; for recorded footage the timestamp itself,
               which sources.steady() keeps from running backwards or leaping
    gray       uint8 analysis plane, already at the configured analysis width; sources may
               supply it lazily (load_gray) so that frames the motion-vector gate drops are
               never even read
    image      BGR uint8 picture at full resolution; sources may supply it lazily so that frames
               dropped early are never converted
    motion_vectors  structured array of framecull.motion_vectors.MOTION_VECTOR_DTYPE, or None
               when unknown (key frame, or a source without vectors); sources may supply them
               lazily (load_motion_vectors), so frames the fps throttle skips never convert them
    """

    __slots__ = ("index", "timestamp", "clock", "_motion_vectors", "_load_motion_vectors", "_gray", "_load_gray",
                 "_image", "_load_image")

    def __init__(
        self,
        index: int,
        timestamp: float,
        gray: np.ndarray | None = None,
        image: np.ndarray | None = None,
        load_image: Callable[[], np.ndarray] | None = None,
        motion_vectors: np.ndarray | None = None,
        load_gray: Callable[[], np.ndarray] | None = None,
        clock: float | None = None,
        load_motion_vectors: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        if gray is None and load_gray is None:
            raise ValueError("a Frame needs a gray plane or a way to load one")
        if image is None and load_image is None:
            raise ValueError("a Frame needs an image or a way to load one")
        self.index = index
        self.timestamp = timestamp
        self.clock = timestamp if clock is None else clock
        self._motion_vectors = motion_vectors
        self._load_motion_vectors = load_motion_vectors
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
    def motion_vectors(self) -> np.ndarray | None:
        if self._load_motion_vectors is not None:
            self._motion_vectors = self._load_motion_vectors()
            self._load_motion_vectors = None
        return self._motion_vectors

    @motion_vectors.setter
    def motion_vectors(self, vectors: np.ndarray | None) -> None:
        self._motion_vectors, self._load_motion_vectors = vectors, None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = self._load_image()
            self._load_image = None
        return self._image

    @classmethod
    def from_bgr(cls, index: int, timestamp: float, image: np.ndarray, width: int) -> "Frame":
        """The gray plane is made when first asked for (BadPicture then, for a picture outside the bounds)."""
        return cls(index, timestamp, image=image,
                   load_gray=lambda: analysis_plane(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), width))

    def __repr__(self) -> str:
        gray = "not loaded" if self._gray is None else self._gray.shape
        return f"Frame(index={self.index}, timestamp={self.timestamp:.3f}, gray={gray})"
