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

from framecull import motion_vectors
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

    url           rtsp://user:pass@host:554/path (also rtsps://, http://, tcp://...)
    width         analysis width of the gray plane
    transport     RTSP lower transport: "tcp" (default: survives lossy links) or "udp"
    open_timeout  seconds allowed to open the stream
    read_timeout  seconds a read may block before the camera is taken for dead
    """

    kind = "rtsp"
    has_motion_vectors = True

    def __init__(self, url: str, width: int, transport: str = "tcp", open_timeout: float = 10.0,
                 read_timeout: float = 5.0, **live) -> None:
        if "://" not in url:
            raise SourceError(f"rtsp source: {url!r} is not a URL like rtsp://host:554/stream")
        if transport not in ("tcp", "udp"):
            raise SourceError(f"rtsp source: transport must be 'tcp' or 'udp', not {transport!r}")
        super().__init__(**live)
        self.url = url
        self.width = width
        self.transport = transport
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self._container = None

    def connect(self) -> None:
        options = dict(OPEN_OPTIONS)
        if self.url.startswith(("rtsp:", "rtsps:")):
            options["rtsp_transport"] = self.transport
        self._container = av.open(self.url, options=options, timeout=(self.open_timeout, self.read_timeout))
        if not self._container.streams.video:
            raise CameraLost(f"{self.url} has no video stream")
        self._stream = self._container.streams.video[0]
        # An H.265 or MJPEG camera gives no vectors; the motion-vector gate then passes everything.
        self.has_motion_vectors = motion_vectors.request_export(self._stream)
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
                yield make_frame(av_frame, self.next_index(), clock.timestamp(av_frame.time), self.width)

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
