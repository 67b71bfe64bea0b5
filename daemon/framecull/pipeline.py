"""Gates in order, pacing, heartbeat and budgets: one Decision per input frame."""

from __future__ import annotations

import bisect
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from framecull.config import BudgetConfig, Config, PacingConfig
from framecull.frame import BadPicture, Frame
from framecull.gates import Gate

log = logging.getLogger("framecull.pipeline")


@dataclass
class Decision:
    index: int
    timestamp: float
    kept: bool
    stage: str  # the gate that dropped the frame, the last gate it passed when kept, pacing, budget,
    # heartbeat, or "store" (chosen, but it could not be written)
    scores: dict[str, dict] = field(default_factory=dict)  # gate name -> that gate's scores
    path: str | None = None  # the stored image, when kept
    file: str | None = None  # the input file, for frames read from files (stills)
    camera: str | None = None  # the camera the input file's name tells

    @classmethod
    def for_frame(cls, frame: Frame) -> "Decision":
        """A frame's decision before any gate judged it."""
        return cls(frame.index, frame.timestamp, kept=False, stage="source",
                   file=getattr(frame, "file", None), camera=getattr(frame, "camera", None))

    def to_json(self) -> dict:
        line = {
            "index": self.index,
            "timestamp": round(self.timestamp, 6),
            "kept": self.kept,
            "stage": self.stage,
            "scores": self.scores,
            "path": self.path,
        }
        if self.file is not None:
            line.update(file=self.file, camera=self.camera)
        return line


class Budget:
    """Caps on kept frames per rolling hour and rolling day (0 = no cap), counting the frames kept
    before this pipeline (`kept_before`: their capture times, from the memory or the store; see
    framecull.runner.kept_before), so that a reload or a restart gives no fresh allowance."""

    def __init__(self, per_hour: int, per_day: int, kept_before: Iterable[float] = ()) -> None:
        self.per_hour = per_hour
        self.per_day = per_day
        self._kept_before: list[float] | None = sorted(kept_before)
        self._times: deque[float] = deque()

    def _place_kept_before(self, frame: Frame) -> None:
        # Placed on the frame clock by the first frame judged here. Capture times up to a day later
        # than that frame's (a clock set back at boot: a Pi without a clock restores the time it
        # last saved) count as that frame's: never a fresh allowance, at worst a stricter one.
        now, offset = frame.timestamp, frame.clock - frame.timestamp
        self._times.extend(min(t, now) + offset for t in self._kept_before if now - 86400 < t <= now + 86400)
        self._kept_before = None

    def allows(self, frame: Frame) -> bool:
        if self._kept_before is not None:
            self._place_kept_before(frame)
        t = frame.clock
        while self._times and self._times[0] <= t - 86400:
            self._times.popleft()
        if self.per_day and len(self._times) >= self.per_day:
            return False
        last_hour = len(self._times) - bisect.bisect_right(self._times, t - 3600)
        return not (self.per_hour and last_hour >= self.per_hour)

    def record(self, frame: Frame) -> None:
        self._times.append(frame.clock)


