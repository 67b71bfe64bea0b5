"""Sources deliver Frames. One module per kind; `open_source` opens the configured one."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Iterator

from framecull.config import Config
from framecull.frame import Frame

log = logging.getLogger("framecull.source")


class SourceError(Exception):
    """The configured source cannot be opened (missing file, empty folder, unknown scene...)."""


class Source:
    """Iterable of Frames in capture order. Subclasses implement `frames()`.

    kind                the config's source kind ("file", "rtsp", ...)
    has_motion_vectors  whether frames carry H.264 motion vectors
    frame_count         frames the source expects to deliver, when known (progress bars)
    live                False: recorded footage, frames() ends at its end. True: a camera
                        (framecull.sources.live.LiveSource): frames() blocks while the camera is
                        silent and reconnects, and close() may be called from any thread and ends
                        a frames() that is blocked
    counters            None for recorded sources; a live source's LiveCounters (frames, dropped,
                        reconnects, last_error)
    stats()             the counters as a dict for status reports; {} for recorded sources
    """

    kind = "source"
    has_motion_vectors = False
    frame_count: int | None = None
    live: bool = False
    counters = None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MAX_STEP = 30 * 86400.0  # seconds; a source clock that leaps further (or runs back) restarted its timestamps
LAST_DATE = 253402300799.0  # 9999-12-31T23:59:59Z: a capture time beyond cannot name a file


def steady(frames: Iterator[Frame]) -> Iterator[Frame]:
    """Frames whose clock (what pacing, throttling and budgets measure) never runs backwards nor
    leaps by more than MAX_STEP: a file whose timestamps restart (`cat a.ts b.ts`) or jump by 1e12 s
    goes on from the previous frame at its usual spacing, with one warning. The capture time stays
    what the source says (a label: stills keep the time in their names), unless it is no date at
    all (beyond the year 9999): then it is the previous one plus the usual spacing."""
    last: Frame | None = None
    offset, spacing = 0.0, 0.04
    for frame in frames:
        clock = frame.clock + offset
        if last is not None:
            step = clock - last.clock
            if not 0.0 <= step <= MAX_STEP:  # NaN too
                log.warning("frame %d: the source's time %s by %.6g s (its timestamps restarted?): going on "
                            "from the previous frame", frame.index, "went back" if step < 0 else "leapt", abs(step))
                if math.isfinite(clock):
                    offset += last.clock + spacing - clock
                clock = last.clock + spacing
            elif step > 0:
                spacing = step
        elif not math.isfinite(clock):
            clock = time.monotonic()
        frame.clock = clock
        if not 0.0 <= frame.timestamp <= LAST_DATE:
            frame.timestamp = last.timestamp + spacing if last is not None else time.time()
        last = frame
        yield frame


def throttle(frames: Iterator[Frame], fps: float) -> Iterator[Frame]:
    """Pass at most `fps` frames per second of the frames' clock (0: all of them)."""
    if fps <= 0:
        yield from frames
        return
    period = 1.0 / fps
    due = None
    for frame in frames:
        if due is None or frame.clock >= due - 1e-6 or frame.clock < due - 2 * period:
            # Step from the due time, not the frame time, so 12.5 fps -> 5 fps stays 5 fps;
            # after a gap (a stalled camera), or a clock that went back, start again from the frame.
            restart = due is None or not 0 <= frame.clock - due <= period
            due = (frame.clock if restart else due) + period
            yield frame


def open_source(config: Config) -> Source:
    """The configured source: the one place where the config is mapped to a source."""
    s, vectors = config.source, config.gates.motion_vectors.enabled
    if s.kind == "folder":
        from framecull.sources.folder import FolderSource
        from framecull.stills import naming_of

        return FolderSource(s.uri, s.analysis_width, s.fps, naming_of(s))
    if s.kind == "file":
        from framecull.sources.video import VideoFileSource

        return VideoFileSource(s.uri, s.analysis_width, vectors)
    if s.kind == "synthetic":
        from framecull.sources.synthetic import SyntheticSource

        return SyntheticSource(s.uri or "parking_lot", s.analysis_width)
    if s.kind == "rtsp":
        from framecull.sources.rtsp import RtspSource

        return RtspSource(s, vectors)
    if s.kind == "v4l2":
        from framecull.sources.v4l2 import V4l2Source

        return V4l2Source(s)
    if s.kind == "picamera2":
        from framecull.sources.picamera2 import Picamera2Source

        return Picamera2Source(s, vectors)
    raise SourceError(f"unknown source kind {s.kind!r}")


def with_recorded_source(config: Config, path: str) -> Config:
    """The config with its source replaced by recorded footage: a folder of images, a video
    file, or synthetic:NAME (a synthetic scene)."""
    if path.startswith("synthetic:"):
        source = {"kind": "synthetic", "uri": path.split(":", 1)[1]}
    else:
        source = {"kind": "folder" if Path(path).is_dir() else "file", "uri": path}
    return config.model_copy(update={"source": config.source.model_copy(update=source)})


def iter_frames(source: Source, fps: float) -> Iterator[Frame]:
    return throttle(steady(source.frames()), fps)
