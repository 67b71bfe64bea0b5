"""framecull preview: PNGs of what the gates see, for a sample of frames.

Each PNG is the gray analysis plane (upscaled to at least 640 wide) with
  magenta  the masks and the border crop (never counted: a mask in the wrong place shows at once)
  green    changed areas that count (contours of at least min_area)
  orange   changed areas too small to count (below min_area)
  cyan     motion-vector blocks that count as moving, as arrows (when the frame has vectors)
and, in a band below, the decision and the scores of the real pipeline (run with no store,
its novelty memory in a temporary folder, so the decisions are the ones a fresh replay makes).

The contours come from the pipeline's own ChangeGate: measure() just before the frame is judged
reads the same reference frame judge() will, and changes no state.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from framecull.config import Config, load_config
from framecull.frame import Frame
from framecull.gates.change import ChangeGate, ChangeMeasure
from framecull.gates.motion import MotionVectorGate
from framecull.gates.novelty import NoveltyGate
from framecull.motion_vectors import BLOCK
from framecull.pipeline import Decision
from framecull.regions import valid_mask
from framecull.runner import Runner
from framecull.sources import Source, iter_frames

MASKED = (255, 0, 255)  # BGR
ACCEPTED = (0, 220, 0)
SMALL = (0, 150, 255)
MOTION = (255, 255, 0)
KEPT, DROPPED = (0, 200, 0), (60, 60, 255)
LEGEND = "magenta: masked/border  green: change that counts  orange: below min_area  cyan: motion vectors"


def render(frame: Frame, config: Config, measure: ChangeMeasure, decision: Decision,
           moving: np.ndarray | None = None) -> np.ndarray:
    """The annotated BGR picture of one judged frame."""
    gray = frame.gray
    h, w = gray.shape
    zoom = max(1, -(-640 // w))  # at least 640 pixels wide
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    image = cv2.resize(image, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)
    regions = config.regions
    invalid = cv2.resize(valid_mask((h, w), regions, grow=config.gates.change.blur), (w * zoom, h * zoom),
                         interpolation=cv2.INTER_NEAREST) == 0
    tint = image.copy()
    tint[invalid] = MASKED
    image = cv2.addWeighted(tint, 0.45, image, 0.55, 0)
    for mask in regions.masks:  # outlines and names, so a polygon typed in the wrong place is obvious
        points = np.round([[x * (w - 1) * zoom, y * (h - 1) * zoom] for x, y in mask.polygon]).astype(np.int32)
        cv2.polylines(image, [points], True, MASKED, 2)
        x, y = points.min(axis=0)
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # white on black: legible anywhere
            cv2.putText(image, mask.name, (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thickness,
                        cv2.LINE_AA)

    scaled = lambda contours: [c * zoom for c in contours]  # noqa: E731
    cv2.drawContours(image, scaled(measure.small), -1, SMALL, 1)
    cv2.drawContours(image, scaled(measure.contours), -1, ACCEPTED, 2)

    vectors = frame.motion_vectors
    if moving is not None and vectors is not None and moving.size:
        s = w * zoom / vectors.width
        centre_x, centre_y = vectors.records["dst_x"], vectors.records["dst_y"]  # FFmpeg gives the partition's centre
        rows = np.minimum(centre_y // BLOCK, moving.shape[0] - 1)
        cols = np.minimum(centre_x // BLOCK, moving.shape[1] - 1)
        dx, dy = vectors.dx, vectors.dy
        # The content came from (x + dx, y + dy) in a past reference: it moved by -d (a future one: +d).
        sign = np.where(vectors.source < 0, -1.0, 1.0)
        for i in np.flatnonzero(moving[rows, cols]):
            cx, cy = centre_x[i] * s, centre_y[i] * s
            tip = (int(cx + sign[i] * dx[i] * s), int(cy + sign[i] * dy[i] * s))
            cv2.arrowedLine(image, (int(cx), int(cy)), tip, MOTION, 1, cv2.LINE_AA, tipLength=0.3)

    return np.vstack([image, _band(image.shape[1], _lines(config, measure, decision), decision.kept)])


def _lines(config: Config, measure: ChangeMeasure, decision: Decision) -> list[str]:
    verdict = f"KEPT ({decision.stage})" if decision.kept else f"DROPPED at {decision.stage}"
    lines = [f"frame {decision.index}  t={decision.timestamp:.2f}  {verdict}"]
    mv = decision.scores.get(MotionVectorGate.name)
    if mv is not None:
        lines.append("motion: unknown (no vectors)" if mv.get("unknown") else
                     f"motion: moving {mv['moving']:.4f} (min {config.gates.motion_vectors.min_area:g}), "
                     f"{mv['blocks']} blocks, {mv['clusters']} clusters" + (f", hold {mv['hold']}" if "hold" in mv else ""))
    cc = config.gates.change
    if ChangeGate.name in decision.scores:
        lines.append(f"change: {measure.changed:.4f} (min {cc.min_changed:g}), grey threshold {measure.threshold:.1f}, "
                     f"noise {measure.noise:.2f}, {len(measure.contours)} contours + {len(measure.small)} small, "
                     f"light {measure.light:+.3f}" + ("  (first frame)" if measure.first else ""))
    novelty = decision.scores.get(NoveltyGate.name)
    if novelty is not None:
        nov = config.gates.novelty
        if novelty.get("distance") is None:
            lines.append("novelty: memory empty (novel)")
        else:
            region = novelty.get("region")
            lines.append(f"novelty: distance {novelty['distance']:.4f} (min {novelty.get('min_distance', nov.min_distance):g})"
                         + ("" if region is None else
                            f", region {region:.4f} (min {novelty.get('min_region_distance', nov.min_region_distance):g})")
                         + f", score {novelty['score']:g}")
    lines.append(LEGEND)
    return lines


def _band(width: int, lines: list[str], kept: bool) -> np.ndarray:
    scale = min(0.5, width / 1500)
    step = int(40 * scale) + 6
    band = np.full((step * len(lines) + 8, width, 3), 24, np.uint8)
    for n, line in enumerate(lines):
        colour = (KEPT if kept else DROPPED) if n == 0 else (230, 230, 230)
        cv2.putText(band, line, (6, step * (n + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return band


def preview(config: Config, source: Source, out: Path, every: int = 0, count: int = 0) -> list[Path]:
    """Write annotated PNGs of every `every`-th frame, or of `count` frames spread over the source."""
    if count:
        total = source.frame_count
        every = max(1, total // count) if total else 1
    every = max(1, every or 25)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    waiting: dict[int, tuple] = {}  # frames sampled, until their decision comes out
    with tempfile.TemporaryDirectory(prefix="framecull-preview-") as root, \
            Runner(config, Path(root), write=False) as runner:
        change = next(g for g in runner.pipeline.gates if isinstance(g, ChangeGate))
        motion = next((g for g in runner.pipeline.gates if isinstance(g, MotionVectorGate)), None)

        def write(decisions: list[Decision]) -> None:
            for d in decisions:
                if d.index in waiting:
                    frame, measure, moving = waiting.pop(d.index)
                    name = f"{d.index:06d}-{'kept' if d.kept else d.stage}.png"
                    cv2.imwrite(str(out / name), render(frame, config, measure, d, moving))
                    written.append(out / name)

        try:
            for n, frame in enumerate(iter_frames(source, config.source.fps)):
                if count and len(written) + len(waiting) >= count:
                    break
                sampled = n % every == 0
                measure = change.measure(frame)[0] if sampled else None
                ready = runner.push(frame)
                if sampled:
                    moving = None
                    if motion is not None and frame.motion_vectors is not None:
                        moving = motion.moving_blocks(frame.motion_vectors)[0]
                    waiting[frame.index] = (frame, measure, moving)
                write(ready)
            write(runner.flush())
        finally:
            source.close()
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a video file, a folder of images, or synthetic:parking_lot")
    parser.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    parser.add_argument("--out", default="preview-out", help="where the PNGs go (default: %(default)s)")
    sample = parser.add_mutually_exclusive_group()
    sample.add_argument("--every", type=int, default=0, help="every Nth analysed frame (default: 25)")
    sample.add_argument("--count", type=int, default=0, help="...or this many frames spread over the source")


def main(args) -> int:
    from framecull.calibrate import open_footage

    config = load_config(args.config) if args.config else Config()
    config, source = open_footage(args.source, config)
    written = preview(config, source, Path(args.out), every=args.every, count=args.count)
    print(f"{len(written)} previews in {args.out}")
    return 0 if written else 1
