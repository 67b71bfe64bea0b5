"""Motion-vector gate: did something move, by the encoder's own vectors?

Sensor noise makes an encoder emit vectors too: short ones in many blocks, long ones now and
then, runs of them sliding along straight edges, and intra blocks everywhere once the noise is
strong. On the 16x16 macroblock grid, with no pixel work, a frame shows motion when:
  a block's vector (the mean of its partitions' vectors above the threshold) is longer than the
    stream's vector noise allows: `noise_factor` times the RMS length of the vectors outside the
    blocks found moving (a floor estimated online, like the change gate's grey-level noise), and
    at least `min_magnitude` pixels; intra blocks never count (noise makes them common, and they
    carry no direction)
  -> a neighbour (8-connected) moves the same way: noise vectors point anywhere
  -> it continues motion of the previous frame: near where its content came from, a block
     moved in the same direction (within 45 degrees) in the previous frame. Noise does not
     persist along its own vectors; objects do
  -> it lies wholly inside the border crop and outside the masks of [regions]
  -> clusters of at least min_cluster such blocks cover min_area of the frame.

No event is lost to it: it passes frames whose motion is unknown (key frames, sources without
vectors), keeps passing `hold_frames` frames after motion stops, and passes one frame whenever
it passed none for `max_gap` seconds, so what vectors cannot see (an object creeping under a
pixel a frame, a change of light) still reaches the change gate, which compares with the last
frame it passed and so sees the change add up.
"""

from __future__ import annotations

import logging
import weakref

import cv2
import numpy as np

from framecull.config import MotionVectorsConfig, RegionsConfig
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.motion_vectors import BLOCK, MotionVectors, grid_size
from framecull.regions import valid_mask

log = logging.getLogger("framecull.gate.motion_vectors")

# Two neighbours move the same way when their vectors differ by at most this many pixels, or by
# this fraction of the shorter one (a walking person's limbs and torso do not move as one).
SAME_WAY_PIXELS = 1.0
SAME_WAY_FRACTION = 0.5
# A block continues the previous frame's motion when the angle between the two is below this
# (the lengths may differ: with B-frames consecutive pictures refer to references 1 to 3 frames away).
CONTINUES_COS2 = 0.5  # cos(45 degrees) squared
# A noise vector longer than this many pixels counts as this long in the noise estimate, so that
# the rare wild vector (or a moving block the gate missed) does not raise the floor much.
NOISE_CLIP = 4.0
NOISE_RATE = 0.05  # weight of each frame in the running noise estimate (about 20 frames)

# Unknown frames in a row, before any vector was seen, that mean the source has no vectors
# (one key frame alone is normal).
NO_VECTORS_RUN = 3

_AROUND = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


