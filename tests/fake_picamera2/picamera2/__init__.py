"""A stand-in for picamera2, which needs libcamera and a Raspberry Pi camera, for the tests.

Only the API surface framecull uses, with picamera2's names and signatures:
Picamera2(camera_num), create_video_configuration(main, lores, controls), configure,
camera_configuration, start_encoder(encoder, output, name), start, capture_request(wait) ->
request with make_array(name), get_metadata(), release(); cancel_all_and_flush, stop_encoder,
stop, close. Also picamera2.encoders.H264Encoder and picamera2.outputs.Output.

The camera "sees" a framecull Scene, one scene frame per captured frame, paced at the
FrameRate control. As in picamera2, "RGB888" arrays are B, G, R in memory, YUV420 arrays are
(height * 3 / 2, stride) with the Y plane in the first `height` rows, and encoder timestamps
count microseconds from the encoder's first frame. Rows of YUV420 arrays are padded to a
stride of 64 with 255 (as the Pi's ISP pads them), so a reader that forgets to cut the padding
sees it.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from picamera2.outputs import Output

STRIDE_ALIGN = 64


class Picamera2:
    # What the test controls; reset() before each test.
    scene = None  # a framecull.sources.synthetic.Scene: what the camera sees
    next_frame = 0  # scene frame seen next; the world goes on across reopenings
    failed_opens = 0  # the next this many Picamera2() fail, as with no camera connected
    stall_at: int | None = None  # at this scene frame the camera stops delivering, once
    instances: list["Picamera2"] = []
    _lock = threading.Lock()

    @classmethod
    def reset(cls, scene) -> None:
        cls.scene, cls.next_frame, cls.failed_opens, cls.stall_at, cls.instances = scene, 0, 0, None, []

    def __init__(self, camera_num: int = 0) -> None:
        with Picamera2._lock:
            if Picamera2.failed_opens > 0:
                Picamera2.failed_opens -= 1
                raise RuntimeError("Camera __init__ sequence did not complete.")
            if any(cam.is_open for cam in Picamera2.instances):
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            Picamera2.instances.append(self)
        self.camera_num = camera_num
        self.is_open = True
        self.started = False
        self.camera_config = None
        self.encoder = None
        self.encoder_output = None
        self._due = 0.0

    def create_video_configuration(self, main=None, lores=None, controls=None, **other) -> dict:
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        lores = None if lores is None else {"format": "YUV420", "size": (320, 240), **lores}
        return {"use_case": "video", "main": main, "lores": lores, "controls": dict(controls or {}), **other}

    def configure(self, config: dict) -> None:
        assert not self.started, "Camera must be stopped before configuring"
        config = {name: dict(value) if isinstance(value, dict) else value for name, value in config.items()}
        lores = config["lores"]
        if lores is not None:
            w, h = lores["size"]
            if lores["format"] == "YUV420" and (w % 2 or h % 2):
                raise RuntimeError(f"Invalid camera configuration: YUV420 {w}x{h} needs even sizes")
            main_w, main_h = config["main"]["size"]
            if w > main_w or h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            lores["stride"] = -(-w // STRIDE_ALIGN) * STRIDE_ALIGN
        self.camera_config = config

    def camera_configuration(self) -> dict:
        return self.camera_config

    def start_encoder(self, encoder, output, pts=None, quality=None, name=None) -> None:
        if not isinstance(output, Output):
            raise RuntimeError("Must pass Output")
        stream = name or "main"
        w, h = self.camera_config[stream]["size"]
        encoder.start(w, h, output)
        self.encoder, self.encoder_stream = encoder, stream

    def start(self) -> None:
        assert self.camera_config is not None, "Camera has not been configured"
        self.started = True
        self._due = time.monotonic()

    def capture_request(self, wait=None, signal_function=None, flush=None):
        assert self.started, "camera not started"
        timeout = None if wait is True or wait is None else float(wait)
        with Picamera2._lock:
            index = Picamera2.next_frame
            stalled = Picamera2.stall_at is not None and index >= Picamera2.stall_at
            if stalled:
                Picamera2.stall_at = None
            else:
                Picamera2.next_frame += 1
        if stalled:
            time.sleep(timeout if timeout is not None else 3600)
            raise TimeoutError()  # what picamera2's Job.get_result raises when `wait` runs out
        rate = self.camera_config["controls"].get("FrameRate")
        if rate:
            self._due += 1.0 / rate
            time.sleep(max(0.0, self._due - time.monotonic()))
        request = _Request(self, Picamera2.scene.render(index % Picamera2.scene.n_frames), time.monotonic_ns())
        if self.encoder is not None:
            self.encoder.encode(request.arrays[self.encoder_stream], request.metadata["SensorTimestamp"])
        return request

    def cancel_all_and_flush(self) -> None:
        pass

    def stop_encoder(self, encoders=None) -> None:
        if self.encoder is not None:
            self.encoder.stop()
            self.encoder = None

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.stop()
        self.is_open = False


class _Request:
    def __init__(self, camera: Picamera2, bgr: np.ndarray, sensor_ns: int) -> None:
        self.arrays = {}
        for name in ("main", "lores"):
            stream = camera.camera_config[name]
            if stream is None:
                continue
            picture = cv2.resize(bgr, tuple(stream["size"]), interpolation=cv2.INTER_AREA)
            if stream["format"] == "YUV420":
                planes = cv2.cvtColor(picture, cv2.COLOR_BGR2YUV_I420)
                padded = np.full((planes.shape[0], stream["stride"]), 255, np.uint8)
                padded[:, : planes.shape[1]] = planes
                picture = padded
            self.arrays[name] = picture
        self.metadata = {"SensorTimestamp": sensor_ns, "ExposureTime": 10000}
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        assert not self.released, "request used after release"
        return self.arrays[name].copy()

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self) -> None:
        self.released = True
