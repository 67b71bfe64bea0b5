import logging

import cv2
import numpy as np
import pytest

from framecull.config import Config
from framecull.sources import SourceError, open_source, throttle
from framecull.sources.folder import FolderSource
from framecull.sources.rtsp import RtspSource
from framecull.sources.video import VideoFileSource
from framecull.frame import Frame, fit
from scenes import encode_video, textured_background, to_bgr, with_car


def test_folder_source_reads_in_natural_order_and_skips_corrupt_images(tmp_path, caplog):
    rng = np.random.default_rng(0)
    scene = textured_background(height=240, width=320)
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), to_bgr(scene, rng))
    (tmp_path / "frame3.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    source = FolderSource(tmp_path, width=160, fps=0)
    assert not source.live and source.counters is None and source.stats() == {}
    with caplog.at_level(logging.WARNING):
        frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 3]  # frame1, frame2, (frame3 skipped), frame10
    assert source.skipped == 1
    assert "frame3.jpg" in caplog.text
    assert frames[0].gray.shape == (120, 160) and frames[0].image.shape == (240, 320, 3)
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(1.0)


def test_folder_without_images_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path, width=160, fps=0)
    with pytest.raises(SourceError, match="not a directory"):
        FolderSource(tmp_path / "missing", width=160, fps=0)


def test_video_source_decodes_real_h264(tmp_path):
    rng = np.random.default_rng(0)
    scene = textured_background(height=240, width=320)
    images = [to_bgr(scene, rng) for _ in range(10)] + [to_bgr(with_car(scene, x=100, y=100), rng) for _ in range(5)]
    path = encode_video(tmp_path / "clip.mp4", images, fps=10)
    source = VideoFileSource(path, width=160, motion_vectors=True)
    frames = list(source.frames())
    assert [f.index for f in frames] == list(range(15))
    assert frames[0].gray.shape == (120, 160)
    assert frames[1].timestamp - frames[0].timestamp == pytest.approx(0.1, abs=1e-3)
    # The luma plane read from the decoder is the decoded picture in video range (16..235).
    gray = cv2.resize(cv2.cvtColor(frames[12].image, cv2.COLOR_BGR2GRAY), (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[12].gray - (16 + gray.astype(float) * 219 / 255)).mean() < 2.0
    assert frames[12].image.shape == (240, 320, 3)
    # A model's input, scaled from the decoder's planes, is the full picture shrunk (frame.fit).
    small = frames[12].picture(128, 96)
    assert small.shape == (96, 128, 3) and small.dtype == np.uint8
    assert np.abs(small.astype(float) - fit(frames[12].image, 128, 96)).mean() < 2.0
    assert np.abs(small.astype(float) - fit(frames[0].image, 128, 96)).mean() > 2.0  # the car is there


def test_truncated_video_ends_cleanly(tmp_path):
    rng = np.random.default_rng(0)
    scene = textured_background(height=240, width=320)
    images = [to_bgr(with_car(scene, x=10 + 8 * i, y=100), rng) for i in range(30)]
    data = encode_video(tmp_path / "clip.mp4", images).read_bytes()
    cut = tmp_path / "cut.mp4"
    # An MP4 cut short loses its index at the end: write a raw H.264 stream instead, then cut it.
    raw = tmp_path / "clip.h264"
    import av

    with av.open(str(tmp_path / "clip.mp4")) as src, av.open(str(raw), "w", format="h264") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    whole = raw.read_bytes()
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    frames = list(VideoFileSource(cut, width=160, motion_vectors=True).frames())
    assert 5 <= len(frames) < 30
    assert data  # the encoded clip existed


def test_truncated_real_clip_ends_cleanly(testdata):
    source = VideoFileSource(testdata / "videos" / "bgslibrary_video02.avi", width=160, motion_vectors=True)
    frames = sum(1 for _ in source.frames())
    assert frames == 748 and source.frame_count == 750


def test_missing_or_bad_video_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        VideoFileSource(tmp_path / "nope.mp4", width=160, motion_vectors=True)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="cannot open"):
        VideoFileSource(bad, width=160, motion_vectors=True)


def test_registry_opens_the_configured_kind(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    config = Config.model_validate({"source": {"kind": "folder", "uri": str(tmp_path), "analysis_width": 32}})
    with open_source(config) as source:
        assert isinstance(source, FolderSource) and source.width == 32
    camera = Config.model_validate({"source": {"kind": "rtsp", "uri": "rtsp://cam/live", "timeout": "3s",
                                               "reconnect_max": "2m"},
                                    "gates": {"motion_vectors": {"enabled": False}}})
    source = open_source(camera)  # not connected until frames() is called
    assert isinstance(source, RtspSource) and source.live and source.width == 320
    assert (source.timeout, source.backoff.maximum, source.has_motion_vectors) == (3.0, 120.0, False)
    with pytest.raises(SourceError, match="not a URL"):
        open_source(Config.model_validate({"source": {"kind": "rtsp", "uri": "camera-1"}}))
    with pytest.raises(SourceError, match="camera number"):
        open_source(Config.model_validate({"source": {"kind": "picamera2", "uri": "/dev/video0"}}))


def test_throttle_keeps_the_requested_rate():
    gray = np.zeros((4, 4), np.uint8)
    frames = [Frame(i, 100 + i / 12.5, gray, image=gray) for i in range(125)]  # 10 s at 12.5 fps
    kept = list(throttle(iter(frames), 5.0))
    assert 49 <= len(kept) <= 51
    gaps = np.diff([f.timestamp for f in kept])
    assert gaps.min() >= 0.159 and gaps.max() <= 0.25
    assert len(list(throttle(iter(frames), 0))) == 125


def test_a_demux_error_skips_the_damage_and_keeps_the_rest_of_the_file(tmp_path, caplog):
    import av

    rng = np.random.default_rng(0)
    scene = textured_background(height=120, width=160)
    clip = encode_video(tmp_path / "clip.mp4", [to_bgr(with_car(scene, x=2 * i, y=40, w=30, h=15), rng)
                                                for i in range(60)])
    source = VideoFileSource(clip, width=80, motion_vectors=True)
    real_demux = source.container.demux
    calls = []

    def demux_failing_once(stream):  # the demuxer raises at packet 40, as on a damaged file
        calls.append(1)
        for n, packet in enumerate(real_demux(stream)):
            if n == 40 and len(calls) == 1:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield packet

    class Container:
        def __getattr__(self, name):
            return getattr(source.container_real, name)

        demux = staticmethod(demux_failing_once)

    source.container_real, source.container = source.container, Container()
    with caplog.at_level(logging.WARNING):
        count = sum(1 for _ in source.frames())
    assert source.errors == 1 and "damaged data skipped" in caplog.text
    assert count >= 58, f"only {count} of 60 frames after one demux error"


def test_stream_clock_never_runs_backwards():
    from framecull.sources.live import StreamClock

    clock = StreamClock(max_lag=2.0)
    stamps = [clock.timestamp(t) for t in (10.0, 10.1, 10.2, 8.7, 8.8, 10.3)]  # a 1.5 s step back
    assert all(b >= a for a, b in zip(stamps, stamps[1:])), stamps
