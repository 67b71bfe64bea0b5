"""Motion vectors: decode frames/s with and without vector export, the per-frame cost of the
motion-vector gate against the change gate, what vectors cost a picamera2 source (an H.264
encoder on the lores stream run only for them) against the change gate on the lores Y plane,
and replay frames/s with the motion-vector gate in front of the change gate, or not (the
replays store kept frames as JPEG, like the daemon).

Prints figures; not a pass/fail test. Run: .venv/bin/python bench/bench_motion.py
Decoding uses PyAV's default threading (thread_type AUTO), as the file source does.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import encode_video, textured_background, to_bgr  # noqa: E402

from framecull import motion_vectors  # noqa: E402
from framecull.config import Config  # noqa: E402
from framecull.frame import Frame, analysis_plane  # noqa: E402
from framecull.gates.change import ChangeGate  # noqa: E402
from framecull.gates.motion import MotionVectorGate  # noqa: E402
from framecull.runner import Collect, Runner  # noqa: E402
from framecull.sources import open_source, with_recorded_source  # noqa: E402
from framecull.sources.video import gray_plane  # noqa: E402

SHARED_CLIP = (Path(__file__).resolve().parents[2] / "shared" / "testdata" / "videos"
               / "intel_one-by-one-person-detection.mp4")
FRAMES = 300


def encode_clip(path: Path, width: int, height: int) -> Path:
    """300 frames at 10 fps: a textured patch crossing a noisy textured scene twice, still in between."""
    rng = np.random.default_rng(0)
    scene = textured_background(height=height, width=width)
    size = height // 5
    patch = cv2.normalize(cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 1.5),
                          None, 20, 235, cv2.NORM_MINMAX)

    def pictures():
        for i in range(FRAMES):
            picture = scene.copy()
            if i % 150 < 75:
                x = (i % 150) * (width - size) // 75
                picture[height // 2 - size // 2: height // 2 + size // 2, x: x + size] = patch
            yield to_bgr(picture, rng)

    return encode_video(path, pictures(), preset="veryfast", crf=23)


def decode_fps(path: Path, threads: str, export: bool, work) -> float:
    """Best of 3 runs: frames/s of decoding `path` and calling `work(frame)` on every frame."""
    best = 0.0
    for _ in range(3):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = threads
            if export:
                motion_vectors.request_export(stream)  # which sets slice threads
            start = time.perf_counter()
            n = 0
            for frame in container.decode(stream):
                work(frame)
                n += 1
            best = max(best, n / (time.perf_counter() - start))
    return best


def gate_costs(clip: Path) -> tuple[float, float]:
    """Microseconds per frame, one core, best of 3: vectors + motion-vector gate; gray plane + change gate."""
    config = Config()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        motion_vectors.request_export(stream)
        frames = list(container.decode(stream))
    mv_cost = change_cost = float("inf")
    for _ in range(3):
        mv_gate = MotionVectorGate(config.gates.motion_vectors, config.regions)
        change_gate = ChangeGate(config.gates.change, config.regions, config.lighting)
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            mv_gate.judge(Frame(i, i / 10, load_gray=lambda: None, load_image=lambda: None,
                                motion_vectors=motion_vectors.from_av_frame(frame)))
        mv_cost = min(mv_cost, (time.perf_counter() - start) / len(frames))
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            change_gate.judge(Frame(i, i / 10, analysis_plane(gray_plane(frame), config.source.analysis_width),
                                    load_image=lambda: None))
        change_cost = min(change_cost, (time.perf_counter() - start) / len(frames))
    return mv_cost * 1e6, change_cost * 1e6


def lores_costs(width: int = 320, height: int = 180, frames: int = 300) -> dict[str, float]:
    """Milliseconds of CPU per frame, one core, best of 3, for picamera2's lores stream (YUV420 at the
    analysis width): encoding it with libx264 (a Pi 5 has no hardware encoder; a Pi 4 encodes on
    the GPU), decoding it with vector export, vectors + motion-vector gate; against the change
    gate on its Y plane (which the source gets with no conversion)."""
    rng = np.random.default_rng(0)
    scene = textured_background(height=height, width=width)
    planes = [np.clip(scene + rng.normal(0, 2.5, scene.shape), 0, 255).astype(np.uint8) for _ in range(frames)]
    pictures = [av.VideoFrame.from_ndarray(y, format="gray").reformat(format="yuv420p") for y in planes]
    config = Config()
    best: dict[str, float] = {}
    for _ in range(3):
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = Fraction(1, 10)
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "bframes=0:keyint=50"}
        decoder = av.CodecContext.create("h264", "r")
        decoder.options = {"flags2": "+export_mvs", "flags": "+low_delay"}  # as sources.picamera2 does
        gate = MotionVectorGate(config.gates.motion_vectors, config.regions)
        spent = dict.fromkeys(("encode", "decode", "vectors + gate", "change gate"), 0.0)
        for i, (picture, plane) in enumerate(zip(pictures, planes)):
            picture.pts = i
            start = time.process_time()
            packets = encoder.encode(picture)
            spent["encode"] += time.process_time() - start
            for packet in packets:
                start = time.process_time()
                decoded = decoder.decode(packet)
                spent["decode"] += time.process_time() - start
                for frame in decoded:
                    start = time.process_time()
                    gate.judge(Frame(i, i / 10, plane, image=plane, motion_vectors=motion_vectors.from_av_frame(frame)))
                    spent["vectors + gate"] += time.process_time() - start
        change_gate = ChangeGate(config.gates.change, config.regions, config.lighting)
        start = time.process_time()
        for i, plane in enumerate(planes):
            change_gate.judge(Frame(i, i / 10, plane, image=plane))
        spent["change gate"] = time.process_time() - start
        for key, seconds in spent.items():
            best[key] = min(best.get(key, float("inf")), 1000 * seconds / frames)
    return best


def replay(clip: Path, config: Config, runs: int = 3) -> tuple[float, float, Counter, int]:
    """Best frames/s and CPU ms/frame (all threads) of `runs` through the daemon's Runner, decisions
    by stage and frames kept, for `config`. Timed from the first frame to the flush of the last:
    the runner (model load) and the source are built before, the memory is closed after."""
    best, best_cpu = 0.0, float("inf")
    config = with_recorded_source(config, str(clip))  # the file source reads vectors only if the gate is on
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            collect = Collect()
            with Runner(config, Path(out), sinks=[collect]) as runner, open_source(config) as source:
                start, start_cpu = time.perf_counter(), time.process_time()
                runner.run(source.frames())  # every frame: no fps throttle
                best = max(best, runner.frames_in / (time.perf_counter() - start))
                best_cpu = min(best_cpu, (time.process_time() - start_cpu) / runner.frames_in * 1000)
            decisions = collect.decisions
    return best, best_cpu, Counter(d.stage for d in decisions), sum(d.kept for d in decisions)


def variant(motion_vectors: bool, novelty: bool) -> Config:
    """The default config with the motion-vector and novelty gates on or off (the change gate is
    always there). Without novelty, event pacing is off too (min_interval 0): every frame the
    cheap gates pass is stored, so those rows show the cost of the cheap gates and of the writes."""
    return Config.model_validate({"gates": {"motion_vectors": {"enabled": motion_vectors},
                                            "novelty": {"enabled": novelty}},
                                  "pacing": {} if novelty else {"min_interval": 0}})


PIPELINES = (("change", variant(motion_vectors=False, novelty=False)),
             ("motion_vectors + change", variant(motion_vectors=True, novelty=False)),
             ("change + novelty", variant(motion_vectors=False, novelty=True)),
             ("motion_vectors + change + novelty (default)", Config()))


def print_replays(clip: Path) -> None:
    for label, config in PIPELINES:
        fps, cpu, stages, kept = replay(clip, config)
        print(f"  {label:44s} {fps:5.0f} frames/s, {cpu:5.2f} CPU ms/frame, kept {kept:4d}, ended at: {dict(stages)}")


def main() -> None:
    print(f"decode frames/s, best of 3 ({FRAMES} frames of H.264, libx264 veryfast crf 23, B-frames on;")
    print("  export_mvs needs slice threads, see motion_vectors.request_export):")
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in ((640, 480), (1280, 720)):
            clip = encode_clip(Path(tmp) / f"clip{width}.mp4", width, height)
            frame_threads = decode_fps(clip, "AUTO", False, lambda f: None)
            slice_threads = decode_fps(clip, "SLICE", False, lambda f: None)
            exported = decode_fps(clip, "SLICE", True, lambda f: None)
            vectors = decode_fps(clip, "SLICE", True, motion_vectors.from_av_frame)
            gray = decode_fps(clip, "AUTO", False, lambda f: analysis_plane(gray_plane(f), 320))
            print(f"  {width}x{height}: decode, frame threads {frame_threads:5.0f} | slice threads {slice_threads:5.0f} "
                  f"| + export_mvs {exported:5.0f} | + vectors read {vectors:5.0f} "
                  f"|| frame threads + gray plane at 320 {gray:5.0f}")
        cv2.setNumThreads(1)
        mv_cost, change_cost = gate_costs(Path(tmp) / "clip1280.mp4")
        lores = lores_costs()
        cv2.setNumThreads(0)
        print(f"per frame of the 1280x720 clip, one core: vectors + motion-vector gate {mv_cost:.0f} us | "
              f"gray plane + change gate (width 320) {change_cost:.0f} us")
        print("picamera2 lores stream 320x180, CPU ms per frame, one core: "
              + ", ".join(f"{key} {ms:.2f}" for key, ms in lores.items())
              + f" -> vectors cost {lores['encode'] + lores['decode'] + lores['vectors + gate']:.2f} ms "
                f"({lores['decode'] + lores['vectors + gate']:.2f} with a hardware encoder) "
                f"against {lores['change gate']:.2f} ms for the change gate they would spare")
        print("replay (best of 3) of the generated 1280x720 clip (still half the time), default config, all frames:")
        print_replays(Path(tmp) / "clip1280.mp4")

    if not SHARED_CLIP.is_file():
        print(f"replay: {SHARED_CLIP.name} skipped, shared test data not found at {SHARED_CLIP.parent}")
        return
    print(f"replay (best of 3) of {SHARED_CLIP.name} (768x432 H.264, B-frames), default config, all frames:")
    print_replays(SHARED_CLIP)


if __name__ == "__main__":
    main()
