"""The synthetic scene generator: determinism, ground truth against the pixels, the source."""

from __future__ import annotations

from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from framecull.config import config_from_dict
from framecull.frame import Frame
from framecull.sources import SourceError, open_source
from framecull.sources.synthetic import SCENES, Scene, SyntheticSource, parking_lot

VARIANTS = [{}, {"width": 320, "height": 180}, {"fps": 10}, {"seed": 3}, {"light_step": False}]


@pytest.fixture(scope="module")
def scene() -> Scene:
    return parking_lot()


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(gray(a) - gray(b)).mean())


def test_default_scene_size_rate_and_clock(scene):
    assert (scene.name, scene.width, scene.height, scene.fps) == ("parking_lot", 640, 360, 5.0)
    assert 600 <= scene.n_frames <= 900
    img = scene.render(0)
    assert img.shape == (360, 640, 3) and img.dtype == np.uint8
    assert scene.start_time == datetime(2026, 6, 1, 6, 0, tzinfo=timezone.utc).timestamp()
    assert scene.timestamp(0) == scene.start_time
    assert scene.timestamp(10) == pytest.approx(scene.start_time + 2.0)
    assert SCENES["parking_lot"] is parking_lot


def test_default_scene_has_the_promised_events(scene):
    kinds = [e.kind for e in scene.events]
    assert kinds.count("car_arrives") >= 2
    assert kinds.count("car_leaves") >= 1
    assert kinds.count("person_crosses") == 1
    steps = [e for e in scene.events if e.kind == "light_step"]
    assert len(steps) == 1 and steps[0].start == steps[0].end
    assert all(e.description for e in scene.events)
    assert all(b - a + 1 >= 60 for a, b in scene.quiet), scene.quiet


@pytest.mark.parametrize("options", VARIANTS)
def test_events_and_quiet_cover_every_frame_exactly_once(options):
    scene = parking_lot(**options)
    covered = np.zeros(scene.n_frames, int)
    for event in scene.events:
        assert 0 <= event.start <= event.end < scene.n_frames
        covered[event.start : event.end + 1] += 1
    for a, b in scene.quiet:
        assert 0 <= a <= b < scene.n_frames
        covered[a : b + 1] += 1
    assert (covered == 1).all()
    # Maximal: two quiet stretches never touch; events never touch either (a quiet gap between).
    starts = sorted([(a, b) for a, b in scene.quiet] + [(e.start, e.end) for e in scene.events])
    for (a0, b0), (a1, b1) in zip(starts, starts[1:]):
        assert b0 + 1 == a1
    quiet_starts = {a for a, _ in scene.quiet}
    for left, right in zip(starts, starts[1:]):
        assert (left[0] in quiet_starts) != (right[0] in quiet_starts)


def test_render_is_deterministic_per_seed_and_differs_between_seeds(scene):
    frames = [0, scene.events[0].start + 5, scene.n_frames - 1]
    again = parking_lot(seed=0)
    for i in frames:
        first = scene.render(i)
        assert np.array_equal(first, scene.render(i))
        assert np.array_equal(first, again.render(i))
    other = parking_lot(seed=1)
    for i in frames:
        assert mean_abs_diff(scene.render(i), other.render(i)) > 2.0
    compressed = parking_lot(jpeg_quality=70)
    assert np.array_equal(compressed.render(3), parking_lot(jpeg_quality=70).render(3))
    assert compressed.render(3).shape == (360, 640, 3)


def test_render_refuses_frames_outside_the_clip(scene):
    with pytest.raises(IndexError):
        scene.render(scene.n_frames)
    with pytest.raises(IndexError):
        scene.render(-1)


@pytest.mark.parametrize("options", VARIANTS)
def test_noise_free_renders_match_the_ground_truth(options):
    """Without noise and drift, quiet frames equal their neighbours and every event frame shows it."""
    scene = parking_lot(noise=0, drift=0, **options)
    before_event = {e.start - 1: e for e in scene.events}
    references = []  # (event, the frame just before it)
    changed = np.zeros(scene.n_frames, bool)
    changed_pixels = np.zeros(scene.n_frames, int)
    previous = None
    for i in range(scene.n_frames):
        img = scene.render(i)
        if previous is not None:
            diff = cv2.absdiff(img, previous)
            if cv2.countNonZero(diff.reshape(scene.height, -1)):
                changed[i], changed_pixels[i] = True, np.count_nonzero(diff.any(axis=2))
        for event, reference in references:
            if event.start <= i <= event.end:
                assert not np.array_equal(img, reference), f"frame {i} of {event} looks like the frame before it"
        if i in before_event:
            references.append((before_event[i], img))
        previous = img

    for a, b in scene.quiet:
        still = np.flatnonzero(changed[a + 1 : b + 1]) + a + 1
        assert len(still) == 0, f"quiet frames {still[:5]} differ from their predecessors"
    sliver = 0.001 * scene.width * scene.height
    for event in scene.events:
        assert changed[event.start], event
        if event.kind == "car_arrives":
            assert changed[event.end] and not changed[event.end + 1], "the car comes to rest at `end`"
            assert 0 < changed_pixels[event.start] < sliver, "the car enters at the edge"
        if event.kind in ("car_leaves", "person_crosses"):
            assert 0 < changed_pixels[event.end + 1] < sliver, "only a sliver is left at `end`"


