"""Gates: each answers one question about a frame and knows nothing of the others.

A gate has a `name` (the stage written in decisions), declares the keys of its scores once
(`score_keys`: key -> meaning; reports, preview and calibrate read them from there) and judges
a frame with `judge(frame) -> Verdict`. A Verdict carries what pacing needs: `rank`, how far
past its bar a candidate is (the pipeline keeps the candidate with the highest rank of the last
gate that ranks), so the pipeline never reads a gate's scores.

`cheap` gates are skipped by a heartbeat frame (their verdict is recorded, not obeyed), which
goes on to the gates that decide novelty. `on_kept(frame, path)` tells a gate the frame was
stored (the novelty gate remembers only what was really kept); `forgotten(images)` names the
stored images it was never told of (a crash between storing and remembering), which the runner
tells it at start; `save()` writes what it holds to disk and `close()` releases it (the novelty
gate's memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from framecull.frame import Frame


@dataclass
class Verdict:
    passed: bool
    scores: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    rank: float | None = None  # how strongly it passed (larger: more worth keeping); None: not ranked


class Gate:
    name = "gate"
    cheap = True
    score_keys: dict[str, str] = {}

    def judge(self, frame: Frame) -> Verdict:
        raise NotImplementedError

    def on_kept(self, frame: Frame, path: str | None) -> None:
        pass

    def forgotten(self, images: list[Path]) -> list[Path]:
        """Of the stored images (oldest first), those this gate should have been told of by
        on_kept and was not. A gate that remembers nothing forgets nothing."""
        return []

    def kept_times(self, days: float) -> list[float] | None:
        """Capture times of the frames kept in the `days` before the newest one, as this gate
        remembers them; None: it remembers none."""
        return None

    def save(self) -> None:
        pass

    def close(self) -> None:
        pass
