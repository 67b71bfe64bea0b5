"""USB camera source: a V4L2 device through OpenCV, reopened when it is unplugged."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Iterator

import cv2

from framecull.config import SourceConfig
from framecull.frame import Frame
from framecull.sources.live import CameraLost, LiveSource

log = logging.getLogger("framecull.source.v4l2")

DEFAULT_DEVICE = "/dev/video0"  # for uri = ""


class V4l2Source(LiveSource):
    """Frames of a V4L2 camera, timestamped with the wall clock when read.

    From [source]: uri ("/dev/video0" when empty, a camera number "0", or better a name that
    survives re-plugging into another port: /dev/v4l/by-id/usb-...-video-index0),
    analysis_width, fourcc (MJPG: USB 2 cameras reach full size and rate only with it),
    capture_size, capture_fps, timeout (whole seconds), reconnect_max.
    backend  OpenCV capture API; only the tests use another one (to read a file)
    """

    kind = "v4l2"

    def __init__(self, cfg: SourceConfig, backend: int = cv2.CAP_V4L2, **tuning) -> None:
        super().__init__(cfg, **tuning)
        self.device = cfg.uri or DEFAULT_DEVICE
        self.fourcc = cfg.fourcc
        self.capture_size = tuple(cfg.capture_size)
        self.capture_fps = cfg.capture_fps
        self.backend = backend
        # OpenCV's V4L2 backend waits 10 s for a frame by default and reads this once per process.
        os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, round(self.timeout))))
        self._capture: cv2.VideoCapture | None = None

    def connect(self) -> None:
        self._capture = cv2.VideoCapture(_camera_number(self.device), self.backend)
        if not self._capture.isOpened():
            raise CameraLost(f"cannot open {self.device}")
        requests = []
        if self.fourcc:
            requests.append((cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc)))
        if self.capture_size[0] and self.capture_size[1]:
            requests += [(cv2.CAP_PROP_FRAME_WIDTH, self.capture_size[0]),
                         (cv2.CAP_PROP_FRAME_HEIGHT, self.capture_size[1])]
        if self.capture_fps:
            requests.append((cv2.CAP_PROP_FPS, self.capture_fps))
        for prop, value in requests:
            self._capture.set(prop, value)  # the driver may pick the nearest it supports
        code = int(self._capture.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
        log.info("%s: opened %s, %dx%d %s at %g fps", self.name, self.device,
                 self._capture.get(cv2.CAP_PROP_FRAME_WIDTH), self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT),
                 code.to_bytes(4, "little").decode("ascii", "replace"), self._capture.get(cv2.CAP_PROP_FPS))

    def capture(self) -> Iterator[Frame]:
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                raise CameraLost(f"reading {self.device} failed (unplugged?)")
            yield Frame.from_bgr(self.next_index(), time.time(), image, self.width)

    def disconnect(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()


def _camera_number(device: str) -> int | str:
    """/dev/videoN (also through a by-id or by-path link, resolved anew at each connect: a
    re-plugged camera may come back as another N) -> N. OpenCV's V4L2 backend opens a camera by
    number; some builds refuse a path. Anything else (a file, for the tests) stays as it is."""
    if device.isdigit():
        return int(device)
    match = re.fullmatch(r"/dev/video(\d+)", os.path.realpath(device))
    return int(match.group(1)) if match else device
