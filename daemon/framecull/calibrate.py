"""framecull calibrate: how many frames would be kept at other thresholds, from one replay.

One pass over the footage runs the motion-vector and change gates exactly as the pipeline does,
records every frame's change score, and embeds every frame the change gate might pass at a
quarter of its min_changed. The novelty decision is then re-run on those cached embeddings for
each candidate threshold: the real NoveltyGate and Memory (in a temporary folder) inside the real
Pipeline (pacing, budgets), fed only the candidates, so a sweep point costs milliseconds.

The min_distance curve scales min_distance and min_region_distance together (their ratio kept, as
the target keep-rate mode does) and is exact but for the heartbeat. The min_changed curve uses the
change scores measured against the current config's reference frames (with reference =
"last_judged", another min_changed moves the reference a little). The suggestion is checked by
a real replay at the end.

Plots need matplotlib (the `tools` extra); the daemon never imports this module.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from framecull.config import Config, load_config
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.pipeline import Decision
from framecull.runner import Collect, Runner
from framecull.sources import Source, iter_frames, open_source, with_recorded_source

SCALES = np.geomspace(1 / 8, 8, 41)  # factors on the configured novelty thresholds
CHANGED_SPAN = 4.0  # the min_changed curve spans current / 4 .. current * 4


@dataclass
class Recording:
    """What one pass over the footage measured."""

    config: Config
    duration: float  # seconds of capture time
    frames: int = 0  # frames analysed
    changed: list[float] = field(default_factory=list)  # every frame's change score
    # Frames that reached the change gate with a score that some swept min_changed would pass:
    # (index, timestamp, changed, passes regardless (first frame, light step), mean grey level)
    candidates: list[tuple[int, float, float, bool, float]] = field(default_factory=list)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # their embeddings, by index
    thumbs: dict[int, bytes] = field(default_factory=dict)  # their thumbnails (stills are compared by them)
    embedder: object = None  # the configured model (its identity and grid)

    @property
    def hours(self) -> float:
        return self.duration / 3600.0


def open_footage(path: str, config: Config) -> tuple[Config, Source]:
    """The config with its source replaced by `path` (see with_recorded_source), and that source."""
    config = with_recorded_source(config, path)
    return config, open_source(config)


def record(config: Config, source: Source) -> Recording:
    """One pass: motion and change gates as in the pipeline, embeddings of the change candidates."""
    from framecull.gates.change import ChangeGate
    from framecull.gates.motion import MotionVectorGate
    from framecull.gates.novelty import load_embedder
    from framecull.thumbnails import thumbnail

    mv, cc = config.gates.motion_vectors, config.gates.change
    motion = MotionVectorGate(mv, config.regions) if mv.enabled else None
    change = ChangeGate(cc, config.regions, config.lighting)
    embedder = load_embedder(config.gates.novelty)
    floor = cc.min_changed / CHANGED_SPAN
    rec = Recording(config, 0.0)
    times = []
    try:
        for frame in iter_frames(source, config.source.fps):
            times.append(frame.timestamp)
            if motion is not None and not motion.judge(frame).passed:
                rec.changed.append(change.measure(frame)[0].changed)  # the score only; no state change
                continue
            verdict = change.judge(frame)
            score = verdict.rank  # the changed fraction
            rec.changed.append(score)
            forced = verdict.passed and score < cc.min_changed  # first frame or a light step
            if forced or score >= floor:
                rec.candidates.append((frame.index, frame.timestamp, score, forced, float(frame.gray.mean())))
                rec.vectors[frame.index] = embedder.embed(frame.picture(embedder.width, embedder.height))
                rec.thumbs[frame.index] = thumbnail(frame.image)
    finally:
        source.close()
    rec.frames = len(times)
    if times:
        period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        rec.duration = times[-1] - times[0] + period
    rec.embedder = embedder
    return rec


class _Replayed(Gate):
    """The change gate's recorded scores, judged against another min_changed."""

    name = "change"

    def __init__(self, scores: dict[int, tuple[float, bool]], min_changed: float) -> None:
        self.scores, self.min_changed = scores, min_changed

    def judge(self, frame: Frame) -> Verdict:
        changed, forced = self.scores[frame.index]
        return Verdict(forced or changed >= self.min_changed, {"changed": changed}, rank=changed)


class _Cached:
    """An embedder that returns the recorded embedding of a frame (its `picture` is its index)."""

    def __init__(self, embedder, vectors: dict[int, np.ndarray]) -> None:
        self.sha256, self.dim, self.grid = embedder.sha256, embedder.dim, embedder.grid
        self.width, self.height = embedder.width, embedder.height
        self.vectors = vectors

    def embed(self, index: int) -> np.ndarray:
        return self.vectors[index]


