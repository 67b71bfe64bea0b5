"""Raspberry Pi camera source (libcamera through picamera2): two streams from one capture.

  main   BGR at full size: the picture that is stored when a frame is kept
  lores  YUV420 at the analysis width: its Y plane is the gray analysis plane, no conversion
  an optional H.264 encoder on lores, whose output PyAV decodes only to read the encoder's
  motion vectors for the motion-vector gate (the Pi 4 encodes in hardware; the Pi 5, with no
  encoder, in software). Off unless [gates.motion_vectors] enabled = true: measured, encoding
  and decoding lores costs more than the change gate on the lores Y plane that it would spare
  (README, "Motion-vector gate")

picamera2 is Raspberry Pi OS's package (python3-picamera2), not on PyPI in a usable form: it
is imported when the source is created, with a clear message when it is missing.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import OrderedDict
from typing import Iterator

import av

from framecull.config import SourceConfig
from framecull.frame import Frame, analysis_plane
from framecull.motion_vectors import MotionVectors, from_av_frame
from framecull.sources import SourceError
from framecull.sources.live import LiveSource

log = logging.getLogger("framecull.source.picamera2")

MISSING = (
    "picamera2 source: the picamera2 module cannot be imported ({error}). On Raspberry Pi OS: "
    "sudo apt install python3-picamera2, and create framecull's venv with --system-site-packages "
    "(python3 -m venv --system-site-packages ...) so that it sees the system's picamera2 and libcamera"
)
# The main stream's size for capture_size = [0, 0]: picamera2's own default for video.
DEFAULT_SIZE = (1280, 720)
# How long a captured frame may wait for the encoder's vectors of the same frame, while the
# encoder is delivering (an encoder that stopped delivering a second ago is not waited for).
VECTORS_WAIT = 0.1


def lores_size(main: tuple[int, int], width: int) -> tuple[int, int]:
    """The lores stream size: the analysis width, the main stream's aspect, even numbers (YUV420)."""
    main_w, main_h = main
    w = min(width, main_w) // 2 * 2
    return w, max(2, round(main_h * w / main_w / 2) * 2)


class MotionVectorDecoder:
    """Decodes the lores H.264 stream only for its motion vectors, kept by frame time (µs).

    `feed` runs in picamera2's encoder thread; `vectors_for` in the reader thread.
    """

    def __init__(self, keep: int = 32) -> None:
        self.codec = av.CodecContext.create("h264", "r")
        # low_delay: a frame's vectors come out with that frame, not one frame later.
        self.codec.options = {"flags2": "+export_mvs", "flags": "+low_delay"}
        self.keep = keep
        self._vectors: OrderedDict[int, MotionVectors | None] = OrderedDict()
        self._newest = -1  # time of the newest decoded frame
        self._fed = float("-inf")  # time.monotonic() of the last packet
        self._ready = threading.Condition()

    def feed(self, data, time_us: int) -> None:
        packet = av.Packet(bytes(data))
        packet.pts = time_us
        try:
            decoded = self.codec.decode(packet)
        except av.error.FFmpegError as exc:
            log.debug("motion vectors: undecodable packet at %d us: %s", time_us, exc)
            return
        with self._ready:
            self._fed = time.monotonic()
            for frame in decoded:
                self._vectors[frame.pts] = from_av_frame(frame)
                self._newest = max(self._newest, frame.pts)
            while len(self._vectors) > self.keep:
                self._vectors.popitem(last=False)
            self._ready.notify_all()

    def vectors_for(self, time_us: int, timeout: float = VECTORS_WAIT) -> MotionVectors | None:
        """The vectors of the frame at `time_us`; None for a key frame, or when they do not come."""
        with self._ready:
            if time.monotonic() - self._fed < 1.0:
                self._ready.wait_for(lambda: time_us in self._vectors or self._newest >= time_us, timeout)
            return self._vectors.pop(time_us, None)


def _forwarding_output(output_class, encoder, decoder: MotionVectorDecoder):
    """A picamera2 Output (encoders take nothing else) that hands each encoded frame to the
    decoder, under the frame's sensor time: the encoder's timestamps count from its first frame."""

    class ToDecoder(output_class):
        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            if not audio and frame is not None and timestamp is not None:
                decoder.feed(frame, timestamp + (encoder.firsttimestamp or 0))

    return ToDecoder()


