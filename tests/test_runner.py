"""The runner and the pipeline with stub gates: pacing, heartbeat, budgets, idle flushing and the
failure policy, without ONNX or FAISS (the fast layer: `make test-fast`). Frames are tiny planes,
stored frames are real JPEG files in tmp_path, the storage faults real disks."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from conftest import fill
from framecull.config import Config
from framecull.frame import Frame
from framecull.gates import Gate, Verdict
from framecull.memory import Memory
from framecull.runner import Collect, Runner



class Scripted(Gate):
    """Passes the frames whose index is in `passing`, ranked by `ranks` (index -> rank)."""

    def __init__(self, name: str, passing, ranks=None, cheap=True) -> None:
        self.name, self.passing, self.ranks, self.cheap = name, set(passing), ranks or {}, cheap
        self.kept: list[int] = []

    def judge(self, frame: Frame) -> Verdict:
        return Verdict(frame.index in self.passing, {"seen": True}, rank=self.ranks.get(frame.index))

    def on_kept(self, frame: Frame, path: str | None) -> None:
        self.kept.append(frame.index)


class Forgetful(Gate):
    """A memory whose disk fails: every commit raises, as SQLite does on a full disk."""

    name = "novelty"
    cheap = False

    def judge(self, frame: Frame) -> Verdict:
        return Verdict(True, {}, rank=1.0)

    def on_kept(self, frame: Frame, path: str | None) -> None:
        raise sqlite3.OperationalError("database or disk is full")


def frames(n: int, fps: float = 1.0, start: float = 1_700_000_000.0) -> list[Frame]:
    return [Frame(i, start + i / fps, np.full((12, 16), i % 250, np.uint8), image=np.full((24, 32, 3), i % 250, np.uint8))
            for i in range(n)]


def config(**sections) -> Config:
    return Config.model_validate({"camera": "stub", **sections})


def run(cfg: Config, gates, items, root: Path, write: bool = False) -> tuple[list, Runner]:
    decisions = Collect()
    with Runner(cfg, root, write=write, sinks=[decisions], gates=gates) as runner:
        runner.run(items)
    return decisions.decisions, runner


def test_every_frame_gets_one_decision_in_input_order(tmp_path):
    gate = Scripted("change", passing=range(0, 30, 3), ranks={i: float(i % 5) for i in range(30)})
    decisions, runner = run(config(pacing={"min_interval": 4}), [gate], frames(30), tmp_path)
    assert [d.index for d in decisions] == list(range(30))
    assert runner.frames_in == 30 and runner.kept == sum(d.kept for d in decisions)


def test_pacing_keeps_the_highest_ranked_candidate_of_each_window(tmp_path):
    ranks = {0: 1.0, 1: 5.0, 2: 2.0, 3: 9.0, 4: 0.5, 5: 3.0}  # windows of 3 s: [0, 1, 2], [3, 4, 5]
    gate = Scripted("novelty", passing=range(6), ranks=ranks, cheap=False)
    decisions, _ = run(config(pacing={"min_interval": 3}), [gate], frames(6), tmp_path)
    assert [d.index for d in decisions if d.kept] == [1, 3]
    assert [d.stage for d in decisions] == ["pacing", "novelty", "pacing", "novelty", "pacing", "pacing"]
    assert gate.kept == [1, 3]  # only what was kept is remembered


def test_the_last_gate_that_ranks_decides_pacing(tmp_path):
    change = Scripted("change", passing=range(4), ranks={0: 9.0, 1: 1.0, 2: 1.0, 3: 1.0})
    novelty = Scripted("novelty", passing=range(4), ranks={0: 0.1, 1: 0.2, 2: 0.9, 3: 0.3}, cheap=False)
    decisions, _ = run(config(pacing={"min_interval": 10}), [change, novelty], frames(4), tmp_path)
    assert [d.index for d in decisions if d.kept] == [2]


def test_a_heartbeat_frame_skips_the_cheap_gates_only(tmp_path):
    change = Scripted("change", passing=[0])
    novelty = Scripted("novelty", passing=[0, 40], cheap=False)
    decisions, _ = run(config(pacing={"min_interval": 0, "heartbeat": 10}), [change, novelty], frames(60), tmp_path)
    beats = [d for d in decisions if "novelty" in d.scores and d.index]
    assert [d.index for d in beats] == [10, 20, 30, 40, 50]  # one attempt per heartbeat period
    assert [d.index for d in decisions if d.kept] == [0, 40] and decisions[40].stage == "heartbeat"
    assert all(d.stage == "novelty" and not d.kept for d in beats if d.index != 40)


def test_budgets_cap_kept_frames_per_rolling_hour(tmp_path):
    gate = Scripted("change", passing=range(200))
    decisions, runner = run(config(pacing={"min_interval": 0}, budget={"max_per_hour": 3}), [gate],
                            frames(200, fps=1 / 60), tmp_path)  # a candidate a minute for 200 minutes
    kept = [d.index for d in decisions if d.kept]
    assert kept == [0, 1, 2, 60, 61, 62, 120, 121, 122, 180, 181, 182]
    assert runner.dropped["budget"] == 200 - len(kept)


def test_budgets_count_the_frames_kept_before_a_reload_or_a_restart(tmp_path):
    """The same candidates, judged by one runner, or by two in turn on one store (a reload, or a
    restart where the frame clock starts again from zero): the same frames are kept."""
    cfg = config(pacing={"min_interval": 0}, budget={"max_per_hour": 3})
    candidates = frames(200, fps=1 / 60)  # a candidate a minute
    whole, _ = run(cfg, [Scripted("change", passing=range(200))], candidates, tmp_path / "one", write=True)
    before, _ = run(cfg, [Scripted("change", passing=range(200))], candidates[:10], tmp_path / "two", write=True)
    restarted = [Frame(f.index, f.timestamp, f.gray, image=f.image, clock=f.timestamp - candidates[10].timestamp)
                 for f in candidates[10:]]
    after, _ = run(cfg, [Scripted("change", passing=range(200))], restarted, tmp_path / "two", write=True)
    kept = [d.index for d in whole if d.kept]
    assert kept == [0, 1, 2, 60, 61, 62, 120, 121, 122, 180, 181, 182]
    assert [d.index for d in before + after if d.kept] == kept
    assert len(list((tmp_path / "two" / "frames").glob("*/*.jpg"))) == len(kept)


class Remembering(Scripted):
    """A gate that remembers the frames kept in a real Memory, as the novelty gate does."""

    def __init__(self, root: Path) -> None:
        super().__init__("novelty", passing=range(1000), cheap=False)
        self.memory = Memory(root, "a" * 64, 4, 100_000, 0.0)

    def on_kept(self, frame: Frame, path: str | None) -> None:
        self.memory.add(np.ones(4, np.float32), frame.timestamp, str(path), 0.05, None)

    def kept_times(self, days: float) -> list[float]:
        return self.memory.kept_times(days)

    def close(self) -> None:
        self.memory.close()


def test_budgets_count_what_the_memory_remembers_after_the_server_pulled_the_frames(tmp_path):
    cfg = config(pacing={"min_interval": 0}, budget={"max_per_hour": 3})
    candidates = frames(20, fps=1 / 60)
    before, _ = run(cfg, [Remembering(tmp_path)], candidates[:10], tmp_path, write=True)
    for image in (tmp_path / "frames").glob("*/*"):  # rsync --remove-source-files
        image.unlink()
    after, _ = run(cfg, [Remembering(tmp_path)], candidates[10:], tmp_path, write=True)
    assert [d.index for d in before + after if d.kept] == [0, 1, 2]
    assert {d.stage for d in after} == {"budget"}


def test_budgets_after_a_restart_with_the_clock_set_back(tmp_path):
    """A Pi without a clock restores the time it last saved: frames stored "later" than the new
    frames still count (as if kept now), never a fresh allowance."""
    cfg = config(pacing={"min_interval": 0}, budget={"max_per_hour": 3})
    before, _ = run(cfg, [Scripted("change", passing=range(100))], frames(10, fps=1 / 60), tmp_path, write=True)
    set_back = frames(10, fps=1 / 60, start=1_700_000_000.0 + 9 * 60 - 600)  # 10 minutes back
    after, _ = run(cfg, [Scripted("change", passing=range(100))], set_back, tmp_path, write=True)
    assert [d.index for d in before if d.kept] == [0, 1, 2]
    assert [d.index for d in after if d.kept] == []


def test_a_name_framecull_cannot_have_written_is_left_alone(tmp_path):
    day = tmp_path / "frames" / "2026-13-01"
    day.mkdir(parents=True)
    odd = [day / "cam1_20261301T000000.000000Z_000001.jpg", day / "cam1_20261301T000000.000000Z_000001.json"]
    for path in odd:
        path.write_bytes(b"not framecull's")
    cfg = config(pacing={"min_interval": 0}, budget={"max_per_hour": 3})
    decisions, _ = run(cfg, [Scripted("change", passing=range(5))], frames(5, fps=1 / 60), tmp_path, write=True)
    assert [d.index for d in decisions if d.kept] == [0, 1, 2]
    assert all(path.read_bytes() == b"not framecull's" for path in odd)


def test_an_idle_source_closes_the_pacing_window(tmp_path):
    gate = Scripted("novelty", passing=[0], ranks={0: 1.0}, cheap=False)
    cfg = config(pacing={"min_interval": 0.2})
    with Runner(cfg, tmp_path, write=False, gates=[gate]) as runner:
        assert runner.push(frames(1)[0]) == []  # held: the window is open
        assert runner.idle() == []  # not idle long enough yet
        time.sleep(0.3)
        [decision] = runner.idle()
        assert decision.kept and gate.kept == [0]


def test_a_memory_that_cannot_commit_costs_the_memory_not_the_frame_nor_the_run(tmp_path, caplog):
    decisions, runner = run(config(pacing={"min_interval": 0}), [Forgetful()], frames(5), tmp_path, write=True)
    assert all(d.kept and Path(d.path).is_file() for d in decisions)  # written and kept, not remembered
    assert runner.not_remembered == 5 and runner.not_written == 0
    errors = [r for r in caplog.records if "not remembered" in r.message]
    assert len(errors) == 1, "one line a minute, not one per frame"


def test_a_full_disk_costs_frames_not_the_run_and_writing_resumes(tiny_disk):
    gate = Scripted("novelty", passing=range(40), cheap=False)
    cfg = config(pacing={"min_interval": 0})
    root = tiny_disk / "root"
    images = [Frame.from_bgr(i, 1e9 + i, np.random.default_rng(i).integers(0, 255, (120, 160, 3), np.uint8), 160)
              for i in range(40)]
    with Runner(cfg, root, sinks=[decisions := Collect()], gates=[gate]) as runner:
        for frame in images[:5]:
            runner.push(frame)
        ballast = fill(tiny_disk)
        for frame in images[5:20]:
            runner.push(frame)
        ballast.unlink()
        for frame in images[20:]:
            runner.push(frame)
    stages = [d.stage for d in decisions.decisions]
    assert stages[:5] == ["novelty"] * 5 and stages[20:] == ["novelty"] * 20
    assert set(stages[5:20]) == {"store"} and runner.not_written == 15 and runner.kept == 25
    on_disk = sorted(p.name for p in (root / "frames").rglob("*.jpg"))
    assert len(on_disk) == 25 and not list((root / "tmp").iterdir())  # no partial file left
    assert gate.kept == [i for i in range(40) if not 5 <= i < 20]  # what was not written is not remembered