def simulate(rec: Recording, scale: float = 1.0, min_changed: float | None = None) -> list[Decision]:
    """The candidates' decisions at the novelty thresholds times `scale` and at `min_changed`."""
    from framecull.gates.novelty import NoveltyGate, open_memory
    from framecull.thumbnails import StillsComparison, decode

    config = rec.config
    nov = config.gates.novelty
    cfg = nov.model_copy(update={"min_distance": nov.min_distance * scale,
                                 "min_region_distance": nov.min_region_distance * scale, "target_per_hour": 0.0})
    min_changed = config.gates.change.min_changed if min_changed is None else min_changed
    embedder = _Cached(rec.embedder, rec.vectors)
    scores = {i: (changed, forced) for i, _, changed, forced, _ in rec.candidates}
    # The heartbeat is left out: only the candidates are replayed, so quiet time is not seen.
    config = config.model_copy(update={"pacing": config.pacing.model_copy(update={"heartbeat": 0.0})})
    with tempfile.TemporaryDirectory(prefix="framecull-calibrate-") as root:
        gates = [_Replayed(scores, min_changed)]
        if nov.enabled:
            gates.append(NoveltyGate(cfg, config.lighting, embedder, open_memory(nov, embedder, Path(root)),
                                     StillsComparison(config.gates.change, config.regions)))
        # The image is the recorded thumbnail: all the gate makes of a picture beside its embedding.
        frames = (Frame(i, t, gray=np.array([[light]], np.float32), load_image=lambda i=i: decode(rec.thumbs[i]),
                        load_picture=lambda w, h, i=i: i)
                  for i, t, _, _, light in rec.candidates)
        decisions = Collect()
        with Runner(config, Path(root), write=False, sinks=[decisions], gates=gates) as runner:
            runner.run(frames)
        return decisions.decisions


def kept_count(rec: Recording, scale: float = 1.0, min_changed: float | None = None) -> int:
    return sum(d.kept for d in simulate(rec, scale, min_changed))


def curves(rec: Recording) -> dict[str, list[tuple[float, int]]]:
    """Kept frames vs min_distance (min_region_distance scaled with it) and vs min_changed."""
    nov, min_changed = rec.config.gates.novelty, rec.config.gates.change.min_changed
    distance = [(nov.min_distance * s, kept_count(rec, s)) for s in SCALES]
    changed_values = np.geomspace(min_changed / CHANGED_SPAN, min_changed * CHANGED_SPAN, 17)
    changed = [(float(m), kept_count(rec, 1.0, float(m))) for m in changed_values]
    return {"min_distance": distance, "min_changed": changed}


def suggest(rec: Recording, target_count: float, curve: list[tuple[float, int]]) -> float:
    """The scale on the novelty thresholds whose kept count is nearest `target_count` (among
    equals, the stricter thresholds). Where the target falls between two points of the curve,
    the step between them is searched by bisection."""
    base = rec.config.gates.novelty.min_distance
    if base <= 0:
        return 1.0
    points = [(x / base, k) for x, k in curve]
    for (s0, k0), (s1, k1) in zip(points, points[1:]):
        if k0 > target_count > k1:  # the count falls past the target somewhere in (s0, s1)
            for _ in range(8):
                mid = math.sqrt(s0 * s1)
                k = kept_count(rec, mid)
                points.append((mid, k))
                s0, s1 = (mid, s1) if k > target_count else (s0, mid)
            break
    return max(points, key=lambda p: (-abs(p[1] - target_count), p[0]))[0]


def suggested_toml(config: Config, scale: float) -> str:
    nov = config.gates.novelty
    return (f"[gates.novelty]\nmin_distance = {min(2.0, nov.min_distance * scale):.4g}\n"
            f"min_region_distance = {min(2.0, nov.min_region_distance * scale):.4g}\n")


def apply_scale(config: Config, scale: float) -> Config:
    """The config with the suggested novelty thresholds, rounded as printed."""
    nov = config.gates.novelty
    update = {"min_distance": float(f"{min(2.0, nov.min_distance * scale):.4g}"),
              "min_region_distance": float(f"{min(2.0, nov.min_region_distance * scale):.4g}")}
    gates = config.gates.model_copy(update={"novelty": nov.model_copy(update=update)})
    return config.model_copy(update={"gates": gates})


def replay_count(config: Config, source: Source) -> int:
    """Frames the real pipeline keeps over `source`, from an empty memory, writing nothing."""
    try:
        with tempfile.TemporaryDirectory(prefix="framecull-calibrate-") as root, \
                Runner(config, Path(root), write=False) as runner:
            runner.run(iter_frames(source, config.source.fps))
        return runner.kept
    finally:
        source.close()


