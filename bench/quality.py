"""Curation quality with the default config: are the events kept, are the quiet stretches left alone?

Replays labelled footage through `framecull.replay.replay`, the runner `framecull replay` uses
(default config, a fresh output folder and memory per clip), and prints one Markdown row per clip:

  frames        frames judged
  kept          frames kept
  event recall  share of the labelled events with at least one kept frame (target 1.0)
  quiet keeps   kept frames inside quiet stretches beyond the first frame of each stretch, in total
                and the most in one stretch (target on the synthetic scenes: <= 1 per stretch)
  kept/min      kept frames per minute of footage (what the busy negative control is judged by)
  ms/frame      replay wall time per frame (from the runner's start, after the model is loaded, to
                its close): decode, gates, store writes

Footage: (a) synthetic parking lots with exact ground truth from the generator (Scene.events,
Scene.quiet), including sensor noise + JPEG, lighting drift + a light step, camera jitter of
1-2 px applied here, and a scene state that returns (a car arrives, stays, leaves: the lot is
empty again); (b) the real clips in ../shared/testdata/videos with the event intervals labelled
by eye in bench/labels/<clip>.json (skipped when the clips are absent). For the real clips the
quiet stretches are the frames outside every labelled event, less MARGIN frames at each side.

Prints figures; not a pass/fail test. Run: .venv/bin/python bench/quality.py
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from framecull.config import Config
from framecull.frame import Frame
from framecull.replay import DECISIONS_FILE, replay
from framecull.report import load_decisions
from framecull.sources import open_source, with_recorded_source
from framecull.sources.synthetic import Scene, SyntheticSource, parking_lot

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "videos"
LABELS = Path(__file__).resolve().parent / "labels"
MARGIN = 5  # frames either side of a labelled event that count neither as event nor as quiet


class JitteredSource(SyntheticSource):
    """A synthetic scene seen by a shaking camera: every frame is moved by a random translation of
    `low`..`high` pixels in a random direction (the edge reflected), before it becomes a Frame."""

    def __init__(self, scene: Scene, width: int, low: float = 1.0, high: float = 2.0, seed: int = 0) -> None:
        super().__init__(scene, width)
        self.low, self.high, self.seed = low, high, seed

    def frames(self) -> Iterator[Frame]:
        rng = np.random.default_rng(self.seed)
        size = (self.scene.width, self.scene.height)
        for i in range(self.scene.n_frames):
            angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(self.low, self.high)
            shift = np.float32([[1, 0, radius * math.cos(angle)], [0, 1, radius * math.sin(angle)]])
            image = cv2.warpAffine(self.scene.render(i), shift, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
            yield Frame.from_bgr(i, self.scene.timestamp(i), image, self.width)


def returning_lot(seed: int = 4) -> Scene:
    """State A (the empty lot), an event (a car arrives, stays, leaves), state A again: the default
    lot with only its first car, and no light step."""
    full = parking_lot(seed, light_step=False)
    car1 = full.actors[0]
    events = [e for e in full.events if e.kind in ("car_arrives", "car_leaves")]
    events = [events[0], events[-1]]  # car 1 in, car 1 out (car 2 and the walker are not drawn)
    return Scene("returning_lot", full.background, full.fps, full.n_frames, [car1], full.gains, events,
                 full.noise, full.jpeg_quality, full.seed)


def synthetic_clips(width: int):
    """(name, source, events as (start, end), quiet stretches as (first, last))."""
    variants = [
        ("synthetic: default lot", SyntheticSource(parking_lot(), width)),
        ("synthetic: noise 4 + JPEG q70", SyntheticSource(parking_lot(2, noise=4.0, jpeg_quality=70), width)),
        ("synthetic: drift 15% + step x0.6", SyntheticSource(parking_lot(3, drift=0.15, step_gain=0.6), width)),
        ("synthetic: jitter 1-2 px", JitteredSource(parking_lot(1), width)),
        ("synthetic: jitter + noise + JPEG", JitteredSource(parking_lot(5, noise=3.0, jpeg_quality=75), width, seed=5)),
        ("synthetic: lot empty again", SyntheticSource(returning_lot(), width)),
    ]
    for name, source in variants:
        scene = source.scene
        yield name, source, [(e.start, e.end) for e in scene.events], list(scene.quiet), False


def quiet_from_labels(events: list[tuple[int, int]], n_frames: int, margin: int) -> list[tuple[int, int]]:
    """The stretches outside every labelled event (events may overlap), `margin` frames away from them."""
    busy = np.zeros(n_frames, bool)
    for start, end in events:
        busy[max(0, start - margin):min(n_frames, end + margin + 1)] = True
    quiet, first = [], None
    for i, b in enumerate(list(busy) + [True]):
        if not b and first is None:
            first = i
        elif b and first is not None:
            quiet.append((first, i - 1))
            first = None
    return quiet


def real_clips(config: Config):
    if not VIDEOS.is_dir():
        print(f"real clips skipped: {VIDEOS} not found (the shared test data is absent in a fresh clone)")
        return
    for label_file in sorted(LABELS.glob("*.json")):
        label = json.loads(label_file.read_text())
        clip = VIDEOS / label["clip"]
        if not clip.exists():
            print(f"{label['clip']} skipped: not found in {VIDEOS}")
            continue
        source = open_source(with_recorded_source(config, str(clip)))
        events = [(e["start"], e["end"]) for e in label["events"]]
        yield label["clip"], source, events, None, bool(label.get("busy"))


def measure(config: Config, name: str, source, events, quiet, busy: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        runner = replay(config, source, out)  # closed when it returns
        seconds = time.perf_counter() - runner.started
        decisions = load_decisions(out / DECISIONS_FILE)  # one per frame, in input order
    kept = sorted(d["index"] for d in decisions if d["kept"])
    n = max(d["index"] for d in decisions) + 1
    if quiet is None:
        quiet = quiet_from_labels(events, n, MARGIN)
    per_stretch = [sum(first < k <= last for k in kept) for first, last in quiet]
    notes = [f"quiet keep at frame {k} (stretch {first}-{last})"
             for first, last in quiet for k in kept if first < k <= last]
    for s, e in events:
        if not busy and not any(s <= k <= e for k in kept):
            after = next((k for k in kept if k > e), None)
            notes.append(f"event {s}-{e} missed; next keep: " + (f"frame {after}" if after is not None else "none"))
    span = decisions[-1]["timestamp"] - decisions[0]["timestamp"]
    minutes = (span * len(decisions) / max(1, len(decisions) - 1)) / 60  # one frame interval per frame
    return {
        "clip": name, "frames": len(decisions), "kept": len(kept), "busy": busy,
        "recall": sum(any(s <= k <= e for k in kept) for s, e in events) / len(events) if events else None,
        "events": len(events), "quiet": sum(per_stretch), "stretches": len(quiet),
        "worst": max(per_stretch, default=0), "per_min": len(kept) / minutes if minutes > 0 else 0.0,
        "ms": 1000 * seconds / len(decisions),
        "synthetic": name.startswith("synthetic"), "notes": notes,
    }


def table(rows: list[dict]) -> str:
    lines = ["| clip | frames | kept | event recall | quiet keeps (most in one stretch) | kept/min | ms/frame |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        recall = "n/a (always busy)" if r["busy"] else f"{r['recall']:.2f} ({round(r['recall'] * r['events'])}/{r['events']})"
        quiet = "n/a" if r["busy"] else f"{r['quiet']} in {r['stretches']} stretches ({r['worst']})"
        lines.append(f"| {r['clip']} | {r['frames']} | {r['kept']} | {recall} | {quiet} | {r['per_min']:.1f} "
                     f"| {r['ms']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    config = Config()
    started = time.perf_counter()
    clips = list(synthetic_clips(config.source.analysis_width)) + list(real_clips(config))
    rows = []
    for name, source, events, quiet, busy in clips:
        rows.append(measure(config, name, source, events, quiet, busy))
        print(f"  {name}: done", file=sys.stderr)
    print(table(rows))
    print()
    for r in rows:
        if r["notes"]:
            print(f"- {r['clip']}: " + "; ".join(r["notes"]))
    missed = [r["clip"] for r in rows if not r["busy"] and r["recall"] < 1.0]
    noisy = [r["clip"] for r in rows if r["synthetic"] and r["worst"] > 1]
    print(f"\ntargets: event recall 1.0 on every clip: {'met' if not missed else 'MISSED on ' + ', '.join(missed)}; "
          f"quiet keeps <= 1 per stretch on the synthetic scenes: "
          f"{'met' if not noisy else 'MISSED on ' + ', '.join(noisy)}")
    print(f"real clips: quiet stretches are the frames outside the labelled events, {MARGIN} frames away from them "
          f"(labels in bench/labels/). Total benchmark time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
