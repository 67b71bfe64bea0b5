"""Change gate ms/frame at analysis widths 160, 320, 640, and replay frames/s of a 768x432 H.264 clip.

Prints figures; not a pass/fail test. Run: .venv/bin/python bench/bench_change.py
The gate is timed on one core (cv2.setNumThreads(1)); the replay uses the defaults and is timed
from the runner's start (after the novelty model is loaded) to its close.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import encode_video, textured_background, to_bgr, with_car  # noqa: E402

from framecull.config import ChangeConfig, Config, LightingConfig, Mask, RegionsConfig  # noqa: E402
from framecull.frame import Frame  # noqa: E402
from framecull.gates.change import ChangeGate  # noqa: E402
from framecull.replay import replay  # noqa: E402
from framecull.sources import open_source, with_recorded_source  # noqa: E402

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "videos" / "intel_car-detection.mp4"


def gate_ms_per_frame(width: int, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    scene = textured_background(height=432, width=768)
    images = [to_bgr(with_car(scene, x=40 + 12 * i, y=200) if i % 4 == 0 else scene, rng) for i in range(40)]
    frames = [Frame.from_bgr(i, i / 10, img, width) for i, img in enumerate(images)]
    regions = RegionsConfig(masks=[Mask(name="clock", polygon=[(0, 0), (0.3, 0), (0.3, 0.06), (0, 0.06)])])
    best = float("inf")
    for _ in range(repeats):
        gate = ChangeGate(ChangeConfig(), regions, LightingConfig())
        gate.judge(frames[0])
        start = time.perf_counter()
        for frame in frames[1:]:
            gate.judge(frame)
        best = min(best, (time.perf_counter() - start) / (len(frames) - 1))
    return best * 1000


def replay_fps(clip: Path) -> tuple[int, float]:
    config = with_recorded_source(Config(), str(clip))
    with tempfile.TemporaryDirectory() as out:
        runner = replay(config, open_source(config), Path(out) / "out")  # closed when it returns
        return runner.frames_in, runner.frames_in / (time.perf_counter() - runner.started)


def main() -> None:
    cv2.setNumThreads(1)
    print("change gate, one core (best of 5 runs, 39 frames each, 1 mask):")
    for width in (160, 320, 640):
        print(f"  width {width:4d}: {gate_ms_per_frame(width):.3f} ms/frame")
    cv2.setNumThreads(0)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(1)
        scene = textured_background(height=432, width=768)
        images = [to_bgr(with_car(scene, x=-100 + 8 * i, y=200) if 60 <= i < 160 else scene, rng) for i in range(300)]
        clip = encode_video(Path(tmp) / "clip.mp4", images, fps=10)
        print("replay of the default pipeline (decode + gates + store):")
        n, fps = replay_fps(clip)
        print(f"  generated 768x432 H.264, {n} frames: {fps:.0f} frames/s")
    if SHARED_CLIP.is_file():
        n, fps = replay_fps(SHARED_CLIP)
        print(f"  {SHARED_CLIP.name} (768x432 H.264), {n} frames: {fps:.0f} frames/s")
    else:
        print(f"  {SHARED_CLIP.name}: skipped, shared test data not found")


if __name__ == "__main__":
    main()
