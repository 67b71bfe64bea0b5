"""Change gate: did enough of the (unmasked) picture change since the reference frame?

Per frame, on the small gray analysis plane:
  blur -> match the brightness histogram to the reference (a global brightness, contrast or
  gamma change, an IR day/night switch, maps back onto the reference) -> difference to the
  reference's neighbourhood of +-SHAKE of the width (how far a pixel lies outside the darkest..brightest of the
  reference around it: a camera shaking by a few pixels moves edges, which must not count) ->
  threshold adapted to the measured noise and contrast -> drop masked pixels -> open (removes
  speckle and thin rain streaks) -> dilate (joins an object's fragments) -> external contours
  -> sum the areas of contours above min_area -> candidate when the sum reaches min_changed.
The pixel steps live in framecull.difference: the novelty gate compares stills with kept ones
by the same rule.

Stills (frames more than STILLS_GAP apart: a snapshot every few minutes) are a regime of their own:
between two of them the whole scene may really change (dusk to night, floodlights, snow), so a
broad difference is not evidence of noise. The noise floor of the threshold then comes from each
picture's own grain (image_noise), not from the difference, and the novelty gate decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from framecull.config import ChangeConfig, LightingConfig, RegionsConfig
from framecull.difference import (NORMAL_CONTRAST, blur_noise_gain, blur_plane, cdf, changed_areas,
                                  envelope_difference, image_noise, match_lut, shake_kernel, spread, threshold_for)
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.lighting import lighting_change
from framecull.regions import valid_mask
from framecull.stills import STILLS_GAP

# For |N(0, s)| the 25th percentile is 0.3186 s; a low quantile stays a noise measure until
# three quarters of the frame really changed.
Q25_OF_ABS_GAUSSIAN = 0.3186


@dataclass
class ChangeMeasure:
    changed: float  # fraction of the frame covered by accepted contours
    threshold: float  # effective grey-level threshold used
    noise: float  # sigma of the frame-to-reference difference
    contours: list  # accepted contours (analysis-plane coordinates)
    small: list  # contours below min_area
    light: float  # brightness change against the reference: max(cur/ref, ref/cur) - 1
    first: bool  # no reference yet
    stills: bool = False  # far apart from the frame before: the noise comes from the pictures' grain


class ChangeGate(Gate):
    name = "change"
    score_keys = {
        "changed": "fraction of the frame covered by changed areas that count",
        "threshold": "grey-level threshold in force (adapted to noise and contrast)",
        "noise": "noise sigma of the difference to the reference, in grey levels",
        "contours": "changed areas that count",
        "light": "change of mean brightness against the reference (a ratio, minus 1)",
        "first": "true for the first frame (no reference yet)",
        "stills": "true when the frame came long after the one before (stills): the noise is each picture's grain",
    }

    def __init__(self, cfg: ChangeConfig, regions: RegionsConfig, lighting: LightingConfig) -> None:
        self.cfg = cfg
        self.regions = regions
        self.light_change = lighting.min_change
        self._valid: np.ndarray | None = None
        self._ref: np.ndarray | None = None  # float32 blurred reference
        self._ref_cdf: np.ndarray | None = None
        self._ref_spread = NORMAL_CONTRAST
        self._ref_mean = 0.0
        self._ref_gray: np.ndarray | None = None  # the reference's unblurred plane (its grain, for stills)
        self._ref_noise: float | None = None
        self._last_time: float | None = None  # clock of the frame judged last

    def _prepare(self, gray: np.ndarray) -> np.ndarray:
        if self._valid is None or self._valid.shape != gray.shape:
            self._valid = valid_mask(gray.shape, self.regions, grow=self.cfg.blur)
            self._shake = shake_kernel(gray.shape[1])
            self._ref = None
        return blur_plane(gray, self.cfg.blur)

    def _set_reference(self, blurred: np.ndarray, keep: np.ndarray | None = None) -> None:
        self._ref = blurred.astype(np.float32) if keep is None else keep
        self._ref_low = cv2.erode(self._ref, self._shake)
        self._ref_high = cv2.dilate(self._ref, self._shake)
        self._ref_cdf = cdf(blurred, self._valid)
        self._ref_spread = spread(self._ref_cdf)
        self._ref_mean = cv2.mean(blurred, self._valid)[0]

    def measure(self, frame: Frame) -> tuple[ChangeMeasure, np.ndarray]:
        """The change of `frame` against the reference, and the frame's blurred plane."""
        blurred = self._prepare(frame.gray)
        if self._ref is None:
            return ChangeMeasure(1.0, 0.0, 0.0, [], [], 0.0, first=True), blurred
        light = lighting_change(cv2.mean(blurred, self._valid)[0], self._ref_mean)

        matched = cv2.LUT(blurred, match_lut(cdf(blurred, self._valid), self._ref_cdf))
        diff = envelope_difference(matched, self._ref_low, self._ref_high)

        stills = self._last_time is not None and abs(frame.clock - self._last_time) > STILLS_GAP
        if stills:
            noise = self._stills_noise(frame.gray)
        else:
            sample = diff[::3, ::3][self._valid[::3, ::3] > 0]
            k = len(sample) // 4
            noise = float(np.partition(sample, k)[k]) / Q25_OF_ABS_GAUSSIAN if k else 0.0
        threshold = threshold_for(self.cfg.threshold, self._ref_spread, noise)
        changed, accepted, small = changed_areas(diff, threshold, self._valid, self.cfg.min_area)
        return ChangeMeasure(changed, threshold, noise, accepted, small, light, first=False,
                             stills=stills), blurred

    def _stills_noise(self, gray: np.ndarray) -> float:
        """Noise sigma of the difference of two independent pictures, each with its own grain."""
        own = image_noise(gray)
        if self._ref_noise is None:
            self._ref_noise = image_noise(self._ref_gray) if self._ref_gray is not None else own
        return float(np.hypot(own, self._ref_noise)) * blur_noise_gain(self.cfg.blur)

    def judge(self, frame: Frame) -> Verdict:
        m, blurred = self.measure(frame)
        light_step = 0 < self.light_change <= m.light
        passed = m.first or m.changed >= self.cfg.min_changed or light_step
        reference = self.cfg.reference
        self._last_time = frame.clock
        if m.first or reference == "previous" or (passed and reference == "last_judged"):
            self._set_reference(blurred)
            self._ref_gray, self._ref_noise = frame.gray, None
        elif reference == "background":
            cv2.accumulateWeighted(blurred.astype(np.float32), self._ref, self.cfg.background_rate)
            self._set_reference(cv2.convertScaleAbs(self._ref), keep=self._ref)
        scores = {
            "changed": round(m.changed, 6),
            "threshold": round(m.threshold, 2),
            "noise": round(m.noise, 3),
            "contours": len(m.contours),
            "light": round(m.light, 4),
        }
        if m.first:
            scores["first"] = True
        if m.stills:
            scores["stills"] = True
        return Verdict(passed, scores, rank=m.changed)
