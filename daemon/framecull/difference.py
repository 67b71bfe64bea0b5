"""What changed between a picture and a reference picture: the pixel steps the change gate and
the novelty gate's comparison of stills (framecull.thumbnails) share.

blur -> match the brightness histogram to the reference (a global brightness, contrast or gamma
change maps back onto the reference) -> difference to the reference's neighbourhood of +-SHAKE of
the width (a camera shaking by a few pixels moves edges, which must not count) -> threshold
adapted to the noise and contrast -> drop masked pixels -> open (removes speckle and thin rain
streaks) -> dilate (joins an object's fragments) -> external contours above a minimum area.
"""

from __future__ import annotations

import cv2
import numpy as np

# Robust spread (IQR / 1.349) of an ordinary daylight scene, in grey levels. The configured
# threshold applies at this contrast; flatter scenes (night, fog) get a proportionally lower one.
NORMAL_CONTRAST = 40.0
MIN_CONTRAST_FACTOR = 0.25
# The threshold never falls below this many noise sigmas of the picture-to-reference difference.
NOISE_SIGMAS = 3.5
# Immerkær's noise operator: blind to flat areas and linear gradients; on white noise of sigma s its
# response has sigma 6 s. The median of its magnitude ignores the edges of the scene.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
MEDIAN_OF_ABS_GAUSSIAN = 0.6745

_KERNEL3 = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
# Camera shake tolerated, as a fraction of the picture width: +-2 px at the default analysis width
# of 320 (+-4 px of a 640 px picture).
SHAKE = 1 / 160


def cdf(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    hist = cv2.calcHist([image], [0], valid, [256], [0, 256]).ravel()
    c = np.cumsum(hist)
    return c / max(c[-1], 1.0)


def match_lut(cdf_cur: np.ndarray, cdf_ref: np.ndarray) -> np.ndarray:
    """Float LUT that maps each grey level of the current picture to the reference level of the
    same rank (histogram matching, interpolated to avoid quantisation steps)."""
    mid = (cdf_cur + np.concatenate(([0.0], cdf_cur[:-1]))) / 2
    ranks = np.concatenate(([0.0], cdf_ref))
    levels = np.arange(-0.5, 256.0, 1.0)
    return np.interp(mid, ranks, levels).astype(np.float32)


def spread(c: np.ndarray) -> float:
    q25, q75 = np.searchsorted(c, [0.25, 0.75])
    return float(q75 - q25) / 1.349


def image_noise(gray: np.ndarray) -> float:
    """Sigma of the grain of one gray picture (sensor noise, JPEG, the finest texture), in grey levels."""
    magnitude = np.abs(cv2.filter2D(gray, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1]).ravel()
    middle = magnitude.size // 2  # the median, by partition: np.median costs 3-4 times more
    return float(np.partition(magnitude, middle)[middle]) / (6 * MEDIAN_OF_ABS_GAUSSIAN)


def blur_noise_gain(blur: int) -> float:
    """How much a Gaussian blur of this kernel size scales white noise's sigma."""
    if blur <= 1:
        return 1.0
    kernel = cv2.getGaussianKernel(blur, 0).ravel()
    return float(np.sum(kernel ** 2))  # separable: sqrt(sum k2d^2) = sum k1d^2


def shake_kernel(width: int) -> np.ndarray:
    radius = max(1, round(SHAKE * width))
    return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))


def blur_plane(gray: np.ndarray, blur: int) -> np.ndarray:
    return cv2.GaussianBlur(gray, (blur, blur), 0) if blur > 1 else gray


def envelope_difference(matched: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How far each pixel lies outside the darkest..brightest of the reference around it."""
    return cv2.max(cv2.max(cv2.subtract(matched, high), cv2.subtract(low, matched)), 0.0)


def threshold_for(base: float, reference_spread: float, noise: float) -> float:
    """The grey-level threshold in force: `base` at daylight contrast, lower in flat scenes, never
    under NOISE_SIGMAS noise sigmas."""
    contrast = min(1.0, max(MIN_CONTRAST_FACTOR, reference_spread / NORMAL_CONTRAST))
    return max(base * contrast, NOISE_SIGMAS * noise)


def changed_areas(diff: np.ndarray, threshold: float, valid: np.ndarray, min_area: float) -> tuple[float, list, list]:
    """(fraction of the picture covered by changed areas of at least `min_area` of it, those
    contours, the smaller ones)."""
    changed = cv2.compare(diff, threshold, cv2.CMP_GT)
    changed = cv2.bitwise_and(changed, valid)
    changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, _KERNEL3)
    changed = cv2.dilate(changed, _KERNEL3, iterations=2)
    contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    area = float(changed.shape[0] * changed.shape[1])
    accepted, small, total = [], [], 0.0
    for contour in contours:
        a = cv2.contourArea(contour)
        if a >= min_area * area and a > 0:
            accepted.append(contour)
            total += a
        else:
            small.append(contour)
    return total / area, accepted, small


def stills_difference(picture: np.ndarray, reference: np.ndarray, valid: np.ndarray, blur: int, threshold: float,
                      min_area: float) -> float:
    """Fraction of the picture covered by changed areas between two pictures taken apart (stills),
    each with its own grain: the change gate's rule for stills, for one pair of pictures of one size,
    gray or BGR; in colour a pixel changed when one of its channels did."""
    excess = None
    for cur, ref in zip(_channels(picture), _channels(reference)):
        noise = float(np.hypot(image_noise(cur), image_noise(ref))) * blur_noise_gain(blur)
        cur, ref = blur_plane(cur, blur), blur_plane(ref, blur)
        ref_cdf = cdf(ref, valid)
        matched = cv2.LUT(cur, match_lut(cdf(cur, valid), ref_cdf))
        shake = shake_kernel(cur.shape[1])
        ref32 = ref.astype(np.float32)
        diff = envelope_difference(matched, cv2.erode(ref32, shake), cv2.dilate(ref32, shake))
        ratio = diff * np.float32(1.0 / threshold_for(threshold, spread(ref_cdf), noise))
        excess = ratio if excess is None else cv2.max(excess, ratio)
    return changed_areas(excess, 1.0, valid, min_area)[0]


def _channels(picture: np.ndarray) -> list[np.ndarray]:
    return cv2.split(picture) if picture.ndim == 3 else [picture]

