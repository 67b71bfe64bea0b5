"""Video file source: any video PyAV can decode. A truncated or damaged file ends cleanly.

Motion vectors come from the decoder (H.264 and the MPEG-4 family), or, when a legacy
Raspberry Pi vector file with the same stem sits next to the video (clip.h264 + clip.mv), from
that file: record i belongs to decoded frame i.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from framecull import motion_vectors as mv
from framecull.frame import Frame, analysis_plane
from framecull.sources import Source, SourceError

log = logging.getLogger("framecull.source.video")

# Formats whose first plane is the luma (Y) plane, read without any colour conversion.
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
MAX_CONSECUTIVE_ERRORS = 25  # demuxer failures in a row (damaged packets are skipped, however many)


def gray_plane(frame: av.VideoFrame) -> np.ndarray:
    """The full-resolution luma plane, straight from the decoder's buffer when possible."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return rows[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def make_frame(av_frame: av.VideoFrame, index: int, timestamp: float, width: int,
               reformatter: VideoReformatter) -> Frame:
    """A Frame of a decoded picture: gray plane (at analysis `width`), BGR image, picture at a model's
    size and motion vectors are built only when a gate asks for them; motion vectors from the
    decoder's side data, None when it has none (key frame, or a decoder asked for no export: see
    framecull.motion_vectors.request_export). One reformatter per source: each frame's own would
    start a swscale thread pool (200 threads)."""
    return Frame(
        index,
        timestamp,
        load_gray=lambda: analysis_plane(gray_plane(av_frame), width),
        load_image=lambda: reformatter.reformat(av_frame, format="bgr24").to_ndarray(),
        load_picture=lambda w, h: reformatter.reformat(av_frame, w, h, "bgr24", interpolation="AREA").to_ndarray(),
        load_motion_vectors=lambda: mv.from_av_frame(av_frame),
    )


class VideoFileSource(Source):
    kind = "file"

    def __init__(self, path: str | Path, width: int, motion_vectors: bool | str) -> None:
        """`motion_vectors` (True or "auto"): read vectors (decoder export or .mv file); False spares
        the work when no gate uses them."""
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
        self.reformatter = VideoReformatter()
        self.sidecar: Path | None = None  # legacy Raspberry Pi vectors next to the video
        self._sidecar_file = None
        if motion_vectors and self.path.with_suffix(".mv").is_file():
            self.sidecar = self.path.with_suffix(".mv")
            self._open_sidecar()
        if self.sidecar is not None:
            self.has_motion_vectors = True
        elif motion_vectors:
            self.has_motion_vectors = mv.request_export(self.stream)

    def _open_sidecar(self) -> None:
        width, height = self.stream.codec_context.width, self.stream.codec_context.height
        if width <= 0 or height <= 0:
            self.container.close()
            raise SourceError(f"file source: {self.path} has no picture size to read {self.sidecar} with")
        frame_bytes = mv.legacy_frame_bytes(width, height)
        size = self.sidecar.stat().st_size
        frames = self.stream.frames
        if size % frame_bytes or (frames and abs(size // frame_bytes - frames) > 2):
            # vectors of another resolution (or another clip) would be read at the wrong places
            log.warning("%s: %d bytes are not %s of %dx%d vectors (%d bytes each): made for another recording "
                        "or resolution; not used", self.sidecar, size, f"{frames} frames" if frames else
                        "whole frames", width, height, frame_bytes)
            self.sidecar = None
            return
        self._sidecar_file = self.sidecar.open("rb")

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Decoded pictures; damaged data is skipped, and after too many errors in a row (or at a
        truncated end) the pictures still in the decoder are flushed out before it ends."""
        packets = self.container.demux(self.stream)
        errors_in_a_row = 0
        while errors_in_a_row < MAX_CONSECUTIVE_ERRORS:
            try:
                packet = next(packets)
            except StopIteration:
                return  # demux ends with an empty packet, which flushed the decoder
            except (av.error.FFmpegError, ValueError) as exc:
                # A demuxer that raised is finished: start a new one from where the file stands.
                self._damaged(exc)
                errors_in_a_row += 1
                packets = self.container.demux(self.stream)
                continue
            errors_in_a_row = 0  # the demuxer moved on: a damaged stretch of any length is skipped
            try:
                yield from packet.decode()
            except (av.error.FFmpegError, ValueError) as exc:
                self._damaged(exc)
        log.warning("%s: giving up after %d errors in a row", self.path, errors_in_a_row)
        try:
            yield from self.stream.codec_context.decode(None)
        except (av.error.FFmpegError, ValueError):
            pass

    def _damaged(self, exc: Exception) -> None:
        self.errors += 1
        log.warning("%s: damaged data skipped (%s)", self.path, exc)

    def frames(self) -> Iterator[Frame]:
        start = time.time()
        first_time = None
        sidecar = None
        if self._sidecar_file is not None:
            sidecar = mv.read_legacy(self._sidecar_file, self.stream.codec_context.width,
                                     self.stream.codec_context.height)
        for index, av_frame in enumerate(self._decoded()):
            t = av_frame.time if av_frame.time is not None else index / self.fps
            first_time = t if first_time is None else first_time
            frame = make_frame(av_frame, index, start + t - first_time, self.width, self.reformatter)
            if sidecar is not None:
                vectors = next(sidecar, None)
                if vectors is None:
                    log.warning("%s: no motion vectors after frame %d", self.sidecar, index - 1)
                    sidecar = None
                elif not mv.is_intra_frame(av_frame):
                    frame.motion_vectors = vectors
            yield frame

    def close(self) -> None:
        self.container.close()
        if self._sidecar_file is not None:
            self._sidecar_file.close()
