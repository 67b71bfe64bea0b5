"""The lighting state of a frame: its mean grey level, and how far two of them are apart."""

from __future__ import annotations

# Below this mean grey level a scene is simply dark: the ratio of two near-black means is noise.
DARKEST_MEAN = 10.0


def lighting_change(mean: float, reference_mean: float) -> float:
    """How far a mean grey level moved from the reference's, as a ratio either way, minus 1."""
    low, high = sorted((max(mean, DARKEST_MEAN), max(reference_mean, DARKEST_MEAN)))
    return high / low - 1.0
