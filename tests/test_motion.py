"""Motion vectors from real H.264 (encoded here with libx264, decoded with PyAV), the legacy
Raspberry Pi vector format, and the motion-vector gate."""

import gc
import io
from functools import partial
import logging

import av
import cv2
import numpy as np
import pytest

from framecull.config import Config, ConfigError, Mask, config_from_dict
from framecull.frame import Frame
from framecull.gates.motion import MotionVectorGate as MotionVectorGateClass
from framecull.motion_vectors import RECORD, MotionVectors, legacy_frame_bytes, parse_legacy, read_legacy
from framecull.runner import Runner
from av.video.reformatter import VideoReformatter
from framecull.sources.video import VideoFileSource, make_frame
from scenes import encode_video, textured_background, to_bgr

encode = partial(encode_video, gop=30)  # key frames every 3 s at 10 fps: some frames are "unknown"

WIDTH, HEIGHT = 320, 240
GRID = (HEIGHT // 16, WIDTH // 16)  # 15 rows x 20 columns of macroblocks
PATCH = 48


def textured_patch(seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patch = cv2.GaussianBlur(rng.uniform(0, 255, (PATCH, PATCH)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(patch, None, 20, 235, cv2.NORM_MINMAX)


def render(positions, seed=0, noise=2.0):
    """BGR frames of a fixed scene with a textured patch at each (x, y)."""
    rng = np.random.default_rng(seed)
    scene, patch = textured_background(height=HEIGHT, width=WIDTH), textured_patch()
    frames = []
    for x, y in positions:
        picture = scene.copy()
        picture[y : y + PATCH, x : x + PATCH] = patch
        frames.append(to_bgr(picture, rng, noise=noise))
    return frames


def decode(path, width=160):
    with VideoFileSource(path, width, motion_vectors=True) as source:
        return list(source.frames())


def MotionVectorGate(regions: dict | None = None, **settings) -> MotionVectorGateClass:  # noqa: N802
    """The gate from its config sections: [gates.motion_vectors] keys and [regions]; without the
    safety net (max_gap 0) unless asked for, so that what passes is what the vectors show."""
    settings.setdefault("max_gap", 0)
    config = Config.model_validate({"gates": {"motion_vectors": settings}, "regions": regions or {}})
    return MotionVectorGateClass(config.gates.motion_vectors, config.regions)


def judge_all(gate, frames):
    return [gate.judge(f) for f in frames]


# A patch parked for 10 frames, sliding right 3 px a frame for 15, parked again for 15;
# key frames at 0 and 30.
STOP_GO_STOP = [(60, 100)] * 10 + [(60 + 3 * i, 100) for i in range(1, 16)] + [(105, 100)] * 15
MOVING = set(range(10, 25))
# Motion counts once it continues the previous frame's: from the second moving frame on.
SEEN_MOVING = MOVING - {10}


@pytest.fixture(scope="module")
def stop_go_stop(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("mv") / "stop_go_stop.mp4", render(STOP_GO_STOP))


def table(vectors: MotionVectors) -> np.ndarray:
    """The records as a table of partitions: x, y (top left), w, h, dx, dy (pixels), source."""
    rows = np.zeros(len(vectors), [("x", "i4"), ("y", "i4"), ("w", "i4"), ("h", "i4"), ("dx", "f4"), ("dy", "f4"),
                                   ("source", "i4")])
    rows["x"], rows["y"], rows["dx"], rows["dy"], rows["source"] = (vectors.x, vectors.y, vectors.dx, vectors.dy,
                                                                    vectors.source)
    rows["w"], rows["h"] = vectors.records["w"], vectors.records["h"]
    return rows


def fast_blocks(vectors, min_magnitude=1.0):
    rows = table(vectors)
    return rows[np.hypot(rows["dx"], rows["dy"]) > min_magnitude]


def overlap(vectors, x, y, size):
    """Which blocks overlap the square (x, y, size)."""
    return ((vectors["x"] < x + size) & (vectors["x"] + vectors["w"] > x)
            & (vectors["y"] < y + size) & (vectors["y"] + vectors["h"] > y))


def test_static_scene_with_sensor_noise_has_no_motion(tmp_path):
    frames = decode(encode(tmp_path / "static.mp4", render([(60, 100)] * 20, noise=3.0)))
    assert frames[0].motion_vectors is None  # the key frame
    for frame in frames[1:]:
        vectors = frame.motion_vectors
        assert isinstance(vectors, MotionVectors) and vectors.records.dtype == RECORD
        assert (vectors.width, vectors.height) == (WIDTH, HEIGHT) and vectors.grid == (GRID[1], GRID[0])
        assert len(vectors) >= GRID[0] * GRID[1] // 2  # intra blocks (new content) have no record
        assert len(fast_blocks(vectors)) <= 5  # scattered noise vectors, if any
    verdicts = judge_all(MotionVectorGate(), frames)
    assert [v.passed for v in verdicts] == [True] + [False] * 19


def test_a_moving_object_gives_vectors_at_its_position_and_in_its_direction(tmp_path):
    # Diagonal: right 3 px and down 2 px a frame. The vectors say where a block's content came
    # from in the previous frame: up and to the left, so dx < 0 and dy < 0.
    positions = [(40 + 3 * i, 60 + 2 * i) for i in range(20)]
    frames = decode(encode(tmp_path / "moving.mp4", render(positions)))
    for frame, (x, y) in zip(frames[2:], positions[2:]):
        fast = fast_blocks(frame.motion_vectors)
        assert len(fast) >= 4
        assert overlap(fast, x, y, PATCH).mean() >= 0.75, (frame.index, fast)
        # The others are background blocks along the object's edge, matched to where it was.
        assert overlap(fast, x - 16, y - 16, PATCH + 32).all(), (frame.index, fast)
        assert np.median(fast["dx"]) == pytest.approx(-3, abs=0.75)
        assert np.median(fast["dy"]) == pytest.approx(-2, abs=0.75)
        assert set(fast["source"]) == {-1}


def test_the_gate_drops_static_frames_and_passes_moving_ones(stop_go_stop):
    frames = decode(stop_go_stop)
    verdicts = judge_all(MotionVectorGate(hold_frames=0), frames)
    passed = {i for i, v in enumerate(verdicts) if v.passed}
    assert passed == {0, 30} | SEEN_MOVING
    for i in SEEN_MOVING:
        assert verdicts[i].scores["blocks"] >= 4 and verdicts[i].scores["clusters"] >= 1
        assert verdicts[i].scores["moving"] >= 0.002
    assert all(0 <= v.scores["noise"] < 0.5 for v in verdicts if not v.scores["unknown"])


def test_b_frames_partitions_and_noise_of_a_slower_preset(tmp_path):
    # veryfast: B-frames (vectors from a future reference too), 8x8 partitions, subpixel search,
    # which finds motion in sensor noise more readily than ultrafast does.
    clip = encode(tmp_path / "veryfast.mp4", render(STOP_GO_STOP, noise=3.0), preset="veryfast")
    frames = decode(clip)
    # Decoding again gives the same vectors (FFmpeg's frame threads would not: request_export).
    for frame, again in zip(frames, decode(clip)):
        assert (frame.motion_vectors is None and again.motion_vectors is None) or np.array_equal(
            frame.motion_vectors.records, again.motion_vectors.records)
    b_frames = [f for f in frames if f.motion_vectors is not None and (f.motion_vectors.source == 1).any()]
    assert len(b_frames) >= 20
    # On the object (moving right), a past reference has it to the left, a future one to the right.
    on_object = []
    for frame in b_frames:
        if frame.index in MOVING:
            fast = fast_blocks(frame.motion_vectors)
            on_object.append(fast[overlap(fast, *STOP_GO_STOP[frame.index], PATCH)])
    on_object = np.concatenate(on_object)
    past, future = on_object[on_object["source"] == -1], on_object[on_object["source"] == 1]
    assert len(past) >= 20 and len(future) >= 20
    assert np.median(past["dx"]) < -1 and np.median(future["dx"]) > 1
    verdicts = judge_all(MotionVectorGate(hold_frames=0), frames)
    assert all(verdicts[i].passed for i in SEEN_MOVING)
    still_passed = [i for i, v in enumerate(verdicts) if v.passed and i not in MOVING | {0, 30}]
    assert still_passed == []  # of 23 still frames


def test_key_frames_are_unknown_and_pass(stop_go_stop):
    frames = decode(stop_go_stop)
    assert [f.index for f in frames if f.motion_vectors is None] == [0, 30]
    gate = MotionVectorGate()
    for frame in frames:
        verdict = gate.judge(frame)
        if frame.index in (0, 30):
            assert verdict.passed and verdict.scores["unknown"] is True and verdict.scores["moving"] is None
        else:
            assert verdict.scores["unknown"] is False


def test_a_decoder_asked_for_no_vectors_gives_unknown(stop_go_stop):
    with av.open(str(stop_go_stop)) as container:
        frames = [make_frame(f, i, i / 10, 160, VideoReformatter()) for i, f in enumerate(container.decode(video=0))]
    assert len(frames) == 40 and all(f.motion_vectors is None for f in frames)
    assert frames[12].gray.shape == (120, 160) and frames[12].image.shape == (240, 320, 3)


def test_reading_vectors_keeps_no_decoded_picture_alive(stop_go_stop):
    # PyAV's frame.side_data caches a container that refers back to the frame: a cycle that kept
    # every decoded picture until a garbage collection (hundreds of MB at 720p).
    gc.collect()
    gc.disable()
    try:
        with VideoFileSource(stop_go_stop, 160, motion_vectors=True) as source:
            seen = sum(frame.motion_vectors is not None for frame in source.frames())
        alive = sum(type(o) is av.VideoFrame for o in gc.get_objects())
    finally:
        gc.enable()
    assert seen == 38 and alive <= 2


def test_which_sources_have_vectors(stop_go_stop, tmp_path):
    with VideoFileSource(stop_go_stop, 160, motion_vectors=True) as h264:
        assert h264.has_motion_vectors
    with VideoFileSource(stop_go_stop, 160, motion_vectors=False) as without:
        assert not without.has_motion_vectors and all(f.motion_vectors is None for f in without.frames())
    mjpeg = tmp_path / "clip.avi"
    encode_video(mjpeg, render([(60 + 3 * i, 100) for i in range(5)]), codec="mjpeg", pix_fmt="yuvj420p")
    with VideoFileSource(mjpeg, 160, motion_vectors=True) as source:
        assert not source.has_motion_vectors and [f.motion_vectors for f in source.frames()] == [None] * 5


def test_hold_over_passes_the_frames_just_after_motion_stops(stop_go_stop):
    verdicts = judge_all(MotionVectorGate(hold_frames=3), decode(stop_go_stop))
    passed = {i for i, v in enumerate(verdicts) if v.passed}
    assert passed == {0, 30} | SEEN_MOVING | {25, 26, 27}
    assert [verdicts[i].scores.get("hold") for i in (24, 25, 26, 27)] == [None, 1, 2, 3]


def test_masked_motion_never_passes(stop_go_stop):
    frames = decode(stop_go_stop)
    # The patch travels x 60..153, y 100..147 (fractions 0.19..0.48 by 0.42..0.62).
    mask = Mask(name="flag", polygon=[(0.15, 0.35), (0.55, 0.35), (0.55, 0.7), (0.15, 0.7)])
    masked = judge_all(MotionVectorGate({"masks": [mask]}, hold_frames=0), frames)
    assert [i for i, v in enumerate(masked) if v.passed] == [0, 30]
    # A border crop that leaves out the patch's rows does the same.
    cropped = judge_all(MotionVectorGate({"border": (0.0, 0.0, 0.6, 0.0)}, hold_frames=0), frames)
    assert [i for i, v in enumerate(cropped) if v.passed] == [0, 30]


def field(moving=(), intra=(), motion=(6.0, 0.0), dx=None, dy=None, **blocks):
    """Hand-built vectors over the 20x15 grid of a 320x240 picture: zero motion (or the given [rows,
    cols] dx, dy) except `motion` at the given (row, col) and any block=(row, col, dx, dy); no
    record for intra blocks."""
    dx = np.zeros(GRID) if dx is None else dx.copy()
    dy = np.zeros(GRID) if dy is None else dy.copy()
    for row, col in moving:
        dx[row, col], dy[row, col] = motion
    for row, col, x, y in blocks.values():
        dx[row, col], dy[row, col] = x, y
    present = np.ones(GRID, bool)
    for row, col in intra:
        present[row, col] = False
    return MotionVectors.of_blocks(dx, dy, WIDTH, HEIGHT, present)


def frame_with(vectors, index=0):
    return Frame(index, index / 10, np.zeros((120, 160), np.uint8), image=np.zeros((240, 320, 3), np.uint8),
                 motion_vectors=vectors)


def twice(gate, vectors):
    """The verdict on a second frame with these vectors: motion that continues the first frame's."""
    gate.judge(frame_with(vectors, 0))
    return gate.judge(frame_with(vectors, 1))


def test_an_isolated_moving_block_does_not_pass():
    for lone in (field(moving=[(5, 5)]), field(intra=[(5, 5)]), field(moving=[(2, 2), (9, 14)])):
        verdict = twice(MotionVectorGate(min_area=0.0, hold_frames=0), lone)
        assert not verdict.passed and verdict.scores["blocks"] == 0
    pair = field(moving=[(5, 5), (6, 6)])  # diagonal neighbours are connected
    gate = MotionVectorGate(min_area=0.0, hold_frames=0)
    first = gate.judge(frame_with(pair, 0))
    assert not first.passed, "motion counts once it goes on in the next frame"
    second = gate.judge(frame_with(pair, 1))
    assert second.passed and second.scores["blocks"] == 2 and second.scores["clusters"] == 1
    assert second.scores["moving"] == pytest.approx(2 / 300, abs=1e-6)


def test_neighbours_moving_different_ways_are_noise_not_motion():
    noise = field(moving=[(5, 5)], motion=(3.0, 0.0), up=(5, 6, 0.0, -3.0))  # its neighbour goes up
    assert not twice(MotionVectorGate(min_area=0.0, hold_frames=0), noise).passed
    limbs = field(moving=[(5, 5)], motion=(6.0, 0.0), limb=(5, 6, 5.0, 1.5))  # within half of the shorter length
    assert twice(MotionVectorGate(min_area=0.0, hold_frames=0), limbs).passed


def test_motion_that_does_not_go_on_is_noise():
    # A pair moving right, then one moving the other way where its content was: noise sliding
    # along an edge does that; an object does not turn round from one frame to the next.
    gate = MotionVectorGate(min_area=0.0, hold_frames=0)
    gate.judge(frame_with(field(moving=[(5, 5), (5, 6)], motion=(6.0, 0.0)), 0))
    assert not gate.judge(frame_with(field(moving=[(5, 5), (5, 6)], motion=(-6.0, 0.0)), 1)).passed
    # ...nor does motion after a key frame continue what came before it.
    gate.judge(frame_with(field(moving=[(5, 5), (5, 6)]), 2))
    gate.judge(frame_with(None, 3))
    assert not gate.judge(frame_with(field(moving=[(5, 5), (5, 6)]), 4)).passed
    # An object moving 40 px a frame continues 2.5 blocks away from where it is now.
    fast = MotionVectorGate(min_area=0.0, hold_frames=0)
    fast.judge(frame_with(field(moving=[(5, 2), (5, 3)], motion=(-40.0, 0.0)), 0))
    assert fast.judge(frame_with(field(moving=[(5, 5), (5, 6)], motion=(-40.0, 0.0)), 1)).passed


def test_three_blocks_can_be_required_per_cluster():
    assert not twice(MotionVectorGate(min_area=0.0, min_cluster=3, hold_frames=0),
                     field(moving=[(5, 5), (5, 6), (9, 9), (9, 10)])).passed
    verdict = twice(MotionVectorGate(min_area=0.0, min_cluster=3, hold_frames=0),
                    field(moving=[(5, 5), (5, 6), (6, 6), (9, 9), (9, 10)]))
    assert verdict.passed and verdict.scores["blocks"] == 3 and verdict.scores["clusters"] == 1


def test_slow_vectors_small_areas_and_intra_blocks_follow_the_settings():
    block = [(5, 5), (5, 6), (6, 5), (6, 6)]  # 4 of 300 blocks: 1.3% of the frame
    assert not twice(MotionVectorGate(min_magnitude=8.0), field(moving=block, motion=(-6.0, 0.0))).passed
    assert twice(MotionVectorGate(min_magnitude=5.0), field(moving=block, motion=(-6.0, 0.0))).passed
    assert not twice(MotionVectorGate(min_area=0.02), field(moving=block)).passed
    # Intra blocks never count: sensor noise makes encoders code many blocks intra.
    assert not twice(MotionVectorGate(), field(intra=block)).passed


def test_the_threshold_rises_with_the_vector_noise():
    rng = np.random.default_rng(0)
    block = [(5, 5), (5, 6), (6, 5), (6, 6)]

    def noisy(sigma):
        return field(moving=block, motion=(-3.0, 0.0), dx=rng.normal(0, sigma, GRID), dy=rng.normal(0, sigma, GRID))

    quiet, loud = MotionVectorGate(), MotionVectorGate()
    for i in range(20):  # the noise estimate settles
        calm, wild = quiet.judge(frame_with(noisy(0.1), i)), loud.judge(frame_with(noisy(1.0), i))
    assert calm.passed and calm.scores["noise"] < 0.3
    assert not wild.passed and wild.scores["noise"] > 0.8  # 3 px is under 4 x the noise


def test_one_frame_passes_after_max_gap_without_any():
    gate = MotionVectorGate(max_gap=1.0)
    verdicts = [gate.judge(frame_with(field(), i)) for i in range(35)]  # 10 frames a second, all still
    assert [i for i, v in enumerate(verdicts) if v.passed] == [0, 10, 20, 30]
    assert all(verdicts[i].scores["gap"] for i in (0, 10, 20, 30))
    gate.judge(frame_with(None, 35))  # a key frame passes, and counts
    assert not any(gate.judge(frame_with(field(), i)).passed for i in range(36, 45))


def test_a_source_without_vectors_passes_everything_and_says_so_once(caplog):
    gate = MotionVectorGate()
    with caplog.at_level(logging.INFO, logger="framecull.gate.motion_vectors"):
        verdicts = [gate.judge(frame_with(None, i)) for i in range(20)]
    assert all(v.passed and v.scores["unknown"] for v in verdicts)
    assert len([r for r in caplog.records if "no motion vectors" in r.message]) == 1


def test_bad_settings_and_bad_arrays_are_clear_errors():
    for key, value in (("min_area", 2.0), ("min_cluster", 1), ("hold_frames", -1), ("noise_factor", 0.5),
                       ("max_gap", -1)):
        with pytest.raises(ConfigError, match=f"gates.motion_vectors.{key}"):
            config_from_dict({"gates": {"motion_vectors": {key: value}}})
    with pytest.raises(TypeError, match="RECORD"):
        MotionVectors(np.zeros(3, [("x", "i2"), ("y", "i2")]), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="0x240"):
        MotionVectors(np.zeros(3, RECORD), 0, HEIGHT)
    with pytest.raises(ConfigError, match="gates.motion_vectors.count_intra"):
        config_from_dict({"gates": {"motion_vectors": {"count_intra": True}}})  # gone: intra blocks are noise


def legacy_bytes(width, height, vectors):
    """Legacy Raspberry Pi records, (columns + 1) per row, the extra column filled with junk."""
    cols, rows = (width + 15) // 16, (height + 15) // 16
    records = np.zeros((rows, cols + 1), [("x", "i1"), ("y", "i1"), ("sad", "<u2")])
    records[:, cols] = (99, 99, 65535)
    for (row, col), (x, y) in vectors.items():
        records[row, col] = (x, y, 1000)
    return records.tobytes()


def test_legacy_raspberry_pi_vectors_parse_to_the_right_blocks():
    # 40x20 pixels: 3 columns (+1) x 2 rows of macroblocks.
    data = legacy_bytes(40, 20, {(0, 0): (5, -3), (1, 2): (-128, 127)})
    assert len(data) == legacy_frame_bytes(40, 20) == 2 * 4 * 4
    vectors = parse_legacy(data, 40, 20)
    assert isinstance(vectors, MotionVectors) and len(vectors) == 6 and vectors.grid == (3, 2)
    assert vectors.x.tolist() == [0, 16, 32, 0, 16, 32]
    assert vectors.y.tolist() == [0, 0, 0, 16, 16, 16]
    assert vectors.dx.tolist() == [5, 0, 0, 0, 0, -128]
    assert vectors.dy.tolist() == [-3, 0, 0, 0, 0, 127]
    assert set(vectors.records["w"]) == set(vectors.records["h"]) == {16} and set(vectors.source) == {-1}
    with pytest.raises(ValueError, match=r"40x20.*32 bytes, got 31"):
        parse_legacy(data[:-1], 40, 20)
    # A stream of frames; a partial last frame is dropped.
    frames = list(read_legacy(io.BytesIO(data * 3 + data[:10]), 40, 20))
    assert len(frames) == 3 and all(np.array_equal(f.records, vectors.records) for f in frames)


def test_a_video_with_a_legacy_vector_file_replays_those_vectors(tmp_path, caplog):
    images = render([(60 + 3 * i, 100) for i in range(12)])
    video = encode(tmp_path / "clip.h264", images)
    # Frame i: a 2x2 cluster moving (-i, 0) at row 3, column i; the file holds 10 frames of 12.
    records = [legacy_bytes(WIDTH, HEIGHT, {(r, i + c): (-i, 0) for r in (3, 4) for c in (0, 1)}) for i in range(10)]
    (tmp_path / "clip.mv").write_bytes(b"".join(records))
    source = VideoFileSource(video, 160, motion_vectors=True)
    assert source.has_motion_vectors
    with caplog.at_level(logging.WARNING):
        frames = list(source.frames())
    source.close()
    assert len(frames) == 12 and frames[0].motion_vectors is None  # key frame: unknown
    for i in range(1, 10):
        assert np.array_equal(frames[i].motion_vectors.records, parse_legacy(records[i], WIDTH, HEIGHT).records)
    assert frames[10].motion_vectors is None and frames[11].motion_vectors is None
    assert "clip.mv: no motion vectors after frame 9" in caplog.text
    verdicts = judge_all(MotionVectorGate(hold_frames=0), frames)
    # Frame 1 moves 1 px: not above min_magnitude; frame 2 is the first to move, 3 goes on with it.
    assert [v.passed for v in verdicts] == [True, False, False] + [True] * 9


def test_dropped_frames_never_build_their_gray_plane(stop_go_stop, tmp_path):
    source = VideoFileSource(stop_go_stop, 160, motion_vectors=True)
    config = Config.model_validate({"source": {"analysis_width": 160}, "pacing": {"min_interval": 0},
                                    "gates": {"motion_vectors": {"hold_frames": 0}, "novelty": {"enabled": False}}})
    seen = []
    with Runner(config, tmp_path, write=False) as runner:
        for frame in source.frames():
            decisions = runner.push(frame)
            seen.append((frame, decisions[0]))
    source.close()
    stages = {frame.index: decision.stage for frame, decision in seen}
    assert {i for i, stage in stages.items() if stage == "motion_vectors"} == set(range(40)) - SEEN_MOVING - {0, 30}
    for frame, decision in seen:
        assert (frame._gray is None) == (decision.stage == "motion_vectors")


def test_frames_load_their_gray_plane_once_and_still_take_a_plane_directly():
    calls = []
    frame = Frame(0, 0.0, load_gray=lambda: calls.append(1) or np.ones((12, 16), np.uint8),
                  image=np.zeros((24, 32, 3), np.uint8))
    assert "not loaded" in repr(frame)
    assert frame.gray.shape == (12, 16) and frame.gray.sum() == 192 and calls == [1]
    plain = Frame(1, 0.1, np.zeros((12, 16), np.uint8), image=np.zeros((24, 32, 3), np.uint8))
    assert plain.gray.shape == (12, 16) and plain.motion_vectors is None
    assert Frame.from_bgr(2, 0.2, np.zeros((24, 32, 3), np.uint8), 16).gray.shape == (12, 16)
    with pytest.raises(ValueError, match="gray plane"):
        Frame(3, 0.3, image=np.zeros((24, 32, 3), np.uint8))


def test_probe_command_reports_a_video_file(tmp_path):
    import json
    import subprocess
    import sys

    from scenes import encode_video, textured_background, to_bgr, with_car

    rng = np.random.default_rng(0)
    scene = textured_background(height=240, width=320)
    images = [to_bgr(with_car(scene, x=10 + 6 * i, y=100, w=60, h=30), rng) for i in range(40)]
    clip = encode_video(tmp_path / "cam.mp4", images, fps=10)
    result = subprocess.run([sys.executable, "-m", "framecull", "probe", str(clip), "--seconds", "2", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "file" and (report["width"], report["height"]) == (320, 240)
    assert report["frames"] > 0 and report["motion_vectors"] is True
    assert 0 < report["motion_vector_fraction"] < 1  # key frames carry none
    assert report["change_passed"] > 0
    missing = subprocess.run([sys.executable, "-m", "framecull", "probe", "rtsp-camera-without-scheme"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 66 and "rtsp-camera-without-scheme" in missing.stderr


def test_masks_follow_the_picture_not_the_padded_block_grid():
    # 320x180 (picamera2's default lores size): 12 block rows cover 192 pixel rows. The top half
    # of the picture is masked: rows 0-90 (plus the blur margin), not 0-96 of the padded grid.
    regions = {"masks": [Mask(name="top", polygon=[(0, 0), (1, 0), (1, 0.5), (0, 0.5)])]}

    def judge(block_row):
        gate = MotionVectorGate(regions, hold_frames=0)
        dx = np.zeros((12, 20))  # 12 rows x 20 columns of blocks
        dx[block_row, 4:8] = -6.0  # pixels 64-127
        vectors = MotionVectors.of_blocks(dx, np.zeros_like(dx), 320, 180)
        for index in (0, 1):  # the second frame goes on with the first one's motion
            frame = Frame(index, index / 10, gray=np.zeros((90, 160), np.uint8),
                          image=np.zeros((180, 320, 3), np.uint8), motion_vectors=vectors)
            verdict = gate.judge(frame)
        return verdict

    assert judge(6).passed, "block row 6 (pixels 96-111) lies wholly below the mask"
    assert not judge(5).passed, "block row 5 (pixels 80-95) reaches into the mask"