def plot_histograms(rec: Recording, decisions: list[Decision], path: Path) -> Path:
    import matplotlib

    from framecull.gates.novelty import NoveltyGate

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = rec.config
    nov, min_changed = config.gates.novelty, config.gates.change.min_changed
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    changed = np.array(rec.changed, float)
    positive = changed[changed > 0]
    bins = np.geomspace(max(positive.min() if positive.size else 1e-5, 1e-5), 1.0, 60)
    a.hist(positive, bins=bins, color="tab:blue")
    a.set_xscale("log")
    a.axvline(min_changed, color="red", label=f"min_changed = {min_changed:g}")
    a.set_title(f"change score of every frame ({len(changed) - len(positive)} frames with 0 not shown)")
    a.set_xlabel("changed fraction of the frame")
    a.set_ylabel("frames")
    a.legend()
    novelty = [d.scores.get(NoveltyGate.name, {}) for d in decisions]
    distances = [n["distance"] for n in novelty if n.get("distance") is not None]
    regions = [n["region"] for n in novelty if n.get("region") is not None]
    bins = np.linspace(0, max([*distances, *regions, nov.min_region_distance, nov.min_distance]) * 1.05, 60)
    b.hist(distances, bins=bins, alpha=0.7, label="whole frame", color="tab:blue")
    if regions:
        b.hist(regions, bins=bins, alpha=0.6, label="regions (most-changed cells)", color="tab:orange")
    b.axvline(nov.min_distance, color="tab:blue", linestyle="--", label=f"min_distance = {nov.min_distance:g}")
    b.axvline(nov.min_region_distance, color="tab:red", linestyle="--",
              label=f"min_region_distance = {nov.min_region_distance:g}")
    b.set_title("distance of each change candidate to the nearest kept frame")
    b.set_xlabel("cosine distance")
    b.set_ylabel("candidates")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(rec: Recording, curve: dict, path: Path, target_count: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    config, per_hour = rec.config, 1.0 / rec.hours if rec.hours > 0 else 0.0
    nov, min_changed = config.gates.novelty, config.gates.change.min_changed
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, current, label in ((a, "min_distance", nov.min_distance,
                                     f"min_distance (min_region_distance x {nov.min_region_distance / max(nov.min_distance, 1e-9):.3g})"),
                                    (b, "min_changed", min_changed, "min_changed")):
        xs, ys = zip(*curve[key])
        ax.step(xs, ys, where="post", color="tab:blue")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(current, color="red", label=f"current {current:g}")
        if target_count is not None and key == "min_distance":
            ax.axhline(target_count, color="green", linestyle="--", label=f"target {target_count:.0f}")
        ax.set_xlabel(label)
        ax.set_ylabel("frames kept")
        ax.set_title(f"frames kept vs {key} ({rec.frames} frames, {rec.duration / 60:.1f} min)")
        if per_hour:
            side = ax.secondary_yaxis("right", functions=(lambda k: k * per_hour, lambda r: r / per_hour))
            side.set_ylabel("frames per hour")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a video file, a folder of images, or synthetic:parking_lot")
    parser.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-per-hour", type=float, help="suggest thresholds keeping this many frames per hour")
    target.add_argument("--target-keep-rate", type=float, help="...or this fraction of the analysed frames")
    parser.add_argument("--out", help="write histograms.png and curves.png here (needs matplotlib)")


def main(args) -> int:
    if args.out and importlib.util.find_spec("matplotlib") is None:  # fail before the replay, not after
        print("calibrate: --out needs matplotlib: pip install 'framecull[tools]'", file=sys.stderr)
        return 1
    config = load_config(args.config) if args.config else Config()
    config, source = open_footage(args.source, config)
    rec = record(config, source)
    if rec.frames == 0:
        print("calibrate: the source delivered no frames")
        return 1
    now = simulate(rec)
    kept_now = sum(d.kept for d in now)
    print(f"{rec.frames} frames, {rec.duration:.1f} s of capture time, {len(rec.candidates)} change candidates")
    print(f"current thresholds keep {kept_now} frames ({kept_now / rec.hours:.0f} per hour, "
          f"{kept_now / rec.frames:.2%} of the frames)")
    curve = curves(rec)
    target = None
    if args.target_per_hour is not None:
        target = args.target_per_hour * rec.hours
    elif args.target_keep_rate is not None:
        target = args.target_keep_rate * rec.frames
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(f"histograms: {plot_histograms(rec, now, out / 'histograms.png')}")
        print(f"curves: {plot_curves(rec, curve, out / 'curves.png', target)}")
    counts = [k for _, k in curve["min_distance"]]
    print(f"over min_distance x 1/8 .. x 8 the kept frames range {min(counts)} .. {max(counts)} "
          f"({min(counts) / rec.hours:.0f} .. {max(counts) / rec.hours:.0f} per hour)")
    if target is None:
        return 0
    if not min(counts) <= target <= max(counts):
        print(f"target of {target:.0f} frames is outside what the novelty thresholds reach; the nearest:")
    scale = suggest(rec, target, curve["min_distance"])
    suggested = apply_scale(config, scale)
    _, source = open_footage(args.source, suggested)
    kept = replay_count(suggested, source)
    print(f"suggested (replayed: {kept} frames, {kept / rec.hours:.0f} per hour, target {target / rec.hours:.0f}):")
    print(suggested_toml(config, scale), end="")
    return 0
