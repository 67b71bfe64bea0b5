"""Network camera source: an RTSP (or any PyAV-readable) stream, decoded with motion vectors.

Timeouts come from av.open's `timeout=(open, read)`: it bounds every blocking call of the
demuxer (the RTSP handshake, each read) whatever the protocol. (The RTSP option "timeout", in
microseconds, works too but only for RTSP; the older "stimeout" is gone since FFmpeg 5 and is
silently ignored.)
"""

from __future__ import annotations

import logging
import re
from typing import Iterator

import av
from av.video.reformatter import VideoReformatter

from framecull import motion_vectors as mv
from framecull.config import SourceConfig
from framecull.frame import Frame
from framecull.sources import SourceError
from framecull.sources.live import CameraLost, LiveSource, StreamClock
from framecull.sources.video import make_frame

log = logging.getLogger("framecull.source.rtsp")

# Packets the decoder may refuse in a row (a stream joined before its parameter sets come
# round with a key frame, a damaged packet) before the connection is reopened: more than the
# longest key-frame interval of real cameras.
MAX_CONSECUTIVE_ERRORS = 1000
# The demuxer otherwise decodes ~20 frames at open to estimate a frame rate framecull never
# uses: 1.5 s more to open, and a burst of stale frames after it.
OPEN_OPTIONS = {"fpsprobesize": "0"}


class RtspSource(LiveSource):
    """Frames of a network stream, timestamped with the stream clock anchored to the wall clock.

    From [source]: uri (rtsp://user:pass@host:554/path, also rtsps://, http://, tcp://...),
    analysis_width, transport, timeout (per read; opening gets twice this), reconnect_max.
    motion_vectors  ask the decoder for motion vectors (when the motion-vector gate is on: True or
                    "auto"); off, the decoder spares the export
    """

    kind = "rtsp"

    def __init__(self, cfg: SourceConfig, motion_vectors: bool | str, **tuning) -> None:
        if "://" not in cfg.uri:
            raise SourceError(f"rtsp source: {cfg.uri!r} is not a URL like rtsp://host:554/stream")
        super().__init__(cfg, **tuning)
        self.url = cfg.uri
        self.transport = cfg.transport
        self.motion_vectors = self.has_motion_vectors = bool(motion_vectors)
        self._container = None
        self.reformatter = VideoReformatter()

    def connect(self) -> None:
        options = dict(OPEN_OPTIONS)
        if self.url.startswith(("rtsp:", "rtsps:")):
            options["rtsp_transport"] = self.transport
        self._container = av.open(self.url, options=options, timeout=(2 * self.timeout, self.timeout))
        if not self._container.streams.video:
            raise CameraLost(f"{self.url} has no video stream")
        self._stream = self._container.streams.video[0]
        # An H.265 or MJPEG camera gives no vectors; the motion-vector gate then passes everything.
        self.has_motion_vectors = self.motion_vectors and mv.request_export(self._stream)
        log.info("%s: opened %s %dx%d", self.name, self._stream.codec_context.name,
                 self._stream.codec_context.width, self._stream.codec_context.height)

    def capture(self) -> Iterator[Frame]:
        clock = StreamClock()
        errors_in_a_row = 0
        for packet in self._container.demux(self._stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError as exc:
                errors_in_a_row += 1
                if errors_in_a_row >= MAX_CONSECUTIVE_ERRORS:
                    raise CameraLost(f"{errors_in_a_row} undecodable packets in a row ({exc})") from None
                continue
            errors_in_a_row = 0
            for av_frame in decoded:
                yield make_frame(av_frame, self.next_index(), clock.timestamp(av_frame.time), self.width,
                                 self.reformatter)

    def describe(self, error: Exception) -> str:
        return redact(super().describe(error))

    def disconnect(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()


def redact(text: str) -> str:
    """Hide the password of URLs (rtsp://user:secret@host -> rtsp://user:***@host): FFmpeg's
    errors quote the URL, and logs must not carry camera passwords."""
    return re.sub(r"(://[^/:@\s]*):[^/\s]*@", r"\1:***@", text)
