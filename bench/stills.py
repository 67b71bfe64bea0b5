"""Curating collections of stills: framecull against the seed's pairwise method.

Builds a snapshot archive from the synthetic parking lot with exact ground truth: two cameras
(c21: PNG named c21_2021_03_27__10_36_36.png, 640x360; c22: JPEG named c22_20210327-103636.jpg,
640x360 on the first day and 960x540 on the second), one still every 3 minutes over 2 days. The
light follows the day: night under two floodlight pools, dawn, sun (slowly rising and falling),
clouds (the light drops by almost half for 30-90 min), dusk, and the floodlights switching on at
the start of the night. Cars arrive in free bays at random times, day or night, stay 20 min to
6 h and leave. A few files per camera are corrupt (truncated, empty, not an image).

Both methods see the same files. framecull: `framecull replay DIR --per-camera` with the default
config (replay_stills, the CLI's code). The seed's method, re-implemented from its description:
resize to 320 px wide, crop 5% borders, grey, blur 3, absdiff against every kept still of the
camera, threshold 45, dilate, contours of at least 0.5% of the frame; a still is a duplicate when
its contours cover under 2.5% against any kept still, else it is kept.

Measures, per camera and in total:
  kept          stills kept
  events        arrivals and departures whose scene was kept: some kept still shows the cars the
                event left in the lot, in any light (a car that leaves a lot whose picture was kept
                before needs nothing new); events whose scene lasted no readable still are left out
  light states  of sun, clouds, dusk, night, dawn: those with a kept still
  near-dup      kept pairs of one camera showing the same cars in the same light state with a light
                level within 5%: the same picture up to noise
  worst         the worst-represented still: the largest, over all readable stills, mean absolute
                difference of 160x120 grey thumbnails to the nearest kept still of its camera
                (grey levels; a neutral yardstick neither method uses)
The ground-truth oracle row is what a method told the true cars and light state of every still
would keep, deciding each still as it comes: a still whose cars or light state are new.
and then the time and peak memory (RSS) of `framecull replay DIR --per-camera` at 1k, 10k and 100k
small stills (320x180 JPEG, the same scene over more days), and of the seed's method.

Prints figures, not pass/fail. Run: .venv/bin/python bench/stills.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from framecull.config import Config
from framecull.replay import DECISIONS_FILE, replay_stills
from framecull.sources.synthetic import BAY_CENTRES, CAR_COLOURS, REST_Y, _background, draw_car

START = datetime(2021, 3, 27, tzinfo=timezone.utc).timestamp()
PERIOD = 180.0  # seconds between two stills of a camera
FREE_BAYS = [1, 2, 4, 5]  # bays 0, 3 and 6 hold cars parked all along (the synthetic background)
MIN_EVENT_GAP = 2 * PERIOD  # every state an event makes lasts at least one still
STATES = ["night", "dawn", "sun", "clouds", "dusk"]


# --- the scene --------------------------------------------------------------------------------

@dataclass
class Visit:
    bay: int
    colour: tuple
    arrive: float
    leave: float
    jitter: tuple


@dataclass
class Camera:
    name: str
    seed: int
    size: tuple[int, int]  # master render size; stills are resized from it
    sizes: list  # [(from time, (w, h))]: the size stills are written at
    suffix: str
    visits: list[Visit] = field(default_factory=list)
    events: list[float] = field(default_factory=list)  # arrival and departure times, sorted
    clouds: list[tuple[float, float]] = field(default_factory=list)
    corrupt: set = field(default_factory=set)  # still numbers written as broken files

    def file_name(self, t: float) -> str:
        when = datetime.fromtimestamp(t, timezone.utc)
        if self.suffix == ".png":
            return f"{self.name}_{when:%Y_%m_%d__%H_%M_%S}.png"
        return f"{self.name}_{when:%Y%m%d-%H%M%S}.jpg"

    def out_size(self, t: float) -> tuple[int, int]:
        size = self.sizes[0][1]
        for start, s in self.sizes:
            if t >= start:
                size = s
        return size


def plan(camera: Camera, days: float) -> None:
    """Visits, clouds and corrupt files of a camera over `days`, from its seed."""
    rng = np.random.default_rng(camera.seed)
    end = START + days * 86400
    taken: list[tuple[int, float, float]] = []
    t = START + rng.uniform(0, 3600)
    while t < end:
        leave = min(t + rng.uniform(20 * 60, 6 * 3600), end + 86400)
        free = [b for b in FREE_BAYS if not any(bay == b and a < leave and t < l for bay, a, l in taken)]
        clear = all(abs(t - e) >= MIN_EVENT_GAP and abs(leave - e) >= MIN_EVENT_GAP for e in camera.events)
        if free and clear:
            bay = int(rng.choice(free))
            colour = list(CAR_COLOURS.values())[rng.integers(len(CAR_COLOURS))]
            camera.visits.append(Visit(bay, colour, t, leave, tuple(rng.uniform(-3, 3, 3))))
            taken.append((bay, t, leave))
            camera.events += [t, leave] if leave < end else [t]
            camera.events.sort()
        t += rng.uniform(40 * 60, 5 * 3600)
    for day in range(math.ceil(days)):
        for _ in range(rng.integers(1, 3)):
            start = START + day * 86400 + rng.uniform(8, 15.5) * 3600
            camera.clouds.append((start, start + rng.uniform(30, 90) * 60))
    n = int(days * 86400 / PERIOD)
    camera.corrupt = set(int(i) for i in rng.choice(n, size=max(1, n // 250), replace=False))


def smooth(u: float) -> float:
    u = min(1.0, max(0.0, u))
    return u * u * (3 - 2 * u)


def light(camera: Camera, t: float) -> tuple[str, float, tuple, bool]:
    """(state, gain, BGR tint, floodlights on) at time t."""
    h = (t - START) % 86400 / 3600
    if h < 5.5 or h >= 19.0:
        return "night", 0.18, (0.75, 0.9, 1.1), True
    if h < 7.0:
        return "dawn", 0.18 + 0.82 * smooth((h - 5.5) / 1.5), (1.05, 0.97, 0.9), h < 6.0
    if h < 17.5:
        gain = 0.85 + 0.15 * math.sin(math.pi * (h - 7.0) / 10.5)
        if any(a <= t < b for a, b in camera.clouds):
            return "clouds", 0.55 * gain, (1.08, 1.0, 0.95), False
        return "sun", gain, (1.0, 1.0, 1.0), False
    return "dusk", 1.0 - 0.82 * smooth((h - 17.5) / 1.5), (0.85, 0.93, 1.12), False


def cars_at(camera: Camera, t: float) -> tuple:
    return tuple(sorted((v.bay, v.colour) for v in camera.visits if v.arrive <= t < v.leave))


class Renderer:
    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        w, h = camera.size
        self.scale = np.array([w / 640, h / 360])
        self.background = _background(np.random.default_rng(camera.seed), w, h, parked=[
            (BAY_CENTRES[b], REST_Y, -math.pi / 2, colour)
            for b, colour in zip((0, 3, 6), list(CAR_COLOURS.values())[2:5])])
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        pools = sum(np.exp(-(((xs - cx * w) ** 2 + (ys - cy * h) ** 2) / (2 * (0.2 * w) ** 2)))
                    for cx, cy in ((0.3, 0.55), (0.75, 0.45)))
        self.flood = np.minimum(1.0, 0.18 + 0.9 * pools)[..., None].astype(np.float32)

    def render(self, t: float, rng: np.random.Generator) -> np.ndarray:
        img = self.background.copy()
        for v in self.camera.visits:
            if v.arrive <= t < v.leave:
                x, y, a = v.jitter
                draw_car(img, BAY_CENTRES[v.bay] + x, REST_Y + y, -math.pi / 2 + 0.01 * a, v.colour, self.scale)
        state, gain, tint, flood = light(self.camera, t)
        lit = img.astype(np.float32) * np.float32(gain) * np.array(tint, np.float32)
        if flood:
            lit = np.maximum(lit, img.astype(np.float32) * self.flood * np.array((0.6, 0.85, 1.1), np.float32))
        size = self.camera.out_size(t)
        if size != self.camera.size:
            lit = cv2.resize(lit, size, interpolation=cv2.INTER_AREA)
        sigma = 5.0 if state == "night" else 2.0
        lit += rng.normal(0, sigma, lit.shape[:2]).astype(np.float32)[..., None]
        return np.clip(lit + 0.5, 0, 255).astype(np.uint8)


def cameras(days: float, small: bool) -> list[Camera]:
    half = START + days * 86400 / 2
    if small:
        cams = [Camera("c21", 21, (320, 180), [(0, (320, 180))], ".jpg"),
                Camera("c22", 22, (320, 180), [(0, (320, 180))], ".jpg")]
    else:
        cams = [Camera("c21", 21, (640, 360), [(0, (640, 360))], ".png"),
                Camera("c22", 22, (960, 540), [(0, (640, 360)), (half, (960, 540))], ".jpg")]
    for cam in cams:
        plan(cam, days)
    return cams


def write_archive(folder: Path, cams: list[Camera], days: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = int(days * 86400 / PERIOD)
    for cam in cams:
        renderer, rng = Renderer(cam), np.random.default_rng(cam.seed + 1000)
        for i in range(n):
            t = START + i * PERIOD + (cam.seed % 7)  # the cameras are not in step
            path = folder / cam.file_name(t)
            if i in cam.corrupt:
                kind = i % 3
                good = cv2.imencode(cam.suffix, renderer.render(t, rng))[1].tobytes()
                path.write_bytes(good[: len(good) // 2] if kind == 0 else b"" if kind == 1 else b"not an image\n")
                continue
            image = renderer.render(t, rng)
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if cam.suffix == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
            cv2.imwrite(str(path), image, params)


# --- the measures -----------------------------------------------------------------------------

def thumbnail(image: np.ndarray) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 120), interpolation=cv2.INTER_AREA)


@dataclass
class Still:
    file: str
    time: float
    thumb: np.ndarray
    seed_plane: np.ndarray


def read_stills(folder: Path, cam: Camera, days: float) -> list[Still]:
    stills = []
    for i in range(int(days * 86400 / PERIOD)):
        t = START + i * PERIOD + (cam.seed % 7)
        image = cv2.imread(str(folder / cam.file_name(t)), cv2.IMREAD_COLOR) if i not in cam.corrupt else None
        if image is not None:
            stills.append(Still(cam.file_name(t), t, thumbnail(image), seed_plane(image)))
    return stills


def seed_plane(image: np.ndarray) -> np.ndarray:
    """The seed's picture: 320 px wide, 5% borders cropped, grey, blur 3."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (320, round(h * 320 / w)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    dy, dx = round(0.05 * sh), round(0.05 * sw)
    grey = cv2.cvtColor(small[dy:sh - dy, dx:sw - dx], cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(grey, (3, 3), 0)


_DILATE = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


def seed_differs(a: np.ndarray, b: np.ndarray) -> bool:
    changed = cv2.dilate((cv2.absdiff(a, b) > 45).astype(np.uint8), _DILATE, iterations=2)
    contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    area = a.shape[0] * a.shape[1]
    covered = sum(c for c in (cv2.contourArea(c) for c in contours) if c >= 0.005 * area)
    return covered >= 0.025 * area


def seed_method(planes) -> list[int]:
    """Indices kept by the seed's pairwise method: a still is kept when it differs from every kept
    still (the most recent kept are compared first; the first duplicate found ends the search)."""
    kept: list[np.ndarray] = []
    chosen = []
    for i, plane in enumerate(planes):
        if all(seed_differs(plane, k) for k in reversed(kept)):
            kept.append(plane)
            chosen.append(i)
    return chosen


def oracle_kept(cam: Camera, stills: list[Still]) -> list[int]:
    """Indices an online method that knew the truth would keep: a still whose cars or whose light
    state no earlier still showed. The fewest stills any method covering every event and light
    state can keep when it decides each still as it comes (a method that could wait to the end
    of a light state, to see whether a new scene will show it anyway, keeps fewer)."""
    scenes, states, chosen = set(), set(), []
    for i, still in enumerate(stills):
        scene, state = cars_at(cam, still.time), light(cam, still.time)[0]
        if scene not in scenes or state not in states:
            chosen.append(i)
        scenes.add(scene)
        states.add(state)
    return chosen


def score(cam: Camera, stills: list[Still], kept: list[int]) -> dict:
    times = np.array([s.time for s in stills])
    kept_times = times[kept]
    kept_scenes = {cars_at(cam, t) for t in kept_times}
    covered = observable = 0
    for k, e in enumerate(cam.events):
        nxt = cam.events[k + 1] if k + 1 < len(cam.events) else math.inf
        if ((times >= e) & (times < nxt)).any():
            observable += 1
            covered += cars_at(cam, e) in kept_scenes
    states = {light(cam, t)[0] for t in kept_times}
    seen = {light(cam, s.time)[0] for s in stills}
    keys = [(cars_at(cam, t), *light(cam, t)[:2]) for t in kept_times]
    near = sum(1 for a in range(len(keys)) for b in range(a + 1, len(keys))
               if keys[a][0] == keys[b][0] and keys[a][1] == keys[b][1]
               and max(keys[a][2], keys[b][2]) / min(keys[a][2], keys[b][2]) < 1.05)
    thumbs = np.stack([s.thumb for s in stills]).astype(np.int16)
    nearest = np.full(len(stills), np.inf)
    for k in kept:
        nearest = np.minimum(nearest, np.abs(thumbs - thumbs[k]).mean(axis=(1, 2)))
    worst = int(np.argmax(nearest))
    return {"kept": len(kept), "events": covered, "observable": observable, "states": len(states & seen),
            "seen_states": len(seen), "near": near, "worst": float(nearest[worst]),
            "worst_file": stills[worst].file}


def framecull_kept(out: Path, stills: list[Still]) -> list[int]:
    position = {s.file: i for i, s in enumerate(stills)}
    kept = []
    with open(out / DECISIONS_FILE) as lines:
        for line in lines:
            d = json.loads(line)
            if d["kept"]:
                kept.append(position[Path(d["file"]).name])
    return sorted(kept)


def quality(days: float) -> None:
    cams = cameras(days, small=False)
    with tempfile.TemporaryDirectory(prefix="fc-stills-") as tmp:
        folder, out = Path(tmp) / "archive", Path(tmp) / "out"
        started = time.perf_counter()
        write_archive(folder, cams, days)
        print(f"archive: {len(os.listdir(folder))} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        started = time.perf_counter()
        replay_stills(Config(), folder, out, per_camera=True)
        fc_seconds = time.perf_counter() - started
        rows = []
        seed_seconds = 0.0
        for cam in cams:
            stills = read_stills(folder, cam, days)
            fc = score(cam, stills, framecull_kept(out / cam.name, stills))
            started = time.perf_counter()
            seed = score(cam, stills, seed_method(s.seed_plane for s in stills))
            seed_seconds += time.perf_counter() - started
            rows += [(cam.name, "framecull", fc), (cam.name, "seed pairwise", seed),
                     (cam.name, "ground-truth oracle", score(cam, stills, oracle_kept(cam, stills)))]
    print(f"### {days:g} days, 2 cameras, one still every {PERIOD / 60:g} min "
          f"(framecull {fc_seconds:.0f} s, seed {seed_seconds:.0f} s)\n")
    print("| camera | method | stills kept | events covered | light states covered | near-duplicate kept pairs "
          "| worst-represented still (grey levels) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for cam, method, r in rows:
        print(f"| {cam} | {method} | {r['kept']} | {r['events']}/{r['observable']} | {r['states']}/{r['seen_states']} "
              f"| {r['near']} | {r['worst']:.1f} ({r['worst_file']}) |")
    for method in ("framecull", "seed pairwise", "ground-truth oracle"):
        rs = [r for _, m, r in rows if m == method]
        print(f"| all | {method} | {sum(r['kept'] for r in rs)} | {sum(r['events'] for r in rs)}/"
              f"{sum(r['observable'] for r in rs)} | {sum(r['states'] for r in rs)}/{sum(r['seen_states'] for r in rs)} "
              f"| {sum(r['near'] for r in rs)} | {max(r['worst'] for r in rs):.1f} |")


# --- scale ------------------------------------------------------------------------------------

# Starts the command from a small fresh interpreter and prints its peak RSS last: a child forked
# straight from this (large) process would count this process's pages as its own.
LAUNCHER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[1:]); _, status, usage = "
            "os.wait4(child.pid, 0); print('peak-rss-kb', usage.ru_maxrss, flush=True); "
            "sys.exit(os.waitstatus_to_exitcode(status))")


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a command."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{command} failed with {done.returncode}")
    *lines, last = done.stdout.splitlines()
    return seconds, int(last.split()[1]) / 1024, "\n".join(lines)


