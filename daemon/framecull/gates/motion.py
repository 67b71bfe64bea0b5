"""Motion-vector gate: did enough of the (unmasked) picture move, by the encoder's own vectors?

Per frame, on the 16x16 macroblock grid, with no pixel work at all:
  a block moves when its vector (the mean of its partitions' vectors) is longer than
  min_magnitude pixels, or when the encoder coded it without a vector (intra block in a P/B
  frame: new content, e.g. something appearing)
  -> keep a moving block only when a neighbour (8-connected) moves the same way: sensor noise
     gives vectors too, but scattered ones that point anywhere
  -> drop blocks not wholly inside the border crop and outside the masks of [regions]
  -> drop clusters of fewer than min_cluster blocks
  -> motion when the remaining blocks cover min_area of the frame.

The gate leans towards recall: it never waits for confirmation, keeps passing `hold_frames`
frames after motion stops (an event's last frames reach the next gates), and passes frames whose
motion is unknown (key frames; sources without vectors).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from framecull.config import MotionVectorsConfig, RegionsConfig
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.regions import any_region, valid_mask
from framecull.motion_vectors import BLOCK, INTRA, MOTION_VECTOR_DTYPE

log = logging.getLogger("framecull.gate.motion_vectors")

# Two neighbours move the same way when their vectors differ by at most this many pixels, or by
# this fraction of the shorter one (a walking person's limbs and torso do not move as one).
SAME_WAY_PIXELS = 1.0
SAME_WAY_FRACTION = 0.5

# Unknown frames in a row, before any vector was seen, that mean the source has no vectors
# (one key frame alone is normal).
NO_VECTORS_RUN = 3


def _picture_size(vectors: np.ndarray, analysis_shape: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the coded picture: the width is whole macroblocks (1920, 1280, 640,
    320...), the height follows from the analysis plane's aspect (1080, not the padded 1088)."""
    width = (int(vectors["x"].max()) // BLOCK + 1) * BLOCK
    height = round(width * analysis_shape[0] / analysis_shape[1])
    return height, width


class MotionVectorGate(Gate):
    name = "motion_vectors"

    score_keys = {
        "unknown": "true when the frame has no motion vectors (key frame, or a source without them)",
        "moving": "fraction of the frame covered by blocks that count as moving",
        "blocks": "blocks that count as moving",
        "clusters": "clusters of moving blocks",
        "hold": "frames since motion stopped, while they are still passed",
    }

    def __init__(self, cfg: MotionVectorsConfig, regions: RegionsConfig) -> None:
        self.min_magnitude = cfg.min_magnitude
        self.min_area = cfg.min_area
        self.min_cluster = cfg.min_cluster
        self.hold_frames = cfg.hold_frames
        self.count_intra = cfg.count_intra
        self.regions = regions
        self._valid: np.ndarray | None = None  # uint8 per block: 255 where it may count as motion
        # Masks are drawn on the picture, whose height (1080) the padded block grid (1088) hides.
        self._needs_picture_size = any_region(regions)
        self._grid: tuple[int, int] | None = None
        self._picture_size: tuple[int, int] | None = None  # (height, width) in pixels
        self._hold = 0  # frames still passed after the last motion
        self._seen_vectors = False
        self._unknown_run = 0
        self._told_no_vectors = False

    def _valid_blocks(self, rows: int, cols: int) -> np.ndarray:
        if self._valid is None or self._valid.shape != (rows, cols):
            # Drawn on the picture, then padded to whole macroblocks (1080 -> 1088 rows): the
            # picture's height is the grid's width times the analysis plane's aspect.
            height, width = self._picture_size or (rows * BLOCK, cols * BLOCK)
            pixels = np.full((rows * BLOCK, cols * BLOCK), 255, np.uint8)
            pixels[:height, :width] = valid_mask((height, width), self.regions)[: rows * BLOCK, : cols * BLOCK]
            # A block counts only when all its pixels may count: motion inside a mask
            # (a clock) must not leak through the blocks along the mask's edge.
            self._valid = pixels.reshape(rows, BLOCK, cols, BLOCK).min(axis=(1, 3))
        return self._valid

    def moving_blocks(self, vectors: np.ndarray) -> tuple[np.ndarray, int]:
        """bool grid (rows, cols) of the blocks that count as moving, and how many clusters they form."""
        if vectors.dtype != MOTION_VECTOR_DTYPE:
            raise TypeError(f"motion vectors must have framecull.motion_vectors.MOTION_VECTOR_DTYPE, got {vectors.dtype}")
        if len(vectors) == 0:
            return np.zeros((0, 0), bool), 0
        x, y, source, dx, dy = vectors["x"], vectors["y"], vectors["source"], vectors["dx"], vectors["dy"]
        # Blocks are at most a macroblock and never straddle one.
        cols, rows = int(x.max()) // BLOCK + 1, int(y.max()) // BLOCK + 1
        intra = source == INTRA
        min_speed2 = self.min_magnitude ** 2
        fast_vectors = (dx * dx + dy * dy > min_speed2) & ~intra
        if not (fast_vectors.any() or (self.count_intra and intra.any())):
            return np.zeros((rows, cols), bool), 0  # the common still frame, cheaply
        if min(x.min(), y.min()) < 0:
            raise ValueError("motion vectors: a block starts left of or above the picture")

        # Block indices in a grid padded by one block all round, so that every block has 8 neighbours.
        padded_cols, size = cols + 2, (rows + 2) * (cols + 2)
        block = (y // BLOCK + 1).astype(np.intp) * padded_cols + x // BLOCK + 1
        # A block's motion: the mean of its vectors (partitions, both directions of a B block), those
        # from a future reference turned around, so that noise in one small partition averages out.
        # Only blocks with a fast vector can have a fast mean.
        with_fast = np.zeros(size, bool)
        with_fast[block[fast_vectors]] = True
        members = with_fast[block] & ~intra
        forward = np.where(source[members] > 0, -1.0, 1.0)
        count = np.maximum(np.bincount(block[members], minlength=size), 1)
        vx = np.bincount(block[members], dx[members] * forward, size) / count
        vy = np.bincount(block[members], dy[members] * forward, size) / count
        speed2 = vx * vx + vy * vy
        fast = speed2 > min_speed2
        new = np.zeros(size, bool)
        if self.count_intra:
            new[block[intra]] = True
        candidates = np.flatnonzero(fast | new)

        # A candidate counts when one of its 8 neighbours moves the same way (or is new content).
        around = candidates[:, None] + np.array([-padded_cols - 1, -padded_cols, -padded_cols + 1, -1, 1,
                                                 padded_cols - 1, padded_cols, padded_cols + 1])
        ddx, ddy = vx[around] - vx[candidates, None], vy[around] - vy[candidates, None]
        tolerance2 = np.maximum(SAME_WAY_PIXELS ** 2,
                                SAME_WAY_FRACTION ** 2 * np.minimum(speed2[around], speed2[candidates, None]))
        same_way = fast[around] & fast[candidates, None] & (ddx * ddx + ddy * ddy <= tolerance2)
        supported = (same_way | new[around] | (new[candidates, None] & fast[around])).any(axis=1)

        grid = np.zeros(size, np.uint8)
        grid[candidates[supported]] = 1
        grid = grid.reshape(rows + 2, padded_cols)[1:-1, 1:-1] & self._valid_blocks(rows, cols)
        if not grid.any():
            return grid.astype(bool), 0
        _, labels, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
        big = stats[:, cv2.CC_STAT_AREA] >= self.min_cluster
        big[0] = False  # the background
        return big[labels], int(big.sum())

    def judge(self, frame: Frame) -> Verdict:
        vectors = frame.motion_vectors
        if vectors is not None and len(vectors) and self._needs_picture_size:
            grid = (int(vectors["y"].max()) // BLOCK + 1, int(vectors["x"].max()) // BLOCK + 1)
            if grid != self._grid:  # once per stream: the only time a dropped frame builds its gray plane
                self._grid, self._valid = grid, None
                self._picture_size = _picture_size(vectors, frame.gray.shape)
        if vectors is None:
            self._unknown_run += 1
            if not self._seen_vectors and self._unknown_run >= NO_VECTORS_RUN and not self._told_no_vectors:
                log.info("no motion vectors from this source: the motion-vector gate passes every frame")
                self._told_no_vectors = True
            return Verdict(True, {"unknown": True, "moving": None, "blocks": None, "clusters": None})
        self._seen_vectors = True
        self._unknown_run = 0

        grid, clusters = self.moving_blocks(vectors)
        blocks = int(grid.sum())
        area = blocks / grid.size if grid.size else 0.0
        scores = {"unknown": False, "moving": round(area, 6), "blocks": blocks, "clusters": clusters}
        if blocks and area >= self.min_area:
            self._hold = self.hold_frames
            return Verdict(True, scores)
        if self._hold > 0:
            self._hold -= 1
            scores["hold"] = self.hold_frames - self._hold  # 1 for the first still frame after motion
            return Verdict(True, scores)
        return Verdict(False, scores)
