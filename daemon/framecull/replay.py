"""Replay recorded footage through the daemon's own runner, into an output folder of its own.

A replay never mixes memories by accident: without `resume`, the output folder must not hold a
memory yet (the default folder is new for every run). With `resume` it reuses the memory there on
purpose: tuning against what a camera already kept, or continuing an interrupted run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from framecull.config import Config
from framecull.runner import JsonlSink, Progress, Runner
from framecull.sources import Source, iter_frames

DEFAULT_PARENT = Path("replay-out")
MEMORY_FILE = "memory.sqlite"
DECISIONS_FILE = "decisions.jsonl"


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


def replay(config: Config, source: Source, out: Path, resume: bool = False) -> Runner:
    """Run the daemon's pipeline over `source`, keeping frames under `out`; decisions go to
    out/decisions.jsonl. Returns the closed runner (its counters)."""
    check_output(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    sinks = [JsonlSink(out / DECISIONS_FILE, append=resume), Progress(source.frame_count)]
    try:
        with Runner(config, out, sinks=sinks) as runner:
            runner.run(iter_frames(source, config.source.fps))
    finally:
        source.close()
    return runner


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
