"""`framecull demo` and the pipeline on the synthetic scene, checked against its ground truth."""

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

from framecull.cli import replay
from framecull.config import Config
from framecull.frame import Frame
from framecull.pipeline import build_pipeline
from framecull.sources.synthetic import SyntheticSource, parking_lot


def check_against_ground_truth(scene, kept: set[int]) -> None:
    for event in scene.events:
        assert kept & set(range(event.start, event.end + 1)), f"nothing kept of {event}"
    for first, last in scene.quiet:
        beyond_first = kept & set(range(first + 1, last + 1))
        assert len(beyond_first) <= 2, f"quiet stretch {first}-{last} kept {sorted(beyond_first)}"


def test_demo_command_keeps_every_event_and_writes_a_contact_sheet(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "framecull", "demo", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    scene = parking_lot()
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert [d["index"] for d in decisions] == list(range(scene.n_frames))
    kept = {d["index"] for d in decisions if d["kept"]}
    check_against_ground_truth(scene, kept)
    assert len(kept) < scene.n_frames // 10
    assert f"events in the scene: {len(scene.events)}, with at least one kept frame: {len(scene.events)}" in result.stdout
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.std() > 10
    assert str(out / "frames") in result.stdout


@pytest.mark.parametrize("variant", [
    {"seed": 1},
    {"seed": 2, "noise": 3.0, "jpeg_quality": 75},
    {"seed": 3, "drift": 0.12},
])
@pytest.mark.parametrize("novelty", [True, False], ids=["novelty", "change-only"])
def test_synthetic_scene_variants_against_ground_truth(tmp_path, variant, novelty):
    logging.disable(logging.WARNING)
    config = Config.model_validate({"gates": {"novelty": {"enabled": novelty}}})
    source = SyntheticSource(parking_lot(**variant), config.gates.change.width)
    decisions = replay(config, source, tmp_path).decisions
    check_against_ground_truth(source.scene, {d.index for d in decisions if d.kept})


def test_a_brightness_step_alone_keeps_at_most_one_frame(tmp_path):
    scene = parking_lot(light_step=False)
    gains = [1.0] * 30 + [1.3] * 60
    frames = [Frame.from_bgr(n, scene.timestamp(n), np.clip(scene.render(n % 60) * g, 0, 255).astype(np.uint8), 320)
              for n, g in enumerate(gains)]
    for novelty in (True, False):
        config = Config.model_validate({"gates": {"novelty": {"enabled": novelty}}})
        pipeline = build_pipeline(config, None, memory_root=tmp_path / str(novelty))
        kept = [d.index for d in pipeline.run(frames) if d.kept]
        pipeline.close()
        assert kept[0] == 0 and len(kept[1:]) <= 1, kept


def test_noise_and_jpeg_on_a_static_scene_keep_nothing_after_the_first_frame(tmp_path):
    scene = parking_lot(noise=3.0, jpeg_quality=75)
    frames = [Frame.from_bgr(n, scene.timestamp(n), scene.render(n), 320) for n in range(0, 75)]  # quiet
    pipeline = build_pipeline(Config(), None, memory_root=tmp_path)
    kept = [d.index for d in pipeline.run(frames) if d.kept]
    pipeline.close()
    assert kept == [0]
