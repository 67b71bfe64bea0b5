import cv2
import numpy as np
import pytest

from framecull.config import Config, Mask, RegionsConfig
from framecull.frame import Frame
from framecull.gates.change import ChangeGate
from framecull.regions import valid_mask
from scenes import textured_background, to_bgr, with_car


def make_gate(regions: dict | None = None, min_change: float | None = None, **change) -> ChangeGate:
    """A change gate from config sections: [gates.change] keys, [regions], [lighting] min_change."""
    lighting = {} if min_change is None else {"min_change": min_change}
    config = Config.model_validate({"gates": {"change": change}, "regions": regions or {}, "lighting": lighting})
    return ChangeGate(config.gates.change, config.regions, config.lighting)


def frames_of(scenes, seed=1, width=320, **render):
    rng = np.random.default_rng(seed)
    return [Frame.from_bgr(i, i * 0.2, to_bgr(s, rng, **render), width) for i, s in enumerate(scenes)]


def passes(gate, frames):
    return [gate.judge(f).passed for f in frames]


@pytest.fixture
def scene():
    return textured_background()


def test_first_frame_is_a_candidate(scene):
    verdict = make_gate().judge(frames_of([scene])[0])
    assert verdict.passed and verdict.scores["first"] is True


def test_sensor_noise_and_jpeg_on_a_static_scene_never_pass(scene):
    result = passes(make_gate(), frames_of([scene] * 40, noise=3.0, jpeg=75))
    assert result[0] and not any(result[1:])


def test_a_car_appearing_passes(scene):
    gate = make_gate()
    result = passes(gate, frames_of([scene, scene, with_car(scene)]))
    assert result == [True, False, True]


def test_a_30_percent_brightness_step_is_not_a_flood(scene):
    for gain in (1.3, 0.7):
        gate = make_gate()
        frames = frames_of([scene] * 5 + [scene * gain] * 20, noise=2.0)
        result = passes(gate, frames)
        assert sum(result[1:]) <= 1, f"gain {gain}"
        # Whatever passes, it is far from "everything changed".
        gate = make_gate()
        gate.judge(frames[0])
        m, _ = gate.measure(frames[5])
        assert m.changed < 0.05, f"gain {gain}: {m.changed:.3f} of the frame changed"


def test_a_car_appearing_during_a_brightness_step_still_passes(scene):
    gate = make_gate()
    frames = frames_of([scene, with_car(scene) * 1.3])
    assert passes(gate, frames) == [True, True]


def test_slow_lighting_drift_never_passes(scene):
    gains = np.linspace(1.0, 0.87, 150)  # 13% darker over 150 frames: less than light_change
    result = passes(make_gate(), frames_of([scene * g for g in gains]))
    assert not any(result[1:])


def test_a_new_lighting_state_passes_once_per_light_change_step(scene):
    gains = np.linspace(1.0, 0.5, 200)  # dusk: half as bright; 2 / 1.2**3 < 1 < 2 / 1.2**4
    gate = make_gate(min_change=0.2)
    result = passes(gate, frames_of([scene * g for g in gains]))
    assert sum(result[1:]) == 3
    assert not any(passes(make_gate(min_change=0), frames_of([scene * g for g in gains]))[1:])


def test_dark_noisy_night_scene_still_reveals_a_car(scene):
    night = scene * 0.3
    gate = make_gate()
    frames = frames_of([night] * 30 + [with_car(scene) * 0.3], noise=6.0)
    result = passes(gate, frames)
    assert not any(result[1:30]), "night noise alone passed"
    assert result[30], "the car at night was missed"


def rain(scene, rng, streaks=300, length=14, brightness=60.0):
    out = scene.copy()
    h, w = scene.shape
    for _ in range(streaks):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(out, (x, y), (x + 2, y + length), float(min(255, scene[y, x] + brightness)), 1)
    return out


def test_rain_streaks_do_not_flood_the_gate(scene):
    rng = np.random.default_rng(5)
    result = passes(make_gate(), frames_of([scene] + [rain(scene, rng) for _ in range(30)]))
    assert sum(result[1:]) == 0


