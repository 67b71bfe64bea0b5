"""Frame: one picture from a source, with the gray plane the gates analyse.

Pictures have bounds (check_geometry): a side of 8 to 16384 px and an aspect ratio up to 8:1.
A picture outside them (a 5000 x 1 PNG) would make an analysis plane of gigabytes; it raises
BadPicture when its gray plane is first asked for, and the pipeline drops it at stage "source".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

if TYPE_CHECKING:
    from framecull.motion_vectors import MotionVectors


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
    return fit(gray, width, max(1, round(h * width / w)))


def fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image resized to width x height: area averaging when shrinking, by halves while it stays
    at least twice the size (an exact 2x2 average is several times cheaper than a general area
    resize of a 720p picture, and an average of averages is the same average), then the rest."""
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinking = w > width or h > height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


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
    picture(width, height)  the BGR picture at a model's input size: sources that can make it
               in one pass from their own planes supply load_picture (a video decoder's
               frame: scaled and converted by swscale, several times cheaper than converting
               the full picture and shrinking it); else the image, shrunk
    motion_vectors  framecull.motion_vectors.MotionVectors, or None when unknown (key frame, or a
               source without vectors); sources may supply them lazily (load_motion_vectors), so
               frames the fps throttle skips never read them
    """

    __slots__ = ("index", "timestamp", "clock", "_motion_vectors", "_load_motion_vectors", "_gray", "_load_gray",
                 "_image", "_load_image", "_load_picture")

    def __init__(
        self,
        index: int,
        timestamp: float,
        gray: np.ndarray | None = None,
        image: np.ndarray | None = None,
        load_image: Callable[[], np.ndarray] | None = None,
        motion_vectors: MotionVectors | None = None,
        load_gray: Callable[[], np.ndarray] | None = None,
        clock: float | None = None,
        load_motion_vectors: Callable[[], MotionVectors | None] | None = None,
        load_picture: Callable[[int, int], np.ndarray] | None = None,
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
        self._load_picture = load_picture

    @property
    def gray(self) -> np.ndarray:
        if self._gray is None:
            self._gray = self._load_gray()
            self._load_gray = None
        return self._gray

    @property
    def motion_vectors(self) -> MotionVectors | None:
        if self._load_motion_vectors is not None:
            self._motion_vectors = self._load_motion_vectors()
            self._load_motion_vectors = None
        return self._motion_vectors

    @motion_vectors.setter
    def motion_vectors(self, vectors: MotionVectors | None) -> None:
        self._motion_vectors, self._load_motion_vectors = vectors, None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = self._load_image()
            self._load_image = None
        return self._image

    def picture(self, width: int, height: int) -> np.ndarray:
        if self._load_picture is not None:
            return self._load_picture(width, height)
        return fit(self.image, width, height)

    @classmethod
    def from_bgr(cls, index: int, timestamp: float, image: np.ndarray, width: int) -> "Frame":
        """The gray plane is made when first asked for (BadPicture then, for a picture outside the bounds)."""
        return cls(index, timestamp, image=image,
                   load_gray=lambda: analysis_plane(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), width))

    def __repr__(self) -> str:
        gray = "not loaded" if self._gray is None else self._gray.shape
        return f"Frame(index={self.index}, timestamp={self.timestamp:.3f}, gray={gray})"
