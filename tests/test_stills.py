"""Stills: capture times from names and EXIF, cameras, the folder source, the change gate's stills regime,
the novelty gate's comparison of stills with kept ones at pixel level."""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest
from PIL import Image

from framecull.config import ChangeConfig, Config, ConfigError, LightingConfig, RegionsConfig, config_from_dict
from framecull.frame import Frame
from framecull.gates.change import ChangeGate
from framecull.replay import DECISIONS_FILE, replay_stills
from framecull.runner import Collect, Runner
from framecull.sources import open_source
from framecull.sources.folder import FolderSource
from framecull.sources.synthetic import BAY_CENTRES, CAR_COLOURS, REST_Y, draw_car, parking_lot
from framecull.stills import Naming, by_camera, scan, time_from_name
from scenes import parked_lot_stills, textured_background, to_bgr, with_car

T = datetime(2023, 6, 13, 3, 11, 46, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("stem, camera", [
    ("c21_2023_06_13__03_11_46", "c21_"),
    ("lot-east_2023-06-13_03_11_46", "lot-east_"),
    ("2023-06-13T03_11_46", ""),
    ("gate 2023-06-13 03:11:46", "gate "),
    ("cam7-20230613-031146", "cam7-"),
    ("cam7_20230613_031146_0001", "cam7_"),
    ("snap_1686625906", "snap_"),
    ("snap_1686625906000", "snap_"),
])
def test_capture_time_and_camera_part_from_the_built_in_patterns(stem, camera):
    when, start = time_from_name(stem, Naming())
    assert when == T
    assert stem[:start] == camera


def test_zones_in_names_and_the_timezone_for_names_without_one():
    assert time_from_name("c1_2023-06-13T05_11_46+02:00", Naming())[0] == T
    assert time_from_name("c1_20230613-031146Z", Naming(timezone="Europe/Berlin"))[0] == T
    # 05:11:46 in Berlin (summer time, UTC+2) is 03:11:46 UTC
    assert time_from_name("c1_2023_06_13__05_11_46", Naming(timezone="Europe/Berlin"))[0] == T


def test_a_user_time_format_and_names_without_a_time():
    naming = Naming(time_format="%d.%m.%Y %Hh%M")
    assert time_from_name("yard 13.06.2023 03h11", naming) == (T - 46, 5)
    assert time_from_name("frame0007", Naming()) is None
    assert time_from_name("IMG_1234", Naming()) is None  # a counter, not an epoch
    assert time_from_name("c1_2023_13_45__03_11_46", Naming()) is None  # not a date


def test_a_bad_timezone_or_time_format_is_a_config_error():
    with pytest.raises(ConfigError, match="source.timezone: unknown time zone 'Mars/Olympus'"):
        config_from_dict({"source": {"timezone": "Mars/Olympus"}})
    with pytest.raises(ConfigError, match="source.time_format"):
        config_from_dict({"source": {"time_format": "%Q"}})


def write_exif_jpeg(path, image: np.ndarray, taken: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    Image.fromarray(image[..., ::-1]).save(path, exif=exif.tobytes(), quality=90)


def test_exif_time_when_the_name_has_none_then_mtime_when_asked(tmp_path):
    rng = np.random.default_rng(0)
    scene = textured_background(height=90, width=160)
    write_exif_jpeg(tmp_path / "IMG_0002.jpg", to_bgr(scene, rng), "2023:06:13 03:11:46")
    write_exif_jpeg(tmp_path / "IMG_0001.jpg", to_bgr(scene, rng), "2023:06:13 03:14:46")
    cv2.imwrite(str(tmp_path / "IMG_0003.png"), to_bgr(scene, rng))
    os.utime(tmp_path / "IMG_0003.png", (T + 600, T + 600))

    stills = scan(tmp_path, Naming())
    assert [(s.name, s.time) for s in stills] == [("IMG_0002.jpg", T), ("IMG_0001.jpg", T + 180),
                                                  ("IMG_0003.png", None)]
    assert scan(tmp_path, Naming(mtime=True))[-1].time == T + 600
    # Without a time among timed stills, a still is skipped with a warning (and counted).
    source = FolderSource(tmp_path, width=80, fps=0)
    assert [f.timestamp for f in source.frames()] == [T, T + 180]
    assert source.untimed == 1


def test_cameras_from_the_name_or_the_subfolder(tmp_path):
    image = to_bgr(textured_background(height=90, width=160), np.random.default_rng(0))
    (tmp_path / "north").mkdir()
    for name in ("c21_2021_03_27__10_36_36.png", "c22_2021_03_27__10_33_36.png", "north/2021_03_27__10_30_00.png",
                 "north/2021_03_27__10_39_00.png"):
        cv2.imwrite(str(tmp_path / name), image)
    groups = by_camera(scan(tmp_path, Naming()))
    assert {camera: [s.name for s in stills] for camera, stills in groups.items()} == {
        "c21": ["c21_2021_03_27__10_36_36.png"],
        "c22": ["c22_2021_03_27__10_33_36.png"],
        "north": ["north/2021_03_27__10_30_00.png", "north/2021_03_27__10_39_00.png"],
    }


def test_folder_source_orders_by_capture_time_and_skips_broken_files(tmp_path, caplog):
    rng = np.random.default_rng(1)
    scene = textured_background(height=180, width=320)
    names = ["c1_2021_03_27__10_06_00.png", "c1_2021_03_27__10_00_00.png", "c1_2021_03_27__10_03_00.jpg"]
    for name in names:
        cv2.imwrite(str(tmp_path / name), to_bgr(scene, rng))
    good = (tmp_path / "c1_2021_03_27__10_03_00.jpg").read_bytes()
    (tmp_path / "c1_2021_03_27__10_04_00.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "c1_2021_03_27__10_05_00.png").write_bytes(b"")  # empty
    (tmp_path / "c1_2021_03_27__10_07_00.png").write_text("not an image")
    config = Config.model_validate({"source": {"kind": "folder", "uri": str(tmp_path), "analysis_width": 160}})
    source = open_source(config)
    with caplog.at_level(logging.WARNING):
        frames = list(source.frames())
    start = datetime(2021, 3, 27, 10, tzinfo=timezone.utc).timestamp()
    assert [f.timestamp - start for f in frames] == [0, 180, 360]
    assert [f.index for f in frames] == [0, 1, 4]  # the broken files keep their places
    assert [os.path.basename(f.file) for f in frames] == sorted(names)
    assert source.skipped == 3
    assert caplog.text.count("skipping") == 3 and "truncated JPEG" in caplog.text


def night_with_floodlights(scene: np.ndarray) -> np.ndarray:
    """The scene at night: dark, but for two pools of light (not a global gain: a histogram
    match cannot map it back)."""
    h, w = scene.shape
    ys, xs = np.mgrid[0:h, 0:w]
    pools = sum(np.exp(-((xs - cx * w) ** 2 + (ys - cy * h) ** 2) / (2 * (0.15 * w) ** 2))
                for cx, cy in ((0.25, 0.6), (0.7, 0.4)))
    return scene * (0.12 + 0.8 * np.minimum(pools, 1.0))


def judge_pair(first: np.ndarray, second: np.ndarray, gap: float):
    gate = ChangeGate(ChangeConfig(), RegionsConfig(), LightingConfig())
    gate.judge(Frame.from_bgr(0, T, first, 320))
    return gate.judge(Frame.from_bgr(1, T + gap, second, 320))


def test_a_big_step_between_stills_is_a_candidate_and_a_repeat_is_not():
    rng = np.random.default_rng(2)
    scene = textured_background(height=360, width=640)
    dusk = to_bgr(scene, rng, gain=0.5)
    night = to_bgr(night_with_floodlights(scene), rng, noise=4.0)
    step = judge_pair(dusk, night, gap=15 * 60)
    assert step.passed and step.scores["stills"] is True
    assert step.scores["threshold"] <= ChangeConfig().threshold  # the step did not count as noise
    # The same view again 15 minutes later (new sensor noise) is no candidate, nor a car too small to count.
    assert not judge_pair(night, to_bgr(night_with_floodlights(scene), rng, noise=4.0), gap=15 * 60).passed
    car = to_bgr(night_with_floodlights(with_car(scene, value=10)), rng, noise=4.0)
    assert judge_pair(night, car, gap=15 * 60).passed  # a car under the floodlights is


def test_between_stills_a_change_everywhere_does_not_raise_the_threshold_as_noise_would():
    rng = np.random.default_rng(4)
    before = to_bgr(textured_background(seed=0), rng)
    after = to_bgr(textured_background(seed=7), rng)  # snow, or the ground after a storm: new everywhere
    video, stills = judge_pair(before, after, gap=0.2), judge_pair(before, after, gap=15 * 60)
    # 0.2 s apart, a difference everywhere can only be noise (or exposure): the threshold rises with it.
    assert video.scores["noise"] > 5 and video.scores["threshold"] > 1.5 * stills.scores["threshold"]
    # Minutes apart, the noise is the pictures' own grain: the threshold stays where the config put it.
    assert stills.scores["noise"] < 1 and stills.scores["changed"] > video.scores["changed"]


def test_a_change_of_size_is_compared_at_the_analysis_size():
    rng = np.random.default_rng(3)
    scene = textured_background(height=720, width=1280)
    large = to_bgr(scene, rng)
    small = cv2.resize(to_bgr(scene, rng), (640, 360), interpolation=cv2.INTER_AREA)
    verdict = judge_pair(large, small, gap=180)
    assert not verdict.passed and "first" not in verdict.scores


def test_a_car_parked_in_one_bay_between_stills_is_kept_and_a_repeat_with_fresh_noise_is_not(tmp_path):
    """The grid embedding moves too little for a car parked in one bay (the old rule dropped such
    stills); against the kept stills' thumbnails it is a new blob. A still that repeats a kept one
    with fresh noise only reaches the novelty gate (it differs from the change gate's reference)
    and is dropped there."""
    lot = parking_lot(seed=0).background
    car = lot.copy()
    draw_car(car, BAY_CENTRES[1], REST_Y, -math.pi / 2, CAR_COLOURS["white"], np.array([1.0, 1.0]))
    folder, out = tmp_path / "stills", tmp_path / "out"
    folder.mkdir()
    parked_lot_stills(folder, [lot, lot, car, lot, car])
    config = Config()
    replay_stills(config, folder, out)
    decisions = [json.loads(line) for line in (out / DECISIONS_FILE).read_text().splitlines()]
    assert [d["kept"] for d in decisions] == [True, False, True, False, False]
    parked = decisions[2]["scores"]["novelty"]
    novelty = config.gates.novelty
    # by every measure of the old rule, the parked car was no novelty
    assert parked["distance"] <= novelty.min_distance and parked["region"] <= novelty.min_region_distance
    assert parked["light"] <= config.lighting.min_change
    assert parked["objects"] >= config.gates.change.min_changed
    for repeat in decisions[3:]:  # the empty lot again, the car again: judged, and seen before
        assert repeat["stage"] == "novelty" and repeat["scores"]["novelty"]["objects"] < config.gates.change.min_changed


def test_video_frames_are_never_compared_at_pixel_level(tmp_path):
    """Frames 0.2 s apart are a video: a new car there is the embedding's to judge, and no
    thumbnail is compared."""
    lot = parking_lot(seed=0).background
    car = lot.copy()
    draw_car(car, BAY_CENTRES[1], REST_Y, -math.pi / 2, CAR_COLOURS["white"], np.array([1.0, 1.0]))
    frames = [Frame.from_bgr(i, T + 0.2 * i, image, 320) for i, image in enumerate([lot, lot, car, car])]
    decisions = Collect()
    with Runner(Config(), tmp_path / "root", write=False, sinks=[decisions]) as runner:
        runner.run(frames)
    judged = [d.scores["novelty"] for d in decisions.decisions if "novelty" in d.scores]
    assert len(judged) >= 2 and all(scores["objects"] is None for scores in judged)


def floodlit(picture: np.ndarray, exposure: float = 1.0) -> np.ndarray:
    """The picture at night under two floodlight pools (light that is not global: no histogram
    match maps it back), times an exposure."""
    h, w = picture.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pools = sum(np.exp(-((xs - cx * w) ** 2 + (ys - cy * h) ** 2) / (2 * (0.2 * w) ** 2))
                for cx, cy in ((0.3, 0.55), (0.75, 0.45)))
    light = exposure * (0.15 + 0.85 * np.minimum(pools, 1.0))
    return np.clip(picture * light[..., None], 0, 255)


def kept_stills(tmp_path, pictures: list[np.ndarray]) -> list[dict]:
    folder, out = tmp_path / "stills", tmp_path / "out"
    folder.mkdir()
    parked_lot_stills(folder, pictures)
    replay_stills(Config(), folder, out)
    return [json.loads(line) for line in (out / DECISIONS_FILE).read_text().splitlines()]


def lot_and_car() -> tuple[np.ndarray, np.ndarray]:
    lot = parking_lot(seed=0).background
    car = lot.copy()
    draw_car(car, BAY_CENTRES[1], REST_Y, -math.pi / 2, CAR_COLOURS["white"], np.array([1.0, 1.0]))
    return lot.astype(np.float32), car.astype(np.float32)


def test_a_known_scene_under_floodlights_is_the_same_scene_and_a_car_under_them_is_new(tmp_path):
    """Pixel level, each still is relit to the other's light (the smooth ratio of the two): the
    night is a new light once, the lot seen by day and at night is one scene, and a car parked
    under the floodlights is a new blob all the same."""
    lot, car = lot_and_car()
    decisions = kept_stills(tmp_path, [lot, floodlit(lot), lot, floodlit(car), car, floodlit(car)])
    assert [d["kept"] for d in decisions] == [True, True, False, True, False, False]
    night, car_at_night, car_by_day = (decisions[i]["scores"]["novelty"] for i in (1, 3, 4))
    min_changed = Config().gates.change.min_changed
    assert night["objects"] < min_changed and night["light"] > 1.0  # not a new scene: a new light
    assert car_at_night["objects"] >= min_changed  # the control: relighting does not take a car away
    assert car_by_day["objects"] < min_changed and car_by_day["light"] < 1.0


def test_floodlights_are_a_new_light_even_when_the_exposure_keeps_the_mean_level(tmp_path):
    """A camera's auto-exposure may keep the night's mean grey level near the day's: the light is
    still laid out otherwise (pools a stop brighter, the rest a stop darker)."""
    lot, _ = lot_and_car()
    night = floodlit(lot)
    exposure = float(lot.mean() / night.mean())
    decisions = kept_stills(tmp_path, [lot, floodlit(lot, exposure), floodlit(lot, exposure)])
    assert [d["kept"] for d in decisions] == [True, True, False]  # the control: the night again is not new
    assert abs(floodlit(lot, exposure).mean() / lot.mean() - 1) < Config().lighting.min_change
    assert decisions[1]["scores"]["novelty"]["light"] > 1.0


def test_a_dusk_ramp_is_one_new_light_a_stop_on_not_one_every_20_percent(tmp_path):
    """Stills minutes apart see the light of the day drift: 2 stops of dusk in 12 stills, 12% each.
    A new light for stills is a stop (twice or half the light) from every kept still: one still of
    the ramp is kept, the first half as bright as the kept one (the control: light still counts);
    [lighting] min_change (20%) would have kept every other still."""
    lot, _ = lot_and_car()
    gains = [0.88 ** i for i in range(12)]  # 1.0 .. 0.24
    decisions = kept_stills(tmp_path, [lot * g for g in gains])
    kept = [i for i, d in enumerate(decisions) if d["kept"]]
    assert kept[0] == 0 and len(kept) == 2, kept
    assert gains[kept[1]] < 0.5 <= gains[kept[1] - 1]
    judged = [d for d in decisions if d["stage"] == "novelty"]
    assert len(judged) >= 5  # the change gate passed every other still as a new light: the novelty gate decided


def test_the_light_field_of_two_stills_is_the_same_either_way_round():
    """A ratio of light is one value, whichever still is the reference: the field of (a, b) is
    minus the field of (b, a), but for a rare tie of its 8-bit codes (1/32 of a natural log a step).
    Truncated codes made every value a step apart, a bias of 3% one way."""
    from framecull.thumbnails import light_field

    rng = np.random.default_rng(3)
    day = to_bgr(textured_background(height=90, width=160), rng)
    pools = np.linspace(0.3, 1.6, 160, dtype=np.float32)[None, :, None]  # light falling off to one side
    dusk = np.clip(day.astype(np.float32) * pools, 0, 255).astype(np.uint8)
    forward, backward = light_field(day, dusk), light_field(dusk, day)
    assert np.abs(forward).max() > 0.5  # a real change of light, up to ~half a stop and more
    asymmetry = np.abs(forward + backward)
    assert asymmetry.max() <= 1 / 32 + 1e-6 and asymmetry.mean() < 1 / 3200