def test_ir_day_night_switch_passes_at_most_once(scene):
    # An IR switch: the picture turns flat and washed out (new gamma, gain and offset).
    ir = 255 * (scene.clip(0, 255) / 255) ** 0.6 * 0.7 + 30
    result = passes(make_gate(), frames_of([scene] * 5 + [ir] * 30, noise=3.0))
    assert sum(result[1:]) <= 1


def test_masked_regions_never_trigger(scene):
    regions = {"masks": [Mask(name="bay", polygon=[(0.4, 0.55), (0.7, 0.55), (0.7, 0.85), (0.4, 0.85)])]}
    car = with_car(scene, x=300, y=230, w=90, h=45)  # inside the mask (x 256..448, y 198..306)
    result = passes(make_gate(regions), frames_of([scene, car, scene, car, scene]))
    assert result == [True, False, False, False, False]
    # The same car outside the mask passes.
    elsewhere = with_car(scene, x=40, y=40)
    assert passes(make_gate(regions), frames_of([scene, elsewhere])) == [True, True]


def test_border_crop_is_never_counted(scene):
    car = with_car(scene, x=20, y=100)
    assert passes(make_gate({"border": (0.0, 0.0, 0.0, 0.3)}), frames_of([scene, car])) == [True, False]  # left 30%


def test_valid_mask_covers_polygon_and_its_blur_margin():
    regions = RegionsConfig(masks=[Mask(name="m", polygon=[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)])])
    valid = valid_mask((100, 200), regions, grow=5)
    assert valid[10, 10] == 0 and valid[10, 150] == 255
    assert valid[10, 101] == 0, "the blur margin around the mask is not counted"


def test_last_judged_reference_kills_quiet_frames_after_an_event(scene):
    car = with_car(scene)
    sequence = [scene] * 3 + [car] * 10 + [scene] * 10
    result = passes(make_gate(reference="last_judged"), frames_of(sequence))
    assert result[3] is True and not any(result[4:13])  # the parked car passes once
    assert result[13] is True and not any(result[14:])  # so does the empty lot again


def test_previous_reference_sees_only_frame_to_frame_change(scene):
    sequence = [scene] * 3 + [with_car(scene)] * 5
    result = passes(make_gate(reference="previous"), frames_of(sequence))
    assert result == [True, False, False, True, False, False, False, False]


def test_background_reference_absorbs_a_parked_car_slowly(scene):
    sequence = [scene] * 3 + [with_car(scene)] * 120
    result = passes(make_gate(reference="background", background_rate=0.1), frames_of(sequence))
    assert all(result[3:6]), "a new car differs from the background"
    assert not any(result[-20:]), "a long-parked car became background"


def test_resolution_change_restarts_the_reference(scene):
    gate = make_gate()
    rng = np.random.default_rng(0)
    gate.judge(Frame.from_bgr(0, 0, to_bgr(scene, rng), 320))
    small = cv2.resize(scene, (320, 240))
    verdict = gate.judge(Frame.from_bgr(1, 1, to_bgr(small, rng), 320))
    assert verdict.passed and verdict.scores.get("first")


def test_changed_fraction_does_not_depend_on_the_analysis_width(scene):
    measures = []
    for width in (160, 320, 640):
        gate = make_gate()
        frames = frames_of([scene, with_car(scene)], width=width)
        gate.judge(frames[0])
        measures.append(gate.measure(frames[1])[0].changed)
    assert max(measures) / min(measures) < 1.6, measures


def test_camera_jitter_of_a_pixel_or_two_does_not_pass(scene):
    rng = np.random.default_rng(11)
    shifted = []
    for _ in range(40):  # a pole-mounted camera in the wind: 1-2 px shifts at 640x360
        dx, dy = rng.integers(-2, 3, size=2)
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        shifted.append(cv2.warpAffine(scene, matrix, (scene.shape[1], scene.shape[0]), borderMode=cv2.BORDER_REFLECT))
    result = passes(make_gate(), frames_of(shifted))
    assert not any(result[1:]), f"{sum(result[1:])} of 39 shaken frames passed"
    # A car still passes under the same shake.
    gate = make_gate()
    assert passes(gate, frames_of([shifted[0], with_car(shifted[1])])) == [True, True]
