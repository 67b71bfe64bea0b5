"""Replay recorded footage through the daemon's own runner, into an output folder of its own.

A replay never mixes memories by accident: without `resume`, the output folder must not hold a
memory yet (the default folder is new for every run). With `resume` it reuses the memory there on
purpose: tuning against what a camera already kept, or continuing an interrupted run.

A folder of stills (replay_stills) is replayed in capture-time order, one runner per camera with
`per_camera` (each with its own output folder and memory, OUT/<camera>/). Continuing an interrupted
run of the same folder picks up after the last still decided (see resume_point), so the run ends
as an uninterrupted one would.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePath

from framecull.config import Config
from framecull.pipeline import Decision
from framecull.runner import JsonlSink, Progress, Runner, Sink
from framecull.sources import Source, SourceError, iter_frames
from framecull.sources.folder import FolderSource
from framecull.stills import Still, by_camera, naming_of, scan
from framecull.store import utc_text

log = logging.getLogger("framecull.replay")

DEFAULT_PARENT = Path("replay-out")
MEMORY_FILE = "memory.sqlite"
DECISIONS_FILE = "decisions.jsonl"
# Stages a frame ends in once it passed the change gate without being kept (it became the gate's
# reference, with the default reference "last_judged").
PASSED_CHANGE = {"novelty", "pacing", "budget", "store"}


class OutputInUse(Exception):
    """The output folder holds the memory of an earlier run and resuming was not asked for."""


def new_output(parent: Path, source: str) -> Path:
    """A folder of its own for one run: <parent>/<source name>-<local time>[-n]."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.split(":", 1)[-1]).name or "source")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = parent / f"{name}-{stamp}", 1
    while out.exists():
        n += 1
        out = parent / f"{name}-{stamp}-{n}"
    return out


def check_output(out: Path, resume: bool) -> None:
    if resume or not (out / MEMORY_FILE).exists():
        return
    raise OutputInUse(
        f"{out} already holds the memory of an earlier run ({out / MEMORY_FILE}): frames like those it kept "
        f"would not be kept again. Use --continue to build on that memory on purpose, or give a new --out "
        f"(without --out every replay gets a fresh folder under {DEFAULT_PARENT}/).")


