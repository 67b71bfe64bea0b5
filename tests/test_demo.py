"""`framecull demo` and the pipeline on the synthetic scene, checked against its ground truth."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from framecull.config import Config
from framecull.frame import Frame
from framecull.runner import Collect, Runner
from framecull.sources.synthetic import SyntheticSource, parking_lot


def kept_indices(config: Config, frames, root, write: bool = False) -> list[int]:
    decisions = Collect()
    with Runner(config, root, write=write, sinks=[decisions]) as runner:
        runner.run(frames)
    return [d.index for d in decisions.decisions if d.kept]


def check_against_ground_truth(scene, kept: set[int]) -> None:
    for event in scene.events:
        assert kept & set(range(event.start, event.end + 1)), f"nothing kept of {event}"
    for first, last in scene.quiet:
        beyond_first = kept & set(range(first + 1, last + 1))
        assert len(beyond_first) <= 2, f"quiet stretch {first}-{last} kept {sorted(beyond_first)}"


def test_demo_command_keeps_every_event_and_writes_a_contact_sheet(tmp_path):
    result = subprocess.run([sys.executable, "-m", "framecull", "demo", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [out] = tmp_path.iterdir()  # a folder of its own for the run
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
    config = Config.model_validate({"gates": {"novelty": {"enabled": novelty}}})
    source = SyntheticSource(parking_lot(**variant), config.source.analysis_width)
    check_against_ground_truth(source.scene, set(kept_indices(config, source.frames(), tmp_path, write=True)))


def test_a_brightness_step_alone_keeps_at_most_one_frame(tmp_path):
    scene = parking_lot(light_step=False)
    gains = [1.0] * 30 + [1.3] * 60
    frames = [Frame.from_bgr(n, scene.timestamp(n), np.clip(scene.render(n % 60) * g, 0, 255).astype(np.uint8), 320)
              for n, g in enumerate(gains)]
    for novelty in (True, False):
        config = Config.model_validate({"gates": {"novelty": {"enabled": novelty}}})
        kept = kept_indices(config, frames, tmp_path / str(novelty))
        assert kept[0] == 0 and len(kept[1:]) <= 1, kept


def test_noise_and_jpeg_on_a_static_scene_keep_nothing_after_the_first_frame(tmp_path):
    scene = parking_lot(noise=3.0, jpeg_quality=75)
    frames = [Frame.from_bgr(n, scene.timestamp(n), scene.render(n), 320) for n in range(0, 75)]  # quiet
    assert kept_indices(Config(), frames, tmp_path) == [0]


def test_every_score_a_gate_writes_is_declared_by_that_gate(tmp_path):
    """Reports, preview and calibrate read score keys from the gates' declarations: they must hold."""
    from framecull.gates.change import ChangeGate
    from framecull.gates.motion import MotionVectorGate
    from framecull.gates.novelty import NoveltyGate
    from framecull.sources import iter_frames, open_source
    from scenes import encode_video

    declared = {g.name: g.score_keys for g in (MotionVectorGate, ChangeGate, NoveltyGate)}
    scene = parking_lot(seed=6)
    clip = encode_video(tmp_path / "lot.mp4", [scene.render(i) for i in range(70, 130)], fps=5)  # H.264: vectors
    config = Config.model_validate({"camera": "keys", "source": {"kind": "file", "uri": str(clip)},
                                    "gates": {"novelty": {"target_per_hour": 100}}})
    decisions = Collect()
    with Runner(config, tmp_path / "root", write=False, sinks=[decisions]) as runner:
        runner.run(iter_frames(open_source(config), 0))
    seen = {(gate, key) for d in decisions.decisions for gate, scores in d.scores.items() for key in scores}
    assert {gate for gate, _ in seen} == set(declared), "every gate judged some frame"
    undeclared = {(gate, key) for gate, key in seen if key not in declared[gate]}
    assert not undeclared