SEED_SCRIPT = """
import sys, time, cv2
from pathlib import Path
sys.path.insert(0, {bench!r})
from stills import seed_method, seed_plane
from framecull.stills import Naming, by_camera, scan
kept = 0
for camera, stills in by_camera(scan(Path({folder!r}), Naming())).items():
    images = (cv2.imread(str(Path({folder!r}) / s.name), cv2.IMREAD_COLOR) for s in stills)
    kept += len(seed_method(seed_plane(i) for i in images if i is not None))
print(kept)
"""


def scale(sizes: list[int], seed_limit: int) -> None:
    print("\n| stills | framecull: time | stills/s | peak RSS | kept | seed pairwise: time | stills/s | kept |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        days = n / 2 * PERIOD / 86400
        with tempfile.TemporaryDirectory(prefix="fc-stills-scale-") as tmp:
            folder, out = Path(tmp) / "archive", Path(tmp) / "out"
            started = time.perf_counter()
            write_archive(folder, cameras(days, small=True), days)
            print(f"{n} stills written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            seconds, rss, stdout = timed([sys.executable, "-m", "framecull", "replay", str(folder), "--per-camera",
                                          "--out", str(out)])
            kept = sum(int(line.split(":")[1]) for line in stdout.splitlines() if line.strip().startswith("kept:"))
            seed = "not run (quadratic)"
            if n <= seed_limit:
                script = SEED_SCRIPT.format(bench=str(Path(__file__).parent), folder=str(folder))
                s_seconds, _, s_out = timed([sys.executable, "-c", script])
                seed = f"{s_seconds:.0f} s | {n / s_seconds:.0f} | {s_out.strip()}"
            else:
                seed += " | | "
            print(f"| {n} | {seconds:.0f} s | {n / seconds:.0f} | {rss:.0f} MB | {kept} | {seed} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=2.0, help="days of the quality archive (default 2; 0: timing only)")
    parser.add_argument("--sizes", default="1000,10000,100000", help="stills for the timing (default 1k,10k,100k)")
    parser.add_argument("--seed-limit", type=int, default=100_000, help="largest archive the seed's method is timed on")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.days > 0:
        quality(args.days)
    if args.sizes:
        scale([int(s) for s in args.sizes.split(",")], args.seed_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
