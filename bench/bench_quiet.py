"""Does the motion-vector gate pay for itself on a camera's noisy H.264?

Builds camera-like streams itself: 1280x720, 10 fps, libx264 veryfast with no B-frames, a key
frame every 2 s and a camera's bitrate cap (2 Mbit/s), three minutes of a still room with fresh
sensor noise on every frame (sigma 2.5: day; 6: night), and three events: a person walking
through, a small object (0.6% of the frame) crossing, and a car creeping in at 0.4 px a frame. Then
replays each stream through the runner `framecull replay` uses (the default config, with the
motion-vector gate on and off) and prints one Markdown row per stream and config:

  MV decides   share of the quiet frames (outside the events, key frames included) the MV gate drops
  embedded     share of all frames that reached the novelty gate (were embedded)
  replay time  CPU time of the replay's runner (the one `framecull replay` uses) against decoding the
               stream alone (PyAV), same run, one core; CPU time, not wall time, so that other work
               on the machine does not blur the ratio: the best replay over the best decoding, and
               the range of each round's replay over that round's decoding (how noisy the machine was)
  vectors      decoding with the vectors exported and read (framecull.motion_vectors), nothing else:
               what any use of the vectors costs before the gate's own work
  events kept  events with at least one kept frame while they happen (person, small object, creep)

Runs on one core (sched_setaffinity), as a Pi-class device would spare. Prints figures; not a
pass/fail test. Run: .venv/bin/python bench/bench_quiet.py  (about 4 minutes)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from framecull.config import Config
from framecull.motion_vectors import from_av_frame, request_export
from framecull.pipeline import Decision
from framecull.runner import Collect, Runner
from framecull.sources import iter_frames, open_source, with_recorded_source

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import paste, textured_thing  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 10
FRAMES = 1800  # three minutes
GOP = 2 * FPS
BITRATE = 2000  # kbit/s: a 720p IP camera's cap
EVENTS = {  # name -> (first frame, last frame)
    "person": (300, 339),
    "small object": (800, 829),  # 0.6% of the frame: smaller ones are below the change gate's min_changed
    "creep": (1200, 1499),
}
ROUNDS = 5  # of every timing; the best of each counts
QUIET_MARGIN = 10  # frames after an event that count neither as event nor as quiet (the gate's hold)


def room(seed: int = 0) -> np.ndarray:
    """A still room, float32 gray: a shaded wall, a textured floor, furniture with straight edges."""
    rng = np.random.default_rng(seed)
    h, w = HEIGHT, WIDTH
    scene = np.full((h, w), 150, np.float32) + np.linspace(-20, 20, w, dtype=np.float32)[None, :]
    floor = int(h * 0.62)
    scene[floor:] = 95 + cv2.resize(rng.normal(0, 12, (24, 40)).astype(np.float32), (w, h - floor),
                                    interpolation=cv2.INTER_CUBIC)
    scene[floor:] += cv2.GaussianBlur(rng.normal(0, 10, (h - floor, w)).astype(np.float32), (0, 0), 1.5)
    cv2.rectangle(scene, (int(w * .08), int(h * .2)), (int(w * .3), int(h * .55)), 60, -1)  # a cabinet
    picture = np.s_[int(h * .15):int(h * .4), int(w * .55):int(w * .75)]
    scene[picture] = 200 + cv2.GaussianBlur(rng.normal(0, 25, scene[picture].shape).astype(np.float32), (0, 0), 2)
    cv2.rectangle(scene, (int(w * .4), int(h * .5)), (int(w * .5), int(h * .7)), 120, -1)  # a chair
    return scene


def pictures(sigma: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    scene = room()
    person = textured_thing(HEIGHT // 2, HEIGHT // 6, 55, 3)
    person[: HEIGHT // 12] = 170  # a head
    side = round((WIDTH * HEIGHT * 0.006) ** 0.5)  # 0.6% of the frame
    small = textured_thing(side, side, 35, 4)
    box = textured_thing(HEIGHT // 5, HEIGHT // 3, 215, 5)  # a light car (240 x 144 px), dark stripes
    box[::6] = 40
    noise = [rng.normal(0, sigma, (HEIGHT, WIDTH)).astype(np.float32) for _ in range(16)]
    for i in range(FRAMES):
        picture = scene.copy()
        a, b = EVENTS["person"]
        if a <= i <= b:
            paste(picture, person, -person.shape[1] + (i - a) * (WIDTH + person.shape[1]) / (b - a), HEIGHT // 3)
        a, b = EVENTS["small object"]
        if a <= i <= b:
            paste(picture, small, WIDTH * 0.15 + (i - a) * 8.0, int(HEIGHT * 0.8))
        a, b = EVENTS["creep"]
        if i >= a:  # creeps in from the right edge and stays
            paste(picture, box, WIDTH - 0.4 * (min(i, b) - a), int(HEIGHT * 0.75))
        # Fresh noise every frame: a pool of fields, rolled by a random offset.
        field = np.roll(noise[rng.integers(len(noise))], tuple(rng.integers(0, 64, 2)), axis=(0, 1))
        yield np.clip(picture + field, 0, 255).astype(np.uint8)


def encode(path: Path, sigma: float) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "x264-params": f"bframes=0:keyint={GOP}:min-keyint={GOP}"
                          f":scenecut=0:vbv-maxrate={BITRATE}:vbv-bufsize={BITRATE}"}
        for gray in pictures(sigma):
            frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_seconds(path: Path) -> float:
    """CPU seconds of decoding alone, as the file source decodes (PyAV, default threading): the floor."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = time.process_time()
        for _ in container.decode(stream):
            pass
        return time.process_time() - start


