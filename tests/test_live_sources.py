"""Live sources with real parts: a GStreamer RTSP server on 127.0.0.1 (tests/rtsp_server.py),
real OpenCV captures, and, for picamera2 (which needs libcamera and a Pi camera), a stand-in
module (tests/fake_picamera2) driven through the real pipeline.

There is no camera here and no v4l2loopback (no kernel modules in the sandbox): the v4l2 source
is tested on a real cv2.VideoCapture of a video file, whose end is a read failure as an unplug
is, and on a /dev/video device that does not exist.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

import rtsp_server
from framecull.config import Config, SourceConfig
from framecull.probe import format_probe, kind_for_uri, probe
from framecull.runner import Collect, Runner
from framecull.sources import SourceError, live
from framecull.sources.live import Backoff, StreamClock
from framecull.sources.rtsp import RtspSource
from framecull.sources.synthetic import parking_lot
from framecull.sources.v4l2 import V4l2Source
from scenes import encode_video, textured_background, to_bgr, with_car
from net import free_port, wait_until

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only

FAKE_PICAMERA2 = Path(__file__).parent / "fake_picamera2"
FAST_RECONNECT = {"reconnect_min": 0.1}  # not a config key: a tests-only keyword of LiveSource


def rtsp_source(url: str, timeout: float, **tuning) -> RtspSource:
    """An RTSP source at the shortest timings the config allows: reads time out after `timeout`,
    opening after twice that, reconnect delays double up to 1 s."""
    cfg = SourceConfig(kind="rtsp", uri=url, analysis_width=160, timeout=timeout, reconnect_max=1)
    return RtspSource(cfg, motion_vectors=True, **tuning)


def close_after(source, seconds: float) -> threading.Timer:
    """A safety net: a test that goes wrong fails on its asserts instead of hanging."""
    timer = threading.Timer(seconds, source.close)
    timer.daemon = True
    timer.start()
    return timer




@pytest.fixture
def server(rtsp_ready):
    server = rtsp_server.RtspServer(width=320, height=240, fps=15).start()
    yield server
    server.stop()


# --- the shared parts ---


def test_backoff_doubles_up_to_the_maximum_and_resets():
    backoff = Backoff(1.0, 60.0)
    assert [backoff.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    backoff.reset()
    assert backoff.next() == 1
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


def test_stream_clock_keeps_the_stream_spacing_and_never_runs_ahead(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(live, "time", SimpleNamespace(time=lambda: now[0], monotonic=lambda: now[0]))  # steady wall clock
    clock = StreamClock(max_lag=2.0)
    # Ten frames buffered while the stream was opened arrive at once, then it runs live.
    burst = [clock.timestamp(t / 10) for t in range(10)]
    assert all(b >= a for a, b in zip(burst, burst[1:])) and max(burst) <= now[0]
    steady = []
    for t in range(10, 30):
        now[0] = 1000.0 + (t - 9) / 10 + 0.05 * (t % 3)  # network jitter up to 0.1 s
        steady.append(clock.timestamp(t / 10))
        assert steady[-1] <= now[0]
    assert np.allclose(np.diff(steady), 0.1)  # the camera's own spacing, not the jitter
    # The camera restarts its clock: anchored again, still in order and not ahead.
    now[0] += 0.1
    assert steady[-1] < clock.timestamp(0.0) <= now[0]
    assert clock.timestamp(None) == now[0]


# --- rtsp ---


def test_rtsp_decodes_with_motion_vectors_and_resumes_when_the_server_comes_back(server):
    source = rtsp_source(server.url, timeout=2, queue_size=64, **FAST_RECONNECT)
    guard = close_after(source, 40)
    frames = source.frames()
    before = list(itertools.islice(frames, 20))
    assert [f.index for f in before] == list(range(20))
    assert before[0].gray.shape == (120, 160) and before[0].image.shape == (240, 320, 3)
    stamps = [f.timestamp for f in before]
    assert all(b >= a for a, b in zip(stamps, stamps[1:])) and abs(stamps[-1] - time.time()) < 3
    with_vectors = [f.motion_vectors for f in before if f.motion_vectors is not None]
    assert len(with_vectors) >= 17  # all but the key frames (one a second)
    moved = np.concatenate([vectors.dx for vectors in with_vectors])
    assert np.abs(moved).max() > 0  # the test picture's ball moves

    server.stop()
    assert wait_until(lambda: source.counters.reconnects >= 2, 10), source.stats()
    assert "refused" in source.counters.last_error.lower()
    captured = source.counters.frames  # every frame from here on comes from the new server
    server.start()  # on the same port
    restarted = time.time()
    resumed = []
    for frame in frames:
        if frame.index >= captured:
            resumed.append(frame)
        if len(resumed) == 10:
            break
    guard.cancel()
    source.close()
    assert len(resumed) == 10, f"no frames after the server came back: {source.stats()}"
    assert resumed[0].timestamp >= restarted and time.time() - restarted < 10
    assert resumed[0].gray.shape == (120, 160)


def test_a_slow_consumer_makes_the_rtsp_source_drop_the_oldest_frames(server):
    source = rtsp_source(server.url, timeout=2, queue_size=3, **FAST_RECONNECT)
    guard = close_after(source, 30)
    delivered, behind = [], []
    for frame in source.frames():
        assert source.queued <= 3
        delivered.append(frame.index)
        behind.append(source.counters.frames - 1 - frame.index)  # frames captured after this one
        if len(delivered) == 12:
            break
        time.sleep(0.2)  # a pipeline much slower than the camera's 15 fps
    guard.cancel()
    source.close()
    counters = source.counters
    assert counters.dropped >= 10, source.stats()  # 2.2 s at 15 fps is ~33 frames for 12 taken
    assert 0 <= counters.frames - counters.dropped - len(delivered) <= 3 + 1  # the rest were queued
    assert max(np.diff(delivered)) > 1  # indices skip the dropped frames
    assert max(behind[1:]) <= 3 + 1  # what is delivered is recent: the oldest frames went


def test_a_hung_camera_times_out_and_close_ends_the_frames_at_once(server):
    source = rtsp_source(server.url, timeout=1, **FAST_RECONNECT)
    guard = close_after(source, 30)
    frames = source.frames()
    next(frames)
    server.pause()  # the connection stays open, nothing more comes: a hung camera
    paused = time.monotonic()
    assert wait_until(lambda: source.counters.reconnects >= 1, 5), source.stats()
    assert time.monotonic() - paused < 1 + 2  # the read timed out
    # Reopening now hangs in the RTSP handshake (the kernel accepts, no one answers) until the
    # open timeout (2 s), again and again.
    assert wait_until(lambda: source.counters.reconnects >= 2, 5), source.stats()
    consumer = threading.Thread(target=lambda: list(frames))
    consumer.start()
    time.sleep(0.3)
    assert consumer.is_alive()  # waiting for a frame that does not come
    closing = time.monotonic()
    source.close()
    consumer.join(3)
    guard.cancel()
    assert not consumer.is_alive() and time.monotonic() - closing < 2


def test_a_camera_that_is_not_there_is_retried_with_backoff_and_never_blocks():
    source = rtsp_source(f"rtsp://admin:secret@127.0.0.1:{free_port()}/cam", timeout=1, **FAST_RECONNECT)
    delivered = []
    consumer = threading.Thread(target=lambda: delivered.extend(source.frames()))
    consumer.start()
    time.sleep(1.6)  # attempts at 0, 0.1, 0.3, 0.7, 1.5 s: the delays double up to reconnect_max (1 s)
    assert 3 <= source.counters.reconnects <= 5, source.stats()
    assert "refused" in source.counters.last_error.lower()
    assert "admin:***@127.0.0.1" in source.counters.last_error and "secret" not in source.counters.last_error
    closing = time.monotonic()
    source.close()
    consumer.join(2)
    assert not consumer.is_alive() and time.monotonic() - closing < 1.5
    assert delivered == [] and source.counters.frames == 0
    assert source.backoff.next() == 1.0  # never reset: no frame ever came


def test_rtsp_source_refuses_what_is_not_a_url():
    with pytest.raises(SourceError, match="not a URL"):
        RtspSource(SourceConfig(kind="rtsp", uri="192.168.1.20/stream"), motion_vectors=True)


# --- v4l2 ---


def test_v4l2_source_reopens_the_capture_when_reading_fails(tmp_path):
    rng = np.random.default_rng(0)
    scene = textured_background(height=240, width=320)
    clip = encode_video(tmp_path / "clip.mp4", [to_bgr(with_car(scene, x=20 + 20 * i, y=100), rng) for i in range(10)])
    cfg = SourceConfig(kind="v4l2", uri=str(clip), analysis_width=160, reconnect_max=5)
    source = V4l2Source(cfg, backend=cv2.CAP_FFMPEG, queue_size=64, reconnect_min=0.05)
    assert source.live and source.stats() == {"frames": 0, "dropped": 0, "reconnects": 0, "last_error": "",
                                              "queued": 0}
    frames = list(itertools.islice(source.frames(), 25))
    source.close()
    assert [f.index for f in frames] == list(range(25))
    assert source.counters.reconnects >= 2 and "failed" in source.counters.last_error
    assert frames[0].gray.shape == (120, 160) and frames[0].image.shape == (240, 320, 3)
    assert np.array_equal(frames[3].gray, frames[13].gray)  # the clip again after each reopening
    assert not np.array_equal(frames[3].gray, frames[4].gray)
    # Reset by the frames read after each reopening: without resets, two reconnects would have
    # doubled it to 0.2 at least. The reader may have met the clip's end once more before close().
    assert source.backoff.next() in (0.05, 0.1)


def test_v4l2_source_without_its_camera_retries_and_closes_at_once():
    source = V4l2Source(SourceConfig(kind="v4l2", uri="/dev/video63", reconnect_max=1), reconnect_min=0.05)
    source.start()
    assert wait_until(lambda: source.counters.reconnects >= 3, 3), source.stats()
    assert "cannot open /dev/video63" in source.counters.last_error
    closing = time.monotonic()
    source.close()
    assert time.monotonic() - closing < 1.5 and source.counters.frames == 0
    assert V4l2Source(SourceConfig(kind="v4l2")).device == "/dev/video0"
    with pytest.raises(ValidationError, match="fourcc"):
        SourceConfig(kind="v4l2", fourcc="MJPEG")


# --- picamera2 ---


@pytest.fixture
def fake_picamera2(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_PICAMERA2))
    import picamera2

    assert Path(picamera2.__file__).is_relative_to(FAKE_PICAMERA2)
    yield picamera2
    for name in [name for name in sys.modules if name == "picamera2" or name.startswith("picamera2.")]:
        del sys.modules[name]


def test_picamera2_missing_is_a_clear_error(monkeypatch):
    from framecull.sources.picamera2 import Picamera2Source

    monkeypatch.setitem(sys.modules, "picamera2", None)  # as where it is not installed
    with pytest.raises(SourceError, match="apt install python3-picamera2.*--system-site-packages"):
        Picamera2Source(SourceConfig(kind="picamera2"), motion_vectors=True)


def test_picamera2_source_through_the_pipeline(fake_picamera2, tmp_path):
    from framecull.sources.picamera2 import Picamera2Source

    scene = parking_lot(width=640, height=360, fps=5, quiet_seconds=2)
    fake_picamera2.Picamera2.reset(scene)
    # The camera runs 20 times faster than the scene's 5 fps: event pacing (one kept frame per
    # second of capture time) would span whole events, so it is off.
    config = Config.model_validate({"source": {"kind": "picamera2", "capture_size": [640, 360], "capture_fps": 100},
                                    "gates": {"novelty": {"enabled": False}}, "pacing": {"min_interval": 0}})
    width = config.source.analysis_width
    source = Picamera2Source(config.source, config.gates.motion_vectors.enabled, queue_size=scene.n_frames)
    seen = []

    def watched(frames):
        for frame in frames:
            seen.append((frame.timestamp, frame.gray.shape, frame.image.shape, frame.motion_vectors))
            if frame.index == 30:  # the gray plane is the lores Y plane as it is: no padding, no conversion
                small = cv2.resize(scene.render(30), (width, 180), interpolation=cv2.INTER_AREA)
                assert np.array_equal(frame.gray, cv2.cvtColor(small, cv2.COLOR_BGR2YUV_I420)[:180])
            yield frame

    collect = Collect()
    with Runner(config, tmp_path, write=False, sinks=[collect]) as runner:
        runner.run(watched(itertools.islice(source.frames(), scene.n_frames)))
    source.close()
    decisions = collect.decisions

    assert [d.index for d in decisions] == list(range(scene.n_frames)) and source.counters.dropped == 0
    assert all(gray == (180, 320) and image == (360, 640, 3) for _, gray, image, _ in seen)
    stamps = [t for t, *_ in seen]
    assert all(b > a for a, b in zip(stamps, stamps[1:])) and abs(stamps[-1] - time.time()) < 5
    # By default picamera2 runs no encoder for vectors (measured: they cost more than they spare).
    assert all(v is None for *_, v in seen)

    kept = {d.index for d in decisions if d.kept}
    assert decisions[0].kept
    quiet = [i for first, last in scene.quiet for i in range(max(first, 1), last + 1)]
    assert sum(i in kept for i in quiet) <= len(quiet) // 10, sorted(kept)
    for event in scene.events:
        assert kept & set(range(event.start, event.end + 1)), f"nothing kept during {event}"
    assert not any(camera.is_open for camera in fake_picamera2.Picamera2.instances)


def test_picamera2_source_reopens_a_camera_that_fails(fake_picamera2):
    from framecull.sources.picamera2 import Picamera2Source

    camera = fake_picamera2.Picamera2
    camera.reset(parking_lot(width=320, height=180, fps=5, quiet_seconds=2))
    camera.failed_opens = 2  # not there at first
    camera.stall_at = 20  # then, 20 frames in, it stops delivering
    cfg = SourceConfig(kind="picamera2", analysis_width=160, capture_size=(320, 180), capture_fps=100, timeout=1,
                       reconnect_max=1)
    source = Picamera2Source(cfg, motion_vectors=True, queue_size=64, reconnect_min=0.05)
    started = time.monotonic()
    frames = list(itertools.islice(source.frames(), 40))
    source.close()
    assert time.monotonic() - started < 5
    assert source.counters.reconnects == 3 and "TimeoutError" in source.counters.last_error
    assert [f.index for f in frames] == list(range(40))
    assert len(camera.instances) == 2 and not any(c.is_open for c in camera.instances)  # each one closed
    assert frames[25].motion_vectors is not None  # the encoder was started again on the new camera


def test_motion_vectors_are_not_waited_for_when_the_encoder_delivers_nothing():
    from framecull.sources.picamera2 import MotionVectorDecoder

    decoder = MotionVectorDecoder()
    started = time.monotonic()
    assert [decoder.vectors_for(t) for t in (0, 33_333, 66_666)] == [None] * 3
    assert time.monotonic() - started < 0.05


# --- probe ---


def test_probe_reports_what_a_camera_delivers(fake_picamera2):
    from framecull.sources.picamera2 import Picamera2Source

    fake_picamera2.Picamera2.reset(parking_lot(width=640, height=360, fps=5))  # 16 quiet seconds first
    cfg = SourceConfig(kind="picamera2", capture_size=(640, 360), capture_fps=40)  # analysed 320 wide
    report = probe(Picamera2Source(cfg, motion_vectors=True), seconds=1.0)
    assert (report["width"], report["height"]) == (640, 360)
    assert (report["analysis_width"], report["analysis_height"]) == (320, 180)
    assert report["fps"] == pytest.approx(40, rel=0.1)
    assert 30 <= report["frames"] <= 45 and report["dropped"] == 0
    assert report["motion_vectors"] and report["motion_vector_fraction"] > 0.9
    assert 1 <= report["change_passed"] <= 2  # the first frame, in a quiet scene
    text = format_probe(report)
    assert "640x360" in text and "fps measured" in text and "motion vectors" in text


def test_probe_guesses_the_kind_of_source_from_what_the_operator_typed(tmp_path):
    assert [kind_for_uri(uri) for uri in ("rtsp://cam.local/live", "picamera2", "/dev/video0", "2",
                                          "/dev/v4l/by-id/usb-Logitech-video-index0", str(tmp_path),
                                          "parking_lot", "clip.mp4")] == \
        ["rtsp", "picamera2", "v4l2", "v4l2", "v4l2", "folder", "synthetic", "file"]


def test_probe_of_a_dead_camera_ends_on_time():
    source = rtsp_source(f"rtsp://127.0.0.1:{free_port()}/cam", timeout=1, **FAST_RECONNECT)
    started = time.monotonic()
    report = probe(source, seconds=1.0)
    assert time.monotonic() - started < 2.5
    assert report["frames"] == 0 and report["reconnects"] >= 2 and "refused" in report["last_error"].lower()
    assert "frames          none" in format_probe(report)
