"""The novelty gate, event pacing, heartbeat and budgets, through the real pipeline:
the shipped ONNX model in onnxruntime, FAISS and SQLite files in tmp_path."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framecull.config import Config
from framecull.frame import Frame
from framecull.runner import Collect, Runner
from framecull.sources.synthetic import parking_lot

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only

SCENE = parking_lot(seed=0)  # quiet 0-79, a car arrives 80-108 and parks in bay 3


def frames_from(indices, gains=None, fps=5.0, width=320):
    """Frames of the demo scene's renders, re-timed as one continuous stream."""
    out = []
    for n, i in enumerate(indices):
        image = SCENE.render(i)
        if gains is not None:
            image = np.clip(image * gains[n], 0, 255).astype(np.uint8)
        out.append(Frame.from_bgr(n, SCENE.start_time + n / fps, image, width))
    return out


def config(pacing: dict | None = None, **novelty) -> Config:
    return Config.model_validate({"camera": "test", "gates": {"novelty": novelty}, "pacing": pacing or {}})


def run(cfg: Config, frames, root: Path, store=True):
    decisions = Collect()
    with Runner(cfg, root, write=store, sinks=[decisions]) as runner:
        runner.run(frames)
    return decisions.decisions


def test_a_scene_state_seen_before_is_not_kept_again(tmp_path):
    empty, parked, empty_again = range(0, 20), range(110, 130), range(30, 50)
    decisions = run(config(), frames_from([*empty, *parked, *empty_again]), tmp_path)
    assert decisions[0].kept
    assert any(d.kept for d in decisions[20:40]), "the parked car was not kept"
    back = decisions[40]
    assert back.scores["change"]["changed"] > 0.005, "the change gate should see the car leave"
    assert not back.kept and back.stage == "novelty", back
    assert back.scores["novelty"]["nearest"] == 1  # the first empty frame kept
    assert not any(d.kept for d in decisions[40:])


def test_a_new_car_in_one_bay_is_kept_by_region_novelty(tmp_path):
    frames = frames_from([*range(0, 10), *range(110, 115)])
    with_region = run(config(region=True), frames, tmp_path / "a")
    car = with_region[10]
    assert car.scores["novelty"]["distance"] < 0.05, "the whole-frame vector barely moves"
    assert car.scores["novelty"]["region"] > 0.2 and car.kept
    without_region = run(config(region=False), frames_from([*range(0, 10), *range(110, 115)]), tmp_path / "b")
    assert not any(d.kept for d in without_region[10:]), "whole-frame distance alone should miss it"


def test_noise_in_a_single_cell_does_not_make_a_frame_novel(tmp_path):
    rng = np.random.default_rng(0)
    frames = frames_from(range(0, 20))
    for f in frames[1:]:  # a flickering patch filling one cell of the 16x12 grid (40x30 px at 640x360)
        patch = f.image[150:180, 240:280].astype(np.int16) + rng.normal(0, 80, (30, 40, 3)).astype(np.int16)
        f.image[150:180, 240:280] = np.clip(patch, 0, 255).astype(np.uint8)
    # The change gate blurs such a patch away; judge the frames with the novelty gate itself.
    with Runner(config(), tmp_path, write=False) as runner:
        novelty = runner.pipeline.gates[-1]
        assert novelty.judge(frames[0]).passed
        novelty.on_kept(frames[0], None)
        verdicts = [novelty.judge(f) for f in frames[1:]]
    assert not any(v.passed for v in verdicts), [v.scores for v in verdicts]
    # measured: the noisy cell moves by about 0.05 and its region score (3 cells) to about 0.016
    assert max(v.scores["region"] for v in verdicts) > 0.005, "the patch did not reach the embedding"


def test_a_passing_car_yields_a_few_frames_the_most_novel_of_each_second(tmp_path):
    decisions = run(config({"min_interval": 1.0}), frames_from(range(70, 115)), tmp_path)  # arrival 80-108
    kept = [d for d in decisions if d.kept]
    event = [d for d in kept if 80 <= d.index + 70 <= 110]
    assert 2 <= len(event) <= 7, [d.index + 70 for d in kept]
    paced = [d for d in decisions if d.stage == "pacing"]
    assert paced, "pacing dropped nothing"
    # Every frame pacing dropped lost to a kept frame of its window (less than 1 s away) that
    # was at least as novel.
    for d in paced:
        assert any(abs(d.timestamp - k.timestamp) < 1.0 and k.scores["novelty"]["score"] >= d.scores["novelty"]["score"]
                   for k in kept), d
    assert [d.index for d in decisions] == list(range(45)), "decisions out of input order"


def test_a_new_lighting_state_is_kept_once(tmp_path):
    gains = [1.0] * 20 + [0.7] * 20 + [1.0] * 20
    decisions = run(config(), frames_from(list(range(0, 20)) * 3, gains=gains), tmp_path)
    kept = [d.index for d in decisions if d.kept]
    assert kept == [0, 20], kept  # the darker state once; the bright state again is not new
    assert decisions[40].stage == "novelty"


