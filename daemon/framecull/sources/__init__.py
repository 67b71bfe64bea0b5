"""Sources deliver Frames. One module per kind; `open_source` opens the configured one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from framecull.config import Config
from framecull.frame import Frame

log = logging.getLogger("framecull.source")


class SourceError(Exception):
    """The configured source cannot be opened (missing file, empty folder, unknown scene...)."""


class Source:
    """Iterable of Frames in capture order. Subclasses implement `frames()`.

    has_motion_vectors  whether frames carry H.264 motion vectors
    frame_count         frames the source expects to deliver, when known (progress bars)
    """

    kind = "source"
    has_motion_vectors = False
    frame_count: int | None = None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def throttle(frames: Iterator[Frame], fps: float) -> Iterator[Frame]:
    """Pass at most `fps` frames per second of capture time (0: all of them)."""
    if fps <= 0:
        yield from frames
        return
    period = 1.0 / fps
    due = None
    for frame in frames:
        if due is None or frame.timestamp >= due - 1e-6:
            # Step from the due time, not the frame time, so 12.5 fps -> 5 fps stays 5 fps;
            # after a gap (a stalled camera) start again from the frame.
            due = frame.timestamp if due is None or frame.timestamp - due > period else due
            due += period
            yield frame


def open_source(config: Config) -> Source:
    kind, uri, width = config.source.kind, config.source.uri, config.gates.change.width
    if kind == "folder":
        from framecull.sources.folder import FolderSource

        return FolderSource(uri, width, fps=config.source.fps)
    if kind == "file":
        from framecull.sources.video import VideoFileSource

        return VideoFileSource(uri, width, motion_vectors=config.gates.motion_vectors.enabled)
    if kind == "synthetic":
        from framecull.sources.synthetic import SyntheticSource

        return SyntheticSource(uri or "parking_lot", width)
    s = config.source
    if kind == "rtsp":
        from framecull.sources.rtsp import RtspSource

        return RtspSource(uri, width, transport=s.transport, open_timeout=2 * s.timeout, read_timeout=s.timeout,
                          reconnect_max=s.reconnect_max)
    if kind == "v4l2":
        from framecull.sources.v4l2 import V4l2Source

        return V4l2Source(uri or "/dev/video0", width, fourcc=s.fourcc, capture_size=s.capture_size,
                          capture_fps=s.capture_fps, read_timeout=s.timeout, reconnect_max=s.reconnect_max)
    if kind == "picamera2":
        from framecull.sources.picamera2 import Picamera2Source

        if uri and not uri.isdigit():
            raise SourceError(f"picamera2 source: uri must be a camera number (0, 1, ...), not {uri!r}")
        return Picamera2Source(width, camera=int(uri or 0), capture_size=s.capture_size, capture_fps=s.capture_fps,
                               motion_vectors=config.gates.motion_vectors.enabled, read_timeout=s.timeout,
                               reconnect_max=s.reconnect_max)
    raise SourceError(f"unknown source kind {kind!r}")


def with_recorded_source(config: Config, path: str) -> Config:
    """The config with its source replaced by recorded footage: a folder of images, a video
    file, or synthetic:NAME (a synthetic scene)."""
    if path.startswith("synthetic:"):
        source = {"kind": "synthetic", "uri": path.split(":", 1)[1]}
    else:
        source = {"kind": "folder" if Path(path).is_dir() else "file", "uri": path}
    return config.model_copy(update={"source": config.source.model_copy(update=source)})


def iter_frames(source: Source, fps: float) -> Iterator[Frame]:
    return throttle(source.frames(), fps)