class Pipeline:
    """Judges each frame through the gates, cheapest first, and decides what is kept.

    Keeping is the caller's: `commit(frame, decision) -> bool` stores and remembers a frame the
    pipeline chose, and says whether it was stored (see framecull.runner, which owns the failure
    policy). The pipeline never reads a gate's scores: pacing ranks candidates by Verdict.rank.

    Time: pacing, heartbeat and budgets measure Frame.clock (never backwards; see
    framecull.sources.steady), not the capture time, which is only a label and may jump.

    A picture outside the bounds of framecull.frame (BadPicture) is dropped at stage "source".

    Event pacing (`min_interval` > 0): while candidates keep coming, at most one frame is kept
    per `min_interval` seconds: the first candidate opens a window, the candidate
    of the window with the highest rank is kept when it closes, the others end at stage "pacing".
    Decisions are held back while a window is open, so they still come out in input order.

    Heartbeat (`heartbeat` > 0): when nothing was kept for that long, one frame is judged with
    the cheap gates' verdicts recorded but not obeyed, so quiet lighting states reach novelty.

    Budgets: at most max_per_hour / max_per_day kept frames per rolling hour / day (stage "budget").
    """

    def __init__(self, gates: list[Gate], pacing: PacingConfig, budget: BudgetConfig,
                 commit: Callable[[Frame, Decision], bool], kept_before: Iterable[float] = ()) -> None:
        """kept_before: capture times of the frames kept before (see Budget)."""
        self.gates = gates
        self.min_interval = pacing.min_interval
        self.heartbeat = pacing.heartbeat
        self.budget = Budget(budget.max_per_hour, budget.max_per_day, kept_before)
        self.commit = commit
        self._held: list[Decision] = []
        self._window_end: float | None = None
        self._best: tuple[Frame, Decision, float] | None = None
        self._last_kept: float | None = None

    def push(self, frame: Frame) -> list[Decision]:
        """Judge one frame; returns the decisions that are final now, in input order."""
        ready: list[Decision] = []
        if self._window_end is not None and frame.clock >= self._window_end:
            ready += self.flush()
        decision, rank = self._judge(frame)
        if rank is not None and self.min_interval <= 0:
            self._keep(frame, decision)
        elif rank is not None:
            if self._window_end is None:
                self._window_end = frame.clock + self.min_interval
            if self._best is None or rank > self._best[2]:
                if self._best is not None:
                    self._best[1].stage = "pacing"
                self._best = (frame, decision, rank)
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
            self._keep(frame, decision)
        ready, self._held = self._held, []
        self._best, self._window_end = None, None
        return ready

    @property
    def pending(self) -> bool:
        """Whether a pacing window is open (decisions held back until flush())."""
        return self._window_end is not None

    def _judge(self, frame: Frame) -> tuple[Decision, float | None]:
        """The frame's decision so far, and its rank when it is a candidate (None: dropped)."""
        if self._last_kept is None:
            self._last_kept = frame.clock
        heartbeat = self.heartbeat > 0 and frame.clock - self._last_kept >= self.heartbeat
        if heartbeat:
            self._last_kept = frame.clock  # one attempt per heartbeat period, kept or not
        decision = Decision.for_frame(frame)
        rank = 0.0
        for gate in self.gates:
            try:
                verdict = gate.judge(frame)
            except BadPicture as exc:
                log.warning("frame %d dropped: %s", frame.index, exc, extra={"STAGE": "source"})
                decision.scores, decision.stage = {}, "source"
                return decision, None
            decision.scores[gate.name] = verdict.scores
            decision.stage = gate.name
            if not verdict.passed and not (heartbeat and gate.cheap):
                return decision, None
            if verdict.rank is not None:
                rank = verdict.rank
        if heartbeat:
            decision.stage = "heartbeat"
        return decision, rank

    def _keep(self, frame: Frame, decision: Decision) -> None:
        if not self.budget.allows(frame):
            decision.stage = "budget"
            return
        if not self.commit(frame, decision):
            return
        decision.kept = True
        self._last_kept = frame.clock
        self.budget.record(frame)

    def save(self) -> None:
        """Save what the gates hold on disk (the novelty memory's index), without closing."""
        for gate in self.gates:
            gate.save()

    def close(self) -> None:
        for gate in self.gates:
            gate.close()


def build_gates(config: Config, memory_root: Path) -> list[Gate]:
    """The configured gates, cheapest first; the novelty gate's memory lives in `memory_root`."""
    from framecull.gates.change import ChangeGate
    from framecull.gates.motion import MotionVectorGate

    gates: list[Gate] = []
    if config.gates.motion_vectors.enabled:
        gates.append(MotionVectorGate(config.gates.motion_vectors, config.regions))
    gates.append(ChangeGate(config.gates.change, config.regions, config.lighting))
    novelty = config.gates.novelty
    if novelty.enabled:
        from framecull.gates.novelty import NoveltyGate, load_embedder, open_memory
        from framecull.thumbnails import StillsComparison

        embedder = load_embedder(novelty)
        memory = open_memory(novelty, embedder, memory_root)
        gates.append(NoveltyGate(novelty, config.lighting, embedder, memory,
                                 StillsComparison(config.gates.change, config.regions)))
    return gates