def test_events_show_in_their_region_through_the_noise(scene):
    """With default noise and drift, the object region changes by far more than the noise."""
    arrivals = [e for e in scene.events if e.kind == "car_arrives"]
    (crossing,) = [e for e in scene.events if e.kind == "person_crosses"]
    (leaving,) = [e for e in scene.events if e.kind == "car_leaves"]
    (step,) = [e for e in scene.events if e.kind == "light_step"]
    bay3, bay6 = np.s_[100:200, 215:265], np.s_[100:200, 455:505]  # where the two cars park
    mid = (crossing.start + crossing.end) // 2
    person = np.s_[245:350, 300:340]  # the walker is near the middle of the frame half-way

    checks = [
        (arrivals[0], arrivals[0].end, bay3),
        (arrivals[1], arrivals[1].end, bay6),
        (crossing, mid, person),
        (leaving, leaving.end, bay3),
        (step, step.start, np.s_[:, :]),
    ]
    for event, i, region in checks:
        before = gray(scene.render(event.start - 1))[region]
        earlier = gray(scene.render(event.start - 2))[region]
        during = gray(scene.render(i))[region]
        assert np.abs(during - before).mean() > 15, (event, i)
        assert np.abs(before - earlier).mean() < 3, (event, "quiet before the event")


@pytest.mark.parametrize("options", [{}, {"jpeg_quality": 75}])
def test_quiet_frames_differ_from_their_neighbours_only_by_noise(options):
    scene = parking_lot(**options)
    diffs, sigmas = [], []
    for a, b in scene.quiet:
        previous = scene.render(a)
        for i in range(a + 1, b + 1):
            img = scene.render(i)
            diffs.append(mean_abs_diff(img, previous))
            sigmas.append(float((img.astype(np.float32) - previous).std()))
            previous = img
    assert max(diffs) < 3.0
    assert min(diffs) > 0.3, "the noise is fresh on every frame"
    if not options:
        # BGR noise of sigma 2 per frame: the difference of two frames has sigma 2 * sqrt(2).
        assert np.median(sigmas) == pytest.approx(2 * np.sqrt(2), rel=0.1)


def test_light_step_and_drift_options():
    with_step = parking_lot(noise=0)
    without = parking_lot(noise=0, light_step=False)
    (step,) = [e for e in with_step.events if e.kind == "light_step"]
    assert [e for e in without.events if e.kind == "light_step"] == []
    assert [(e.kind, e.start, e.end) for e in without.events] == [
        (e.kind, e.start, e.end) for e in with_step.events if e.kind != "light_step"
    ]
    assert mean_abs_diff(with_step.render(step.start), with_step.render(step.start - 1)) > 15
    assert mean_abs_diff(without.render(step.start), without.render(step.start - 1)) < 1
    # Drift: a quarter of the way in the light is ~8% up, three quarters in ~8% down.
    n = without.n_frames
    bright, dim = gray(without.render(n // 4)).mean(), gray(without.render(3 * n // 4)).mean()
    assert bright / dim > 1.1
    flat = parking_lot(noise=0, drift=0, light_step=False)
    assert gray(flat.render(n // 4)).mean() / gray(flat.render(3 * n // 4)).mean() == pytest.approx(1, abs=0.02)


def test_person_is_one_to_two_percent_of_the_frame():
    scene = parking_lot(noise=0, drift=0)
    (crossing,) = [e for e in scene.events if e.kind == "person_crosses"]
    mid = (crossing.start + crossing.end) // 2
    differs = np.any(scene.render(mid) != scene.render(crossing.start - 1), axis=2)
    assert 0.008 <= differs.mean() <= 0.02


def test_bad_options_are_refused():
    with pytest.raises(ValueError):
        parking_lot(fps=0)
    with pytest.raises(ValueError):
        parking_lot(jpeg_quality=0)


def test_source_yields_every_frame_at_the_analysis_width():
    with SyntheticSource("parking_lot", 320) as source:
        assert source.kind == "synthetic" and not source.has_motion_vectors
        scene = source.scene
        assert source.frame_count == scene.n_frames
        count = 0
        for i, frame in enumerate(source.frames()):
            assert isinstance(frame, Frame)
            assert frame.index == i and frame.timestamp == scene.timestamp(i)
            assert frame.gray.shape == (180, 320) and frame.gray.dtype == np.uint8
            count += 1
        assert count == scene.n_frames
        assert frame.image.shape == (360, 640, 3)


def test_source_takes_a_scene_and_keeps_its_aspect_ratio():
    scene = parking_lot(width=320, height=240, quiet_seconds=2)
    frames = list(SyntheticSource(scene, 160).frames())
    assert len(frames) == scene.n_frames
    assert {f.gray.shape for f in frames} == {(120, 160)}
    assert np.array_equal(frames[7].image, scene.render(7))


def test_unknown_scene_is_a_source_error_naming_the_choices():
    with pytest.raises(SourceError, match="'car_wash'.*parking_lot"):
        SyntheticSource("car_wash", 320)


def test_the_registry_opens_the_synthetic_source():
    config = config_from_dict({"source": {"kind": "synthetic", "analysis_width": 160}})
    source = open_source(config)
    assert isinstance(source, SyntheticSource) and source.scene.name == "parking_lot" and source.width == 160
    with pytest.raises(SourceError):
        open_source(config_from_dict({"source": {"kind": "synthetic", "uri": "nowhere"}}))
