"""Gates: each answers one question about a frame and knows nothing of the others.

A gate has a `name` (the stage written in decisions) and `judge(frame) -> Verdict`.
`on_kept(frame, path)` tells it the pipeline stored the frame (the novelty gate remembers only
what was really kept); `reset()` forgets per-stream state such as a reference frame;
`save()` writes what it holds to disk and `close()` releases it (the novelty gate's index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from framecull.frame import Frame


@dataclass
class Verdict:
    passed: bool
    scores: dict[str, float | int | str | None] = field(default_factory=dict)


class Gate:
    name = "gate"

    def judge(self, frame: Frame) -> Verdict:
        raise NotImplementedError

    def on_kept(self, frame: Frame, path: str | None) -> None:
        pass

    def reset(self) -> None:
        pass

    def save(self) -> None:
        pass

    def close(self) -> None:
        pass