def test_budget_caps_kept_frames_per_hour(tmp_path):
    cfg = config({"min_interval": 0})
    cfg.budget.max_per_hour = 3
    decisions = run(cfg, frames_from(range(75, 115)), tmp_path)
    assert sum(d.kept for d in decisions) == 3
    assert any(d.stage == "budget" for d in decisions)


def test_heartbeat_keeps_quiet_lighting_states(tmp_path):
    # Dusk: 30% darker over 4 minutes. With reference "previous" the change gate sees only the
    # tiny step between two frames and never passes; a heartbeat every 30 s asks the novelty gate.
    n = 240
    gains = list(np.linspace(1.0, 0.7, n))
    cfg = config()
    cfg.gates.change.reference = "previous"
    cfg.pacing.heartbeat = 30.0
    decisions = run(cfg, frames_from([i % 70 for i in range(n)], gains=gains, fps=1.0), tmp_path)
    attempts = [d for d in decisions[1:] if "novelty" in d.scores]
    assert 6 <= len(attempts) <= 9, "one attempt per heartbeat period"
    beats = [d for d in decisions if d.kept and d.stage == "heartbeat"]
    assert len(beats) >= 1 and all(d.scores["novelty"]["light"] > 0.2 for d in beats)
    cfg.pacing.heartbeat = 0
    quiet = run(cfg, frames_from([i % 70 for i in range(n)], gains=gains, fps=1.0), tmp_path / "off")
    assert sum(d.kept for d in quiet) == 1


def test_memory_outlives_the_files_the_puller_removed(tmp_path):
    run(config(), frames_from(range(0, 20)), tmp_path)
    for path in (tmp_path / "frames").rglob("*"):
        if path.is_file():
            path.unlink()
    decisions = run(config(), frames_from(range(20, 40)), tmp_path)
    assert not any(d.kept for d in decisions), "the empty lot was kept again after its files were pulled"


def squeezenet_config(testdata: Path, root: Path) -> Path:
    path = root / "squeeze.toml"
    model = testdata / "models" / "squeezenet1.1_fp16.onnx"
    path.write_text(f'''camera = "sq"
[gates.novelty]
model = "{model}"
output = "fire9/concat_1"
min_distance = 0.02
region = false
[gates.novelty.input]
width = 224
height = 224
dtype = "float16"
''')
    return path


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "framecull", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def clip(testdata):
    return testdata / "videos" / "intel_car-detection.mp4"


def test_replay_with_squeezenet_and_a_refused_model_swap(testdata, clip, tmp_path):
    out = tmp_path / "out"
    first = cli("replay", str(clip), "--out", str(out))
    assert first.returncode == 0, first.stderr
    # The same memory with another model: refused, naming the way out.
    swap = cli("replay", str(clip), "--config", str(squeezenet_config(testdata, tmp_path)), "--out", str(out),
               "--continue")
    assert swap.returncode == 78
    assert "framecull memory rebuild" in swap.stderr and "gates.novelty.model" in swap.stderr
    rebuilt = cli("memory", "rebuild", "--config", str(squeezenet_config(testdata, tmp_path)), "--root", str(out))
    assert rebuilt.returncode == 0, rebuilt.stderr
    images = len(list((out / "frames").rglob("*.jpg")))
    assert f"{images} frames for model" in rebuilt.stdout
    # A replay with SqueezeNet as the embedder works into a fresh root.
    log = tmp_path / "sq" / "decisions.jsonl"
    fresh = cli("replay", str(clip), "--config", str(squeezenet_config(testdata, tmp_path)), "--out",
                str(tmp_path / "sq"))
    assert fresh.returncode == 0, fresh.stderr
    decisions = [json.loads(line) for line in log.read_text().splitlines()]
    judged = [d for d in decisions if "novelty" in d["scores"]]
    assert judged and all(d["scores"]["novelty"]["region"] is None for d in judged)
    assert 3 <= sum(d["kept"] for d in decisions) < 60


def test_kill_9_during_replays_loses_no_kept_frame(tmp_path):
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "framecull", "replay", "synthetic:parking_lot", "--out", str(out),
                                 "--continue"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(1.5, 3.5)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        images = sorted((out / "frames").rglob("*.jpg"))
        for image in images:
            assert image.with_suffix(".json").exists(), f"{image.name} has no sidecar"
        assert not [p for p in (out / "frames").rglob("*") if p.is_file() and p.suffix not in (".jpg", ".json")]
        with sqlite3.connect(out / "memory.sqlite") as db:
            remembered = {row[0] for row in db.execute("SELECT file FROM kept")}
        on_disk = {str(p.relative_to(out)) for p in images}
        assert remembered <= on_disk, "memory points at an image that was never written"
        assert len(on_disk - remembered) <= 1, "more than the frame being committed is missing from memory"
    from framecull.gates.novelty import load_embedder, open_memory
    embedder = load_embedder(Config().gates.novelty)
    with open_memory(Config().gates.novelty, embedder, out) as memory:
        with sqlite3.connect(out / "memory.sqlite") as db:
            rows = db.execute("SELECT COUNT(*) FROM kept").fetchone()[0]
        assert len(memory) == rows > 0
