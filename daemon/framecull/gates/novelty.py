"""Novelty gate: is this frame far from EVERY frame kept before?

The frame is embedded (ONNX), FAISS finds the nearest kept frames on the whole vector, and the
frame is novel when either
  - its whole-frame cosine distance to the nearest kept frame exceeds `min_distance`, or
  - (region-aware, grid models) against each of the `neighbours` nearest kept frames, the mean
    distance of its `region_cells` most-changed grid cells exceeds `min_region_distance`:
    a new car in one bay of a large lot barely moves the whole vector but changes a few cells.
    Averaging several cells keeps one noisy cell from making a frame novel, or
  - its light differs by more than [lighting] min_change (a ratio) from every one of the nearest
    kept frames: the default model ignores brightness (so flicker and auto-exposure make no
    duplicates), yet a new lighting state of the same scene is worth one frame. Video: the mean
    grey level. Stills: the light field of framecull.thumbnails, the smooth ratio of the two
    pictures, anywhere and in any channel (a change of the whole light, of its colour, or of a
    part: floodlights under an exposure that keeps the mean), and at least a stop
    (STILLS_LIGHT_STEP), or
  - (stills: the frames come on average more than STILLS_GAP apart) at pixel level, against the
    colour thumbnail of every one of the nearest kept frames, each relit to the other's light,
    areas covering [gates.change] min_changed changed, by the change gate's rule for stills
    (framecull.thumbnails): a car parked in one bay since the last still moves the grid cells
    less than a day's light does, but it is a plain new blob in the picture; a scene kept by day
    is the same scene under floodlights. There the grid-cell criterion does not decide (the cells
    move with the light as far as with a car). Video keeps to the embedding: there everything
    that moves is a new blob in every frame, and a moving car is seen over many frames anyway.

Target keep rate (`target_per_hour` > 0): min_distance and min_region_distance are multiplied
by a factor in [0.25, 4] that rises slowly while frames are kept faster than the target and falls
while slower (see KeepRate), so a camera delivers about the requested number of frames per hour
of capture time, still the most novel ones. The light criterion is not scaled.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from framecull.config import ConfigError, LightingConfig, NoveltyConfig
from framecull.embedder import Embedder, ModelSpec, cell_distances, default_model_spec
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.lighting import lighting_change
from framecull.memory import Memory, ModelMismatch
from framecull.stills import STILLS_GAP
from framecull.thumbnails import StillsComparison, thumbnail

PENDING_LIMIT = 256  # embeddings of recent candidates awaiting the pacing decision
# Kept frames whose lighting is compared: more than the cell-compared neighbours, because
# to a brightness-blind model all lighting states of an empty scene are equally near.
LIGHT_NEIGHBOURS = 32

# Stills: a new lighting state is twice or half the light of every nearest kept still somewhere
# (one stop; [lighting] min_change when larger). Between stills minutes apart the light of the day
# drifts: dawn and dusk pass through 2-3 stops, which min_change (20%, made for flicker and lamps
# in video, where the light rarely drifts that far between two candidates) cuts into 6-9 "states"
# of one transition. A stop is the unit in which exposure is counted; the same scene in a light
# laid out otherwise (floodlights) differs by more than a stop in part of the picture.
STILLS_LIGHT_STEP = 1.0

# Target keep rate: bounds of the factor on the distance thresholds.
MIN_FACTOR, MAX_FACTOR = 0.25, 4.0
# The keep rate is averaged over the capture time in which this many frames should be kept at the
# target: the estimate's own noise is then about 1/sqrt(20), 22%.
RATE_WINDOW_FRAMES = 20
# d ln(factor) / dt = RATE_GAIN * ln(rate / target) / window: kept twice too fast for a whole
# window, the thresholds rise by 2 ** RATE_GAIN.
RATE_GAIN = 1.0


class KeepRate:
    """An exponential moving estimate of the keep rate over capture time, and the threshold
    factor it steers: an integral controller in log space, bounded to [MIN_FACTOR, MAX_FACTOR]."""

    def __init__(self, target_per_hour: float) -> None:
        self.target = target_per_hour
        self.window = 3600.0 * RATE_WINDOW_FRAMES / target_per_hour  # seconds
        self.rate = target_per_hour  # frames per hour; starts on target, so the start is calm
        self.factor = 1.0
        self._time: float | None = None

    def advance(self, t: float) -> None:
        if self._time is None:
            self._time = t
        dt = max(t - self._time, 0.0)
        self._time = max(t, self._time)
        self.rate *= math.exp(-dt / self.window)
        error = math.log(max(self.rate, self.target / 16) / self.target)
        step = RATE_GAIN * error * min(dt, self.window) / self.window  # a long gap counts as one window
        self.factor = min(MAX_FACTOR, max(MIN_FACTOR, self.factor * math.exp(step)))

    def kept(self, t: float) -> None:
        self.advance(t)
        self.rate += 3600.0 / self.window


def model_spec(cfg: NoveltyConfig) -> ModelSpec:
    if cfg.model == "default":
        return default_model_spec()
    i = cfg.input
    return ModelSpec(
        path=Path(cfg.model),
        input_name=i.name or None,
        size=(i.width, i.height) if i.width and i.height else None,
        layout=i.layout,
        dtype=i.dtype or None,
        color=i.color,
        scale=i.scale,
        mean=i.mean,
        std=i.std,
        output=cfg.output or None,
        grid=cfg.grid if all(cfg.grid) else None,
    )


def load_embedder(cfg: NoveltyConfig) -> Embedder:
    try:
        return Embedder(model_spec(cfg))
    except ValueError as exc:
        raise ConfigError(f"gates.novelty.model: {exc}") from None


def open_memory(cfg: NoveltyConfig, embedder: Embedder, root: Path, rebuild: bool = False) -> Memory:
    """The memory of kept frames at `root` for this model; a memory of another model is a
    config error naming the way out (`framecull memory rebuild`)."""
    try:
        return Memory(root, embedder.sha256, embedder.dim, capacity=cfg.capacity,
                      forget_after=cfg.forget_after, rebuild=rebuild, grid=embedder.grid)
    except ModelMismatch as exc:
        raise ConfigError(f"gates.novelty.model: {exc}") from None


def top_cells_mean(distances: np.ndarray, count: int) -> float:
    flat = distances.ravel()
    count = min(count, flat.size)
    return float(np.partition(flat, flat.size - count)[-count:].mean())


class NoveltyGate(Gate):
    name = "novelty"
    cheap = False
    score_keys = {
        "distance": "whole-frame cosine distance to the nearest kept frame (none: nothing kept yet)",
        "region": "mean distance of the most-changed grid cells to the nearest kept frames",
        "light": "brightness change against the nearest kept frames (a ratio, minus 1; stills: the largest anywhere)",
        "objects": "stills: fraction of the frame changed at pixel level against the most similar nearest kept frame",
        "nearest": "memory id of the nearest kept frame",
        "score": "how far past its threshold the strongest measure is (1 = at the threshold)",
        "factor": "target keep rate: the factor on the distance thresholds",
        "min_distance": "target keep rate: the min_distance in force",
        "min_region_distance": "target keep rate: the min_region_distance in force",
    }

    def __init__(self, cfg: NoveltyConfig, lighting: LightingConfig, embedder: Embedder, memory: Memory,
                 stills: StillsComparison | None = None) -> None:
        """stills: how stills are compared with the thumbnails of kept stills; None: never at pixel
        level."""
        self.cfg = cfg
        self.light_change = lighting.min_change
        self.embedder = embedder
        self.memory = memory
        # index -> (embedding, nearest, light, thumbnail of a still) of recent candidates
        self._pending: dict[int, tuple[np.ndarray, tuple[int, float] | None, float, bytes | None]] = {}
        self.keep_rate = KeepRate(cfg.target_per_hour) if cfg.target_per_hour > 0 else None
        self.stills = stills
        self._last_candidate: tuple[int, float] | None = None  # (index, clock) of the frame judged last

    @property
    def factor(self) -> float:
        return self.keep_rate.factor if self.keep_rate else 1.0

    def judge(self, frame: Frame) -> Verdict:
        vector = self._embed(frame)
        light = float(frame.gray.mean())
        region = self.cfg.region and self.embedder.grid is not None
        regime = self._regime(frame)
        # recorded for stills, and for the first frame, which may be the first of stills
        thumb = thumbnail(frame.image) if self.stills is not None and regime != "video" else None
        if self.keep_rate:
            self.keep_rate.advance(frame.timestamp)
        min_distance = self.cfg.min_distance * self.factor
        min_region_distance = self.cfg.min_region_distance * self.factor
        adaptive = {"factor": round(self.factor, 4), "min_distance": round(min_distance, 5),
                    "min_region_distance": round(min_region_distance, 5)} if self.keep_rate else {}
        neighbours = self.memory.search(vector, k=max(self.cfg.neighbours, LIGHT_NEIGHBOURS))
        self._remember_pending(frame.index, vector, neighbours[0] if neighbours else None, light, thumb)
        if not neighbours:
            return Verdict(True, {"distance": None, "region": None, "light": None, "objects": None, "nearest": None,
                                  "score": None, **adaptive}, rank=math.inf)  # nothing to compare with: novel above all
        nearest, distance = neighbours[0]
        # How far past its threshold each measure is; pacing keeps the frame with the largest.
        ratios = [distance / max(min_distance, 1e-9)]
        region_distance = light_step = objects = None
        stills = thumb is not None and regime == "stills"
        # stills: a new light is a stop away (see STILLS_LIGHT_STEP)
        light_bar = max(self.light_change, STILLS_LIGHT_STEP) if stills else self.light_change
        if stills:
            objects, light_step = self.stills.compare(thumb, self.memory.get_thumbs([i for i, _ in neighbours]),
                                                      light_bar)
            if objects is not None:
                ratios.append(objects / max(self.stills.min_changed, 1e-9))
        # Objects in stills are judged at pixel level, which relights the light away; the grid cells
        # move with the light too (night against day of one scene: as far as a new car), so they
        # decide only where no pixel comparison could be made.
        cells_decide = objects is None
        if region:
            kept_vectors = self.memory.get_vectors([i for i, _ in neighbours[: self.cfg.neighbours]])
            region_distance = min(
                top_cells_mean(cell_distances(vector, kept, self.embedder.grid), self.cfg.region_cells)
                for kept in kept_vectors
            )
            if cells_decide:
                ratios.append(region_distance / max(min_region_distance, 1e-9))
        if self.light_change <= 0:
            light_step = None
        elif light_step is None:  # no thumbnail to compare with: the mean grey levels
            known = [k for k in self.memory.get_light([i for i, _ in neighbours]) if k is not None]
            if known:
                light_step = min(lighting_change(light, k) for k in known)
        if light_step is not None:
            ratios.append(light_step / light_bar)
        novel = (
            distance > min_distance
            or (cells_decide and region_distance is not None and region_distance > min_region_distance)
            or (light_step is not None and light_step > light_bar)
            or (objects is not None and objects >= self.stills.min_changed)
        )
        score = max(ratios)
        return Verdict(novel, {
            "distance": round(distance, 5),
            "region": None if region_distance is None else round(region_distance, 5),
            "light": None if light_step is None else round(light_step, 4),
            "objects": None if objects is None else round(objects, 6),
            "nearest": nearest,
            "score": round(score, 4),
            **adaptive,
        }, rank=score)

    def _embed(self, frame: Frame) -> np.ndarray:
        return self.embedder.embed(frame.picture(self.embedder.width, self.embedder.height))

    def _regime(self, frame: Frame) -> str:
        """"stills" when the frames come on average more than STILLS_GAP apart since the frame judged
        last, else "video"; "unknown" for the first. This gate sees candidates only: a video's may be
        minutes apart, its frames are not."""
        last, self._last_candidate = self._last_candidate, (frame.index, frame.clock)
        if last is None or frame.index <= last[0]:
            return "unknown"
        return "stills" if (frame.clock - last[1]) / (frame.index - last[0]) > STILLS_GAP else "video"

    def _remember_pending(self, index: int, vector: np.ndarray, nearest, light: float, thumb: bytes | None) -> None:
        if len(self._pending) >= PENDING_LIMIT:
            self._pending.pop(next(iter(self._pending)))
        self._pending[index] = (vector, nearest, light, thumb)

    def on_kept(self, frame: Frame, path: str | None) -> None:
        vector, nearest, light, thumb = self._pending.pop(frame.index, (None, None, None, None))
        if vector is None:  # kept without being judged here
            vector, light = self._embed(frame), float(frame.gray.mean())
            thumb = thumbnail(frame.image) if self.stills is not None else None
        if self.keep_rate:
            self.keep_rate.kept(frame.timestamp)
        self.memory.add(vector, frame.timestamp, self._relative(path), self.cfg.min_distance * self.factor, nearest,
                        light, thumb)
        self.memory.evict(frame.timestamp)

    def forgotten(self, images: list[Path]) -> list[Path]:
        by_file = {self._relative(str(p)): p for p in images}
        return [by_file[f] for f in self.memory.forgotten(list(by_file))]

    def kept_times(self, days: float) -> list[float]:
        return self.memory.kept_times(days)

    def _relative(self, path: str | None) -> str:
        """The image path relative to the memory's root (the store root), as the memory records it."""
        if not path:
            return ""
        try:
            return str(Path(path).resolve().relative_to(self.memory.root.resolve()))
        except ValueError:
            return str(path)

    def save(self) -> None:
        self.memory.save()

    def close(self) -> None:
        self.memory.close()
