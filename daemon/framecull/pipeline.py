"""source -> gates in order -> store; one Decision per input frame."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
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


class Budget:
    """Caps on kept frames per rolling hour and rolling day (0 = no cap)."""

    def __init__(self, per_hour: int = 0, per_day: int = 0) -> None:
        self.per_hour = per_hour
        self.per_day = per_day
        self._times: deque[float] = deque()

    def allows(self, t: float) -> bool:
        while self._times and self._times[0] <= t - 86400:
            self._times.popleft()
        if self.per_day and len(self._times) >= self.per_day:
            return False
        last_hour = len(self._times) - bisect.bisect_right(self._times, t - 3600)
        return not (self.per_hour and last_hour >= self.per_hour)

    def record(self, t: float) -> None:
        self._times.append(t)


class Pipeline:
    """Runs each frame through the gates, cheapest first, and stores the survivors.

    `store` is anything with `save(frame, decision) -> str | None` (None: the write failed and
    the frame is lost to storage), or None to judge without writing.

    Event pacing (`min_interval` > 0): while candidates keep coming, at most one frame is kept
    per `min_interval` seconds of capture time: the first candidate opens a window, the most
    novel candidate of the window is kept when it closes, the others end at stage "pacing".
    Decisions are held back while a window is open, so they still come out in input order.

    Heartbeat (`heartbeat` > 0): when nothing was kept for that long, one frame skips the
    cheap gates and goes to the last gate (novelty), so quiet lighting states reach the dataset.
    """

    def __init__(self, gates: list[Gate], store=None, min_interval: float = 0.0,
                 heartbeat: float = 0.0, budget: Budget | None = None) -> None:
        self.gates = gates
        self.store = store
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.budget = budget
        self._held: list[Decision] = []
        self._window_end: float | None = None
        self._best: tuple[Frame, Decision, float] | None = None
        self._last_kept: float | None = None

    def run(self, frames: Iterable[Frame]) -> Iterator[Decision]:
        for frame in frames:
            yield from self.push(frame)
        yield from self.flush()

    def push(self, frame: Frame) -> list[Decision]:
        """Judge one frame; returns the decisions that are final now, in input order."""
        ready: list[Decision] = []
        if self._window_end is not None and frame.timestamp >= self._window_end:
            ready += self.flush()
        decision, candidate = self._judge(frame)
        if candidate and self.min_interval <= 0:
            self._commit(frame, decision)
        elif candidate:
            if self._window_end is None:
                self._window_end = frame.timestamp + self.min_interval
            score = _novelty_score(decision)
            if self._best is None or score > self._best[2]:
                if self._best is not None:
                    self._best[1].stage = "pacing"
                self._best = (frame, decision, score)
            else:
                decision.stage = "pacing"
        if self._window_end is None:
            ready.append(decision)
        else:
            self._held.append(decision)
        return ready

    def flush(self) -> list[Decision]:
        """Close the pacing window: keep its best candidate, release the held decisions."""
        if self._best is not None:
            frame, decision, _ = self._best
            self._commit(frame, decision)
        ready, self._held = self._held, []
        self._best, self._window_end = None, None
        return ready

    def _judge(self, frame: Frame) -> tuple[Decision, bool]:
        if self._last_kept is None:
            self._last_kept = frame.timestamp
        heartbeat = self.heartbeat > 0 and frame.timestamp - self._last_kept >= self.heartbeat
        if heartbeat:
            self._last_kept = frame.timestamp  # one attempt per heartbeat period, kept or not
        decision = Decision(frame.index, frame.timestamp, kept=False, stage="source")
        for position, gate in enumerate(self.gates):
            verdict = gate.judge(frame)
            decision.scores[gate.name] = verdict.scores
            decision.stage = gate.name
            last = position == len(self.gates) - 1
            if not verdict.passed and not (heartbeat and not last):
                return decision, False
        if heartbeat:
            decision.stage = "heartbeat"
        return decision, True

    def _commit(self, frame: Frame, decision: Decision) -> None:
        if self.budget is not None and not self.budget.allows(frame.timestamp):
            decision.stage = "budget"
            return
        path = None
        if self.store is not None:
            path = self.store.save(frame, decision)
            if path is None:
                decision.stage = "store"
                return
        decision.kept, decision.path = True, path
        self._last_kept = frame.timestamp
        if self.budget is not None:
            self.budget.record(frame.timestamp)
        for gate in self.gates:
            gate.on_kept(frame, path)

    def reset(self) -> None:
        for gate in self.gates:
            gate.reset()

    @property
    def pending(self) -> bool:
        """Whether a pacing window is open (decisions held back until flush())."""
        return self._window_end is not None

    def save(self) -> None:
        """Save what the gates hold on disk (the novelty memory's index), without closing."""
        for gate in self.gates:
            gate.save()

    def close(self) -> None:
        for gate in self.gates:
            gate.close()


def _novelty_score(decision: Decision) -> float:
    """The pacing rank of a candidate: the novelty gate's score, else the changed area."""
    novelty = decision.scores.get("novelty") or {}
    if novelty.get("score") is not None:
        return float(novelty["score"])
    return float((decision.scores.get("change") or {}).get("changed", 0.0))


def build_pipeline(config, store=None, memory_root: Path | None = None, rebuild: bool = False) -> Pipeline:
    """The configured pipeline: gates cheapest first, pacing, heartbeat and budgets.

    The novelty gate's memory lives in `memory_root` (default: the store root).
    """
    from framecull.gates.change import ChangeGate
    from framecull.gates.motion import MotionVectorGate

    gates: list[Gate] = []
    mv = config.gates.motion_vectors
    if mv.enabled:
        gates.append(MotionVectorGate(mv.min_magnitude, mv.min_area, mv.min_cluster, mv.hold_frames,
                                      mv.count_intra, regions=config.gates.change))
    gates.append(ChangeGate(config.gates.change))
    novelty = config.gates.novelty
    if novelty.enabled:
        from framecull.gates.novelty import NoveltyGate, load_embedder, open_memory

        embedder = load_embedder(novelty)
        memory = open_memory(novelty, embedder, memory_root or config.store_root, rebuild)
        gates.append(NoveltyGate(novelty, embedder, memory, light_change=config.gates.change.light_change))
    budget = Budget(config.store.max_per_hour, config.store.max_per_day)
    return Pipeline(gates, store, min_interval=novelty.min_interval,
                    heartbeat=config.store.heartbeat, budget=budget)
