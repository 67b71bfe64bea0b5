"""picamera2.encoders.H264Encoder, encoding for real with libx264 (through PyAV)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


class H264Encoder:
    def __init__(self, bitrate=None, repeat=True, iperiod=None, framerate=None, enable_sps_framerate=False,
                 qp=None, profile=None) -> None:
        self.iperiod = iperiod
        self.firsttimestamp = None
        self._codec = None
        self._output = None

    def start(self, width: int, height: int, output) -> None:
        self._size = (width, height)
        self._codec = av.CodecContext.create("libx264", "w")
        self._codec.width, self._codec.height, self._codec.pix_fmt = width, height, "yuv420p"
        self._codec.time_base = Fraction(1, 1_000_000)
        self._codec.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(self.iperiod or 30)}
        self._output = output
        output.start()

    def encode(self, yuv420: np.ndarray, sensor_ns: int) -> None:
        """One frame of the stream it runs on (a YUV420 array as the camera gives it)."""
        width, height = self._size
        timestamp = int(sensor_ns / 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = timestamp
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv420[:, :width]), format="yuv420p")
        frame.pts = timestamp - self.firsttimestamp
        for packet in self._codec.encode(frame):
            self._output.outputframe(bytes(packet), packet.is_keyframe, packet.pts)

    def stop(self) -> None:
        self._output.stop()
        self._codec = None