def vectors_seconds(path: Path) -> float:
    """CPU seconds of decoding with the vectors exported and read for every frame, nothing else."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        request_export(stream)
        start = time.process_time()
        for frame in container.decode(stream):
            from_av_frame(frame)
        return time.process_time() - start


def replay_run(path: Path, motion_vectors: bool) -> tuple[float, list[Decision]]:
    """CPU seconds of `framecull replay`'s runner over the stream (decode, gates, stores; the model
    and memory are loaded before the clock starts), and its decisions."""
    config = with_recorded_source(
        Config.model_validate({"gates": {"motion_vectors": {"enabled": motion_vectors}}}), str(path))
    collect = Collect()
    with tempfile.TemporaryDirectory() as out:
        with Runner(config, Path(out), sinks=[collect]) as runner, open_source(config) as source:
            start = time.process_time()
            runner.run(iter_frames(source, config.source.fps))
            seconds = time.process_time() - start
    return seconds, collect.decisions


def quiet_frames() -> list[int]:
    busy = set()
    for a, b in EVENTS.values():
        busy.update(range(a, b + QUIET_MARGIN + 1))
    return [i for i in range(FRAMES) if i not in busy]


def kept_events(decisions: list[Decision]) -> list[str]:
    kept = {d.index for d in decisions if d.kept}
    return [name for name, (a, b) in EVENTS.items() if kept & set(range(a, b + FPS + 1))]


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    cv2.setNumThreads(1)
    quiet = quiet_frames()
    print(f"{WIDTH}x{HEIGHT}, {FPS} fps, {FRAMES} frames, x264 veryfast, no B-frames, key frame every {GOP} frames, "
          f"{BITRATE} kbit/s cap; one core; CPU time, best of {ROUNDS} rounds of every measure\n")
    print("| noise sigma | MV gate | MV decides (quiet frames) | embedded | replay time | vectors | events kept |")
    print("|---:|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in (2.5, 6.0):
            clip = encode(Path(tmp) / f"room-{sigma}.mp4", sigma)
            # Rounds of every measure in turn, the best of each: other work on the machine then
            # slows the floor and the replays alike instead of whichever ran at the wrong moment.
            floor = vectors = float("inf")
            replays: dict[bool, tuple[float, list[Decision]]] = {}
            ratios: dict[bool, list[float]] = {True: [], False: []}  # each round's replay over its decoding
            for _ in range(ROUNDS):
                decoding = decode_seconds(clip)
                floor = min(floor, decoding)
                vectors = min(vectors, vectors_seconds(clip))
                for enabled in (True, False):
                    run = replay_run(clip, enabled)
                    ratios[enabled].append(run[0] / decoding)
                    if enabled not in replays or run[0] < replays[enabled][0]:
                        replays[enabled] = run
            for enabled in (True, False):
                seconds, decisions = replays[enabled]
                by_index = {d.index: d for d in decisions}
                decided = sum(by_index[i].stage == "motion_vectors" for i in quiet) / len(quiet)
                embedded = sum("novelty" in d.scores for d in decisions) / len(decisions)
                events = kept_events(decisions)
                print(f"| {sigma:g} | {'on' if enabled else 'off'} | {f'{decided:.1%}' if enabled else ''} | "
                      f"{embedded:.1%} | {seconds / floor:.2f}x (rounds {min(ratios[enabled]):.2f}-{max(ratios[enabled]):.2f}; "
                      f"{1000 * floor / FRAMES:.1f} ms/frame decode) | "
                      f"{f'{vectors / floor:.2f}x' if enabled else ''} | "
                      f"{len(events)}/{len(EVENTS)} ({', '.join(events)}) |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
