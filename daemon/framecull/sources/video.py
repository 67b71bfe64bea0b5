"""Video file source: any video PyAV can decode. A truncated or damaged file ends cleanly."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from framecull.frame import Frame, analysis_plane
from framecull.sources import Source, SourceError

log = logging.getLogger("framecull.source.video")

# Formats whose first plane is the luma (Y) plane, read without any colour conversion.
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
MAX_CONSECUTIVE_ERRORS = 25


def gray_plane(frame: av.VideoFrame) -> np.ndarray:
    """The full-resolution luma plane, straight from the decoder's buffer when possible."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return rows[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def _bgr_loader(frame: av.VideoFrame):
    return lambda: frame.to_ndarray(format="bgr24")


class VideoFileSource(Source):
    kind = "file"

    def __init__(self, path: str | Path, width: int) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"file source: {self.path} does not exist or is not a file")
        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as exc:
            raise SourceError(f"file source: cannot open {self.path}: {exc}") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"file source: {self.path} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.width = width
        self.frame_count = self.stream.frames or None
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.errors = 0

    def frames(self) -> Iterator[Frame]:
        start = time.time()
        index = 0
        first_time = None
        consecutive_errors = 0
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
                decoded = packet.decode()
                consecutive_errors = 0
            except StopIteration:
                return
            except (av.error.FFmpegError, ValueError) as exc:
                self.errors += 1
                consecutive_errors += 1
                log.warning("%s: damaged data skipped (%s)", self.path, exc)
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    log.warning("%s: giving up after %d errors in a row", self.path, consecutive_errors)
                    return
                continue
            for av_frame in decoded:
                t = av_frame.time if av_frame.time is not None else index / self.fps
                first_time = t if first_time is None else first_time
                gray = analysis_plane(gray_plane(av_frame), self.width)
                yield Frame(index, start + t - first_time, gray, load_image=_bgr_loader(av_frame))
                index += 1

    def close(self) -> None:
        self.container.close()