class Picamera2Source(LiveSource):
    """Frames of a Raspberry Pi camera, timestamped at the start of exposure.

    From [source]: uri (the camera number, "" = 0), analysis_width (the lores stream is made
    this wide), capture_size (the main stream, the stored picture; [0, 0] = DEFAULT_SIZE),
    capture_fps (asked of the sensor; 0 = its default), timeout (to wait for a frame),
    reconnect_max.
    motion_vectors  True: run the H.264 encoder on lores for motion vectors; "auto" (the default
                    of [gates.motion_vectors] enabled) or False: do not
    """

    kind = "picamera2"

    def __init__(self, cfg: SourceConfig, motion_vectors: bool | str, **tuning) -> None:
        if cfg.uri and not cfg.uri.isdigit():
            raise SourceError(f"picamera2 source: uri must be a camera number (0, 1, ...), not {cfg.uri!r}")
        try:
            self._lib = importlib.import_module("picamera2")
        except ImportError as exc:
            raise SourceError(MISSING.format(error=exc)) from None
        super().__init__(cfg, **tuning)
        self.camera_number = int(cfg.uri or 0)
        self.size = tuple(cfg.capture_size) if all(cfg.capture_size) else DEFAULT_SIZE
        self.fps = cfg.capture_fps
        self.motion_vectors = self.has_motion_vectors = motion_vectors is True
        self._camera = None
        self._decoder: MotionVectorDecoder | None = None

    def connect(self) -> None:
        self._camera = self._lib.Picamera2(self.camera_number)
        controls = {"FrameRate": self.fps} if self.fps else {}
        config = self._camera.create_video_configuration(
            main={"size": self.size, "format": "RGB888"},  # RGB888 is B, G, R in memory: OpenCV's BGR
            lores={"size": lores_size(self.size, self.width), "format": "YUV420"},
            controls=controls,
        )
        self._camera.configure(config)
        actual = self._camera.camera_configuration()  # libcamera may have adjusted the sizes
        self._lores = tuple(actual["lores"]["size"])
        self._decoder = self._start_encoder() if self.motion_vectors else None
        self._camera.start()
        log.info("%s: camera %d started, main %s, lores %s, motion vectors %s", self.name, self.camera_number,
                 tuple(actual["main"]["size"]), self._lores, "on" if self._decoder else "off")

    def _start_encoder(self) -> MotionVectorDecoder | None:
        try:
            from picamera2.encoders import H264Encoder
            from picamera2.outputs import Output

            decoder = MotionVectorDecoder()
            # Key frames carry no vectors: few of them (one every ~5 s) leave few frames unknown.
            encoder = H264Encoder(repeat=True, iperiod=max(2, round((self.fps or 30) * 5)))
            self._camera.start_encoder(encoder, _forwarding_output(Output, encoder, decoder), name="lores")
            return decoder
        except Exception as exc:  # vectors are an optimisation: run without them rather than not at all
            log.warning("%s: no motion vectors, the H.264 encoder did not start: %s", self.name, exc)
            return None

    def capture(self) -> Iterator[Frame]:
        width, height = self._lores
        while True:
            # wait=seconds: a camera that stops delivering raises TimeoutError instead of hanging.
            request = self._camera.capture_request(wait=self.timeout)
            try:
                image = request.make_array("main")
                lores = request.make_array("lores")
                sensor_ns = request.get_metadata().get("SensorTimestamp")
            finally:
                request.release()
            gray = analysis_plane(lores[:height, :width], self.width)  # the Y plane: first `height` rows
            vectors = None
            if self._decoder is not None and sensor_ns is not None:
                vectors = self._decoder.vectors_for(int(sensor_ns / 1000))  # as picamera2's encoder rounds
            yield Frame(self.next_index(), _wall_time(sensor_ns), gray, image=image, motion_vectors=vectors)

    def disconnect(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        # cancel_all_and_flush first: after a capture that timed out, picamera2 cannot stop otherwise.
        for step in ("cancel_all_and_flush", "stop_encoder", "stop", "close"):
            try:
                getattr(camera, step)()
            except Exception as exc:
                log.debug("%s: %s failed: %s", self.name, step, exc)


def _wall_time(sensor_ns: int | None) -> float:
    """The sensor's timestamp (CLOCK_MONOTONIC, start of exposure) on the wall clock."""
    now = time.time()
    if sensor_ns is None:
        return now
    age = (time.monotonic_ns() - sensor_ns) / 1e9
    return now - age if 0 <= age < 10 else now