def replay(config: Config, source: Source, out: Path, resume: bool = False, *, write: bool = True,
           link: bool = False, sinks: list[Sink] = (), decided: int = -1) -> Runner:
    """Run the daemon's pipeline over `source`, keeping frames under `out`; decisions go to
    out/decisions.jsonl. Returns the closed runner (its counters).

    write    False: judge and remember, store no frames (--list)
    link     kept stills are hard-linked from the input folder instead of copied
    sinks    more sinks for the decisions
    decided  frames up to this index were decided by an interrupted run: they are judged again
             (the gates' state), their decisions are not written again
    """
    check_output(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = JsonlSink(out / DECISIONS_FILE, append=resume)
    jsonl.file.reconfigure(line_buffering=True)  # what is decided is on disk: --continue goes on from there
    sinks = [jsonl, *sinks]
    if decided >= 0:
        sinks = [NotBefore(sink, decided + 1) for sink in sinks]
    sinks.append(Progress(source.frame_count))
    try:
        with Runner(config, out, write=write, sinks=sinks) as runner:
            if link and runner.store is not None:
                runner.store.link_stills = True
            runner.run(iter_frames(source, config.source.fps))
    finally:
        source.close()
    return runner


class NotBefore:
    """Passes on the decisions of frames from `index` on."""

    def __init__(self, sink: Sink, index: int) -> None:
        self.sink, self.index = sink, index

    def write(self, decision: Decision) -> None:
        if decision.index >= self.index:
            self.sink.write(decision)

    def close(self) -> None:
        self.sink.close()


def summary(runner: Runner, out: Path) -> str:
    seconds = time.perf_counter() - runner.started
    rate = runner.frames_in / seconds if seconds > 0 else 0.0
    lines = [f"frames in: {runner.frames_in}"]
    lines += [f"dropped at {stage}: {count}" for stage, count in runner.dropped.items() if stage != "store"]
    lost = []
    if runner.not_written:
        lost.append(f"not written: {runner.not_written}")
    if runner.not_remembered:
        lost.append(f"not remembered: {runner.not_remembered}")
    lines.append(f"kept: {runner.kept}" + (f" (lost to storage: {', '.join(lost)})" if lost else ""))
    lines.append(f"speed: {rate:.1f} frames/s")
    lines.append(f"kept frames are in {out / 'frames'}, decisions in {out / DECISIONS_FILE}")
    return "\n".join(lines)


# --- folders of stills ------------------------------------------------------------------------

@dataclass
class CameraRun:
    camera: str
    out: Path
    stills: int  # stills of this camera in the folder
    resumed: int  # of which an interrupted run had decided
    unreadable: int  # files skipped: not whole images
    untimed: int  # files skipped: no capture time among timed stills
    summary: str  # the runner's summary (the runner itself is let go: its model and memory)


def replay_stills(config: Config, folder: Path, out: Path, *, per_camera: bool = False, resume: bool = False,
                  link: bool = False, list_path: Path | None = None) -> list[CameraRun]:
    """Replay a folder of stills in capture-time order: all in one memory under `out`, or with
    `per_camera` one runner, memory and output folder (out/<camera>) per camera. With `list_path`,
    no stills are copied: one CSV line per input file goes there. The folder is never written to."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"folder source: {folder} is not a directory")
    if Path(out).resolve().is_relative_to(folder.resolve()):
        raise SourceError(f"--out {out} is inside the input folder {folder}, which a replay never writes to")
    naming = naming_of(config.source)
    stills = scan(folder, naming)
    groups = by_camera(stills) if per_camera else {config.camera: stills}
    del stills
    outs = {camera: out / camera if per_camera else out for camera in groups}
    for camera_out in outs.values():  # refuse before anything is judged
        check_output(camera_out, resume)
    listing = StillList(list_path, append=resume) if list_path else None
    runs = []
    try:
        for camera, group in groups.items():
            camera_config = config.model_copy(update={"camera": camera}) if per_camera else config
            start, decided = resume_point(outs[camera], group, config.gates.change.reference) if resume else (0, -1)
            if decided >= 0:
                log.info("%s: %d stills were decided by the interrupted run; going on from there", camera, decided + 1)

            def unreadable(index: int, still: Still, reason: str, after: int = decided) -> None:
                if listing and index > after:
                    listing.unreadable(str(folder / still.name), still, reason)

            source = FolderSource(folder, config.source.analysis_width, config.source.fps, naming, stills=group,
                                  start=start, on_unreadable=unreadable)
            runner = replay(camera_config, source, outs[camera], resume, write=listing is None, link=link,
                            sinks=[listing.sink()] if listing else [], decided=decided)
            runs.append(CameraRun(camera, outs[camera], len(group), decided + 1, source.skipped, source.untimed,
                                  summary(runner, outs[camera])))
    finally:
        if listing:
            listing.close()
    return runs


def resume_point(out: Path, stills: list[Still], reference: str) -> tuple[int, int]:
    """Where an interrupted replay of these stills into `out` goes on: (first still to judge, last
    still decided). Judging starts again at the change gate's reference of that moment (the last
    still that passed it), so the gate compares as it did; (0, -1) when out/decisions.jsonl holds
    no decision about these stills (a first run, or --continue on purpose with other footage)."""
    last = restart = None
    try:
        with open(out / DECISIONS_FILE) as lines:
            for line in lines:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line being written when the run was killed
                if not isinstance(d, dict) or "file" not in d:
                    continue
                last = d
                if reference != "last_judged" or d.get("kept") or d.get("stage") in PASSED_CHANGE:
                    restart = d
    except FileNotFoundError:
        return 0, -1
    if last is None:
        return 0, -1
    decided = _position(last, stills)
    if decided is None:
        return 0, -1
    start = _position(restart, stills) if restart is not None else None
    return (start if start is not None else 0), decided


def _position(decision: dict, stills: list[Still]) -> int | None:
    """The index of the still a decision is about (by its path below the folder), None if absent."""
    file = PurePath(decision["file"]).parts

    def same(still: Still) -> bool:
        name = PurePath(still.name).parts
        return file[-len(name):] == name

    index = decision.get("index")
    if isinstance(index, int) and 0 <= index < len(stills) and same(stills[index]):
        return index
    return next((i for i, s in enumerate(stills) if same(s)), None)


def stills_summary(runs: list[CameraRun]) -> str:
    blocks = []
    for run in runs:
        head = f"camera {run.camera}: {run.stills} stills"
        if run.resumed:
            head += f", {run.resumed} decided before (--continue)"
        if run.unreadable or run.untimed:
            head += f", skipped {run.unreadable} unreadable" + (
                f" and {run.untimed} without a capture time" if run.untimed else "")
        blocks.append(head + "\n" + "\n".join("  " + line for line in run.summary.splitlines()))
    return "\n".join(blocks)


class StillList:
    """--list FILE: one CSV line per input file (file, camera, capture time UTC, kept, stage, scores
    as JSON), unreadable files included; line-buffered, so an interrupted run's lines are whole."""

    COLUMNS = ["file", "camera", "time", "kept", "stage", "scores"]

    def __init__(self, path: Path, append: bool = False) -> None:
        header = not append or not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a" if append else "w", newline="", buffering=1)
        self.csv = csv.writer(self.file)
        if header:
            self.csv.writerow(self.COLUMNS)

    def sink(self) -> "StillList.Sink":
        return StillList.Sink(self)

    def unreadable(self, file: str, still: Still, reason: str) -> None:
        self.csv.writerow([file, still.camera, utc_text(still.time) or "", 0, "unreadable",
                           json.dumps({"reason": reason})])

    def close(self) -> None:
        self.file.close()

    class Sink:
        """The list as one camera's sink: closing it leaves the list open for the next camera."""

        def __init__(self, listing: "StillList") -> None:
            self.listing = listing

        def write(self, d: Decision) -> None:
            self.listing.csv.writerow([d.file, d.camera, utc_text(d.timestamp) or "", int(d.kept), d.stage,
                                       json.dumps(d.scores, separators=(",", ":"))])

        def close(self) -> None:
            pass