class _Grid:
    """The macroblock grid of one picture size, padded by one block all round so that every block
    has 8 neighbours: blocks are indices into the flattened padded grid."""

    def __init__(self, width: int, height: int, regions: RegionsConfig) -> None:
        self.picture_size = (width, height)
        self.cols, self.rows = grid_size(width, height)
        self.padded_cols = self.cols + 2
        self.shape = (self.rows + 2, self.padded_cols)
        # the padded grid's block of a partition centre (dst_x, dst_y): row start + column
        self.row_start = (np.minimum(np.arange(self.rows * BLOCK + BLOCK) // BLOCK, self.rows - 1) + 1) * self.padded_cols
        self.column = np.minimum(np.arange(self.cols * BLOCK + BLOCK) // BLOCK, self.cols - 1) + 1
        self.around = _AROUND[:, 0] * self.padded_cols + _AROUND[:, 1]  # index offsets of the 8 neighbours
        self.with_self = np.r_[0, self.around]
        # Drawn on the picture (1080 rows), then padded to whole macroblocks (1088 rows). A block
        # counts only when all its pixels may count: motion inside a mask (a clock) must not leak
        # through the blocks along the mask's edge.
        pixels = np.full((self.rows * BLOCK, self.cols * BLOCK), 255, np.uint8)
        pixels[:height, :width] = valid_mask((height, width), regions)
        valid = np.zeros(self.shape, bool)
        valid[1:-1, 1:-1] = pixels.reshape(self.rows, BLOCK, self.cols, BLOCK).min(axis=(1, 3)) > 0
        self.valid = valid.ravel()  # per padded block: may count as motion


class MotionVectorGate(Gate):
    name = "motion_vectors"

    score_keys = {
        "unknown": "true when the frame has no motion vectors (key frame, or a source without them)",
        "moving": "fraction of the frame covered by blocks that count as moving",
        "blocks": "blocks that count as moving",
        "clusters": "clusters of moving blocks",
        "noise": "the stream's vector noise: RMS length in pixels of the vectors of still blocks",
        "hold": "frames since motion stopped, while they are still passed",
        "gap": "true when passed only because no frame passed for max_gap seconds",
    }

    def __init__(self, cfg: MotionVectorsConfig, regions: RegionsConfig) -> None:
        self.cfg = cfg
        self.regions = regions
        self._grid: _Grid | None = None  # of the last picture size seen
        self._noise2: float | None = None  # mean square length of still blocks' vectors, px^2
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # moving-way blocks, vx, vy
        self._judged: tuple = (None, None, 0)  # the last judged frame's vectors (a weak reference), moving blocks, clusters
        self._hold = 0  # frames still passed after the last motion
        self._last_passed: float | None = None  # frame clock
        self._seen_vectors = False
        self._unknown_run = 0
        self._told_no_vectors = False

    def _grid_of(self, vectors: MotionVectors) -> _Grid:
        if self._grid is None or self._grid.picture_size != (vectors.width, vectors.height):
            self._grid = _Grid(vectors.width, vectors.height, self.regions)
        return self._grid

    def _detect(self, vectors: MotionVectors) -> tuple[np.ndarray | None, int, tuple | None, float]:
        """The blocks that count as moving (None: none), their clusters, what the next frame continues
        (this frame's blocks moving the same way as a neighbour, and their vectors, on the padded
        grid), and this frame's noise sample (mean square length of the still blocks' vectors, px^2).
        Changes no state.

        Every record is touched by a handful of vectorised integer operations on FFmpeg's own
        columns; everything else works on the few vectors above the threshold."""
        records = vectors.records
        mx, my = records["motion_x"], records["motion_y"]
        units2 = mx * mx
        units2 += my * my  # squared length in (1/motion_scale px)^2, exact integers
        scale = max(int(records["motion_scale"][0]), 1)
        clip2 = int(NOISE_CLIP * NOISE_CLIP * scale * scale)
        clipped_sum = int(np.minimum(units2, clip2).sum())
        inter = len(records)
        sample = clipped_sum / (scale * scale) / inter
        noise2 = sample if self._noise2 is None else self._noise2
        threshold2 = max(self.cfg.min_magnitude ** 2, self.cfg.noise_factor ** 2 * noise2)
        fast_vectors = (units2 > threshold2 * scale * scale).nonzero()[0]
        if len(fast_vectors) < self.cfg.min_cluster:  # a still frame, cheaply
            return None, 0, None, sample

        fast_records = records.take(fast_vectors)  # take: a tenth of the cost of records[fast_vectors]
        grid = self._grid_of(vectors)
        block = grid.row_start.take(fast_records["dst_y"], mode="clip") + grid.column.take(fast_records["dst_x"], mode="clip")
        # A block's vector: the mean of its fast partitions' vectors in pixels (where its content was
        # in the reference; a future reference's (source +1) turned round).
        size = grid.valid.size
        count = np.bincount(block, minlength=size)
        per_pixel = fast_records["source"] / (-scale * count[block])
        vx = np.bincount(block, fast_records["motion_x"] * per_pixel, size)
        vy = np.bincount(block, fast_records["motion_y"] * per_pixel, size)
        speed2 = vx * vx + vy * vy
        fast = speed2 > threshold2
        candidates = fast.nonzero()[0]
        around = candidates[:, None] + grid.around
        paired = fast[around]
        if not paired.any():  # scattered noise: no two fast blocks touch
            return None, 0, None, sample

        # Moving the same way as one of its 8 neighbours.
        ddx, ddy = vx[around] - vx[candidates, None], vy[around] - vy[candidates, None]
        tolerance2 = np.maximum(SAME_WAY_PIXELS ** 2,
                                SAME_WAY_FRACTION ** 2 * np.minimum(speed2[around], speed2[candidates, None]))
        same_way = candidates[(paired & (ddx * ddx + ddy * ddy <= tolerance2)).any(axis=1)]
        if not len(same_way):
            return None, 0, None, sample
        moving_way = np.zeros(size, bool)
        moving_way[same_way] = True
        previous = (moving_way, vx, vy)
        if self._previous is None or self._previous[0].size != size:
            return None, 0, previous, sample

        # Continuing the previous frame's motion: around where the content was in the previous
        # picture, a block that moved the same way (within 45 degrees) then.
        before, bvx, bvy = self._previous
        row, col = np.divmod(same_way, grid.padded_cols)
        # np.minimum/np.maximum: np.clip's Python wrapper costs more than the work here
        row = np.minimum(np.maximum(row + np.rint(vy[same_way] / BLOCK).astype(np.intp), 1), grid.rows)
        col = np.minimum(np.maximum(col + np.rint(vx[same_way] / BLOCK).astype(np.intp), 1), grid.cols)
        there = (row * grid.padded_cols + col)[:, None] + grid.with_self
        dot = bvx[there] * vx[same_way, None] + bvy[there] * vy[same_way, None]
        lengths2 = (bvx[there] ** 2 + bvy[there] ** 2) * speed2[same_way, None]
        continues = (before[there] & (dot > 0) & (dot * dot >= CONTINUES_COS2 * lengths2)).any(axis=1)
        counting = same_way[continues]
        counting = counting[grid.valid[counting]]
        if not len(counting):
            return None, 0, previous, sample
        padded = np.zeros(grid.shape, np.uint8)
        padded.flat[counting] = 1
        _, labels, stats, _ = cv2.connectedComponentsWithStats(padded, connectivity=8)
        big = stats[:, cv2.CC_STAT_AREA] >= self.cfg.min_cluster
        big[0] = False  # the background
        moving = big[labels]
        # The noise is what still blocks show: leave the moving blocks' fast vectors out of the sample.
        in_motion = moving.ravel()[block]
        moving_count = np.count_nonzero(in_motion)
        if inter > moving_count:
            moving_sum = int(np.minimum(units2[fast_vectors[in_motion]], clip2).sum())
            sample = (clipped_sum - moving_sum) / (scale * scale) / (inter - moving_count)
        return moving[1:-1, 1:-1], int(big.sum()), previous, sample

    def moving_blocks(self, vectors: MotionVectors) -> tuple[np.ndarray, int]:
        """bool grid (rows, cols) of the blocks that count as moving, and how many clusters they form:
        of the frame just judged when these are its vectors, else as the next frame would be judged."""
        if len(vectors) == 0:
            return np.zeros(vectors.grid[::-1], bool), 0
        judged, moving, clusters = self._judged
        if judged is None or judged() is not vectors:
            moving, clusters = self._detect(vectors)[:2]
        if moving is None:
            moving = np.zeros(vectors.grid[::-1], bool)
        return moving, clusters

    def judge(self, frame: Frame) -> Verdict:
        vectors = frame.motion_vectors
        if vectors is not None and len(vectors) == 0:  # every block intra: nothing to tell motion by
            vectors = None
        if vectors is None:
            self._previous = None  # a key frame: the next frame's vectors cannot continue anything
            self._unknown_run += 1
            if not self._seen_vectors and self._unknown_run >= NO_VECTORS_RUN and not self._told_no_vectors:
                log.info("no motion vectors from this source: the motion-vector gate passes every frame")
                self._told_no_vectors = True
            return self._pass(frame, {"unknown": True, "moving": None, "blocks": None, "clusters": None})
        self._seen_vectors = True
        self._unknown_run = 0

        moving, clusters, self._previous, sample = self._detect(vectors)
        # A weak reference: the vectors refer to the decoded picture, which the decoder's pool wants back.
        self._judged = (weakref.ref(vectors), moving, clusters)
        self._noise2 = sample if self._noise2 is None else self._noise2 + NOISE_RATE * (sample - self._noise2)
        blocks = 0 if moving is None else int(moving.sum())
        area = 0.0 if moving is None else blocks / moving.size
        scores = {"unknown": False, "moving": round(area, 6), "blocks": blocks, "clusters": clusters,
                  "noise": round(float(self._noise2) ** 0.5, 3)}
        if blocks and area >= self.cfg.min_area:
            self._hold = self.cfg.hold_frames
            return self._pass(frame, scores)
        if self._hold > 0:
            self._hold -= 1
            scores["hold"] = self.cfg.hold_frames - self._hold  # 1 for the first still frame after motion
            return self._pass(frame, scores)
        if self.cfg.max_gap > 0 and (self._last_passed is None
                                     or not 0 <= frame.clock - self._last_passed < self.cfg.max_gap):
            scores["gap"] = True
            return self._pass(frame, scores)
        return Verdict(False, scores)

    def _pass(self, frame: Frame, scores: dict) -> Verdict:
        self._last_passed = frame.clock
        return Verdict(True, scores)
