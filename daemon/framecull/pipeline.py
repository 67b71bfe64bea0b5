"""source -> gates in order -> store; one Decision per input frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from framecull.frame import Frame
from framecull.gates import Gate


@dataclass
class Decision:
    index: int
    timestamp: float
    kept: bool
    stage: str  # the gate that dropped the frame, the last gate it passed when kept, or "store"
    scores: dict[str, dict] = field(default_factory=dict)  # gate name -> that gate's scores
    path: str | None = None  # the stored image, when kept

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "timestamp": round(self.timestamp, 6),
            "kept": self.kept,
            "stage": self.stage,
            "scores": self.scores,
            "path": self.path,
        }


class Pipeline:
    """Runs each frame through the gates, cheapest first, and stores the survivors.

    `store` is anything with `save(frame, decision) -> str | None` (None: the write failed
    and the frame is lost to storage), or None to judge without writing.
    """

    def __init__(self, gates: list[Gate], store=None) -> None:
        self.gates = gates
        self.store = store

    def judge(self, frame: Frame) -> Decision:
        decision = Decision(frame.index, frame.timestamp, kept=False, stage="source")
        for gate in self.gates:
            verdict = gate.judge(frame)
            decision.scores[gate.name] = verdict.scores
            decision.stage = gate.name
            if not verdict.passed:
                return decision
        decision.kept = True
        if self.store is not None:
            decision.path = self.store.save(frame, decision)
            if decision.path is None:
                decision.kept = False
                decision.stage = "store"
                return decision
        for gate in self.gates:
            gate.on_kept(frame)
        return decision

    def run(self, frames: Iterable[Frame]) -> Iterator[Decision]:
        for frame in frames:
            yield self.judge(frame)

    def reset(self) -> None:
        for gate in self.gates:
            gate.reset()


def build_gates(config) -> list[Gate]:
    """The configured gates, cheapest first."""
    from framecull.gates.change import ChangeGate

    return [ChangeGate(config.gates.change)]
