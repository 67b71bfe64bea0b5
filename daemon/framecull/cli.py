"""framecull command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2

from framecull.config import EX_CONFIG, Config, ConfigError, load_config, to_toml
from framecull.pipeline import Decision, build_pipeline
from framecull.sources import Source, SourceError, iter_frames, open_source, with_recorded_source
from framecull.store import Store

EX_NOINPUT = 66  # sysexits.h: the input (source) does not exist or cannot be read

log = logging.getLogger("framecull")


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int, kept: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        if self.total:
            filled = int(30 * done / self.total)
            bar = "#" * filled + "." * (30 - filled)
            sys.stderr.write(f"\r[{bar}] {done}/{self.total} frames, {kept} kept ")
        else:
            sys.stderr.write(f"\r{done} frames, {kept} kept ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")


@dataclass
class ReplayResult:
    decisions: list[Decision]
    seconds: float
    lost: int  # kept frames the store could not write

    def summary(self, out: Path) -> str:
        dropped = Counter(d.stage for d in self.decisions if not d.kept)
        kept = sum(d.kept for d in self.decisions)
        rate = len(self.decisions) / self.seconds if self.seconds > 0 else 0.0
        lines = [f"frames in: {len(self.decisions)}"]
        lines += [f"dropped at {stage}: {count}" for stage, count in dropped.items()]
        lines.append(f"kept: {kept}" + (f" (lost to storage: {self.lost})" if self.lost else ""))
        lines.append(f"speed: {rate:.1f} frames/s")
        lines.append(f"kept frames are in {out / 'frames'}")
        return "\n".join(lines)


def replay(config: Config, source: Source, out: Path, decisions_path: Path | None = None) -> ReplayResult:
    """Run the exact daemon pipeline over a recorded source, writing kept frames under `out`."""
    if (out / "memory.sqlite").exists() and config.gates.novelty.enabled:
        log.warning("%s already holds the memory of an earlier run: frames like those it kept will not be "
                    "kept again (use a new --out to start afresh)", out)
    store = Store.from_config(config, out)
    pipeline = build_pipeline(config, store, memory_root=out)
    decisions: list[Decision] = []
    progress = Progress(source.frame_count)
    started = time.perf_counter()
    if decisions_path:
        decisions_path.parent.mkdir(parents=True, exist_ok=True)
    sink = open(decisions_path, "w") if decisions_path else None
    try:
        for decision in pipeline.run(iter_frames(source, config.source.fps)):
            decisions.append(decision)
            if sink:
                sink.write(json.dumps(decision.to_json()) + "\n")
            progress.update(len(decisions), store.saved)
    finally:
        pipeline.close()
        progress.close()
        if sink:
            sink.close()
        source.close()
    return ReplayResult(decisions, time.perf_counter() - started, store.lost)


def _load(path: str | None) -> Config:
    return load_config(path) if path else Config()


def cmd_check_config(args) -> int:
    config = load_config(args.file)
    if config.gates.novelty.enabled:
        from framecull.gates.novelty import load_embedder

        load_embedder(config.gates.novelty)  # a missing or broken model fails here, not at start
    sys.stdout.write(to_toml(config))
    return 0


def cmd_replay(args) -> int:
    config = with_recorded_source(_load(args.config), args.source)
    source = open_source(config)
    out = Path(args.out)
    result = replay(config, source, out, Path(args.decisions) if args.decisions else None)
    print(result.summary(out))
    if args.report:
        from framecull.report import write_report

        page = write_report([d.to_json() for d in result.decisions], out / "frames", Path(args.report),
                            title=f"framecull replay: {Path(args.source).name}")
        print(f"report: {page}")
    return 0


def cmd_demo(args) -> int:
    from framecull.contact_sheet import write_contact_sheet
    from framecull.sources.synthetic import SyntheticSource

    config = _load(args.config)
    out = Path(args.out)
    source = SyntheticSource(args.scene, config.gates.change.width)
    scene = source.scene
    result = replay(config, source, out, out / "decisions.jsonl")
    print(result.summary(out))
    kept = [d for d in result.decisions if d.kept]
    caught = sum(any(e.start <= d.index <= e.end for d in kept) for e in scene.events)
    print(f"events in the scene: {len(scene.events)}, with at least one kept frame: {caught}")
    sheet = write_contact_sheet([Path(d.path) for d in kept], out / "contact_sheet.png")
    print(f"contact sheet: {sheet}")
    return 0


def cmd_probe(args) -> int:
    from framecull.probe import format_probe, kind_for_uri, probe

    config = _load(args.config)
    if args.source:
        kind = kind_for_uri(args.source)
        uri = "" if kind == "picamera2" and args.source == "picamera2" else args.source
        source = config.source.model_copy(update={"kind": kind, "uri": uri})
        config = config.model_copy(update={"source": source})
    report = probe(open_source(config), seconds=args.seconds, change=config.gates.change)
    sys.stdout.write(json.dumps(report) + "\n" if args.json else format_probe(report))
    return 0 if report["frames"] else 1


def _memory_root(args, config: Config) -> Path:
    return Path(args.root) if args.root else config.store_root


def cmd_memory(args) -> int:
    import sqlite3

    from framecull.gates.novelty import load_embedder, open_memory

    config = _load(args.config)
    root = _memory_root(args, config)
    if not (root / "memory.sqlite").exists():
        raise SourceError(f"no memory at {root} (memory.sqlite not found)")
    embedder = load_embedder(config.gates.novelty)
    novelty = config.gates.novelty
    if args.action == "rebuild":
        # Re-embed, with the configured model, every kept frame whose image is still on disk;
        # frames the server already pulled away cannot be re-embedded and are forgotten.
        with sqlite3.connect(root / "memory.sqlite") as db:
            rows = db.execute("SELECT time, file, threshold FROM kept ORDER BY id").fetchall()
        with open_memory(novelty, embedder, root, rebuild=True) as memory:
            if len(memory) == 0:
                for time_, file, threshold in rows:
                    image = cv2.imread(str(root / file)) if file else None
                    if image is not None:
                        memory.add(embedder.embed(image), time_, file, threshold, None)
            print(f"memory at {root}: {len(memory)} frames for model {embedder.sha256[:12]} "
                  f"({len(rows) - len(memory)} of {len(rows)} forgotten: their images are gone)")
        return 0
    with open_memory(novelty, embedder, root) as memory:
        if args.action == "stats":
            for key, value in memory.stats().items():
                print(f"{key}: {value}")
        else:
            count = memory.export(Path(args.out))
            print(f"exported {count} kept frames to {args.out}")
    return 0


def cmd_run(args) -> int:
    import os

    from framecull.service import SAVE_INTERVAL, STALL_AFTER, STATUS_INTERVAL, Service

    # The intervals are constants; the environment may shorten them (the tests do).
    def seconds(name: str, default: float) -> float:
        return float(os.environ.get(name, default))

    return Service(args.config,
                   status_interval=seconds("FRAMECULL_STATUS_INTERVAL", STATUS_INTERVAL),
                   save_interval=seconds("FRAMECULL_SAVE_INTERVAL", SAVE_INTERVAL),
                   stall_after=seconds("FRAMECULL_STALL_AFTER", STALL_AFTER)).run()


def cmd_status(args) -> int:
    from framecull.status import format_status, read_status

    if args.root:
        root = Path(args.root)
    elif args.config:
        root = load_config(args.config).store_root
    else:
        root = Path("/var/lib/framecull") / args.camera
    try:
        status = read_status(root)
    except FileNotFoundError:
        print(f"framecull: no status at {root / 'status.json'} (has `framecull run` started for this camera?)",
              file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"framecull: cannot read {root / 'status.json'}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(status) + "\n" if args.json else format_status(status))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framecull", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every decision")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon for one camera (what the systemd service starts)")
    p.add_argument("--config", required=True, help="per-camera TOML, e.g. /etc/framecull/<camera>.toml")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what a running daemon reports: counters, source state, last decisions")
    p.add_argument("camera", nargs="?", default="default", help="the camera (default: %(default)s)")
    p.add_argument("--root", help="its store root (default: /var/lib/framecull/<camera>, or from --config)")
    p.add_argument("--config", help="per-camera TOML: its store root")
    p.add_argument("--json", action="store_true", help="print status.json as one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check-config", help="validate a per-camera TOML and print the effective config")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("replay", help="run the pipeline offline over a video file or a folder of images")
    p.add_argument("source", help="a video file or a folder of images")
    p.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    p.add_argument("--out", default="replay-out", help="where kept frames go (default: %(default)s)")
    p.add_argument("--decisions", help="write one JSON line per input frame to this file")
    p.add_argument("--report", help="also write a self-contained HTML report of the run to this file")
    p.set_defaults(func=cmd_replay)

    from framecull import report

    p = sub.add_parser("report", help="one self-contained HTML page about a replay: stage counts, "
                                      "scores over time, kept frames")
    report.add_arguments(p)
    p.set_defaults(func=report.main)

    p = sub.add_parser("demo", help="replay a synthetic parking lot and show what is kept")
    p.add_argument("--out", default="demo-out", help="where kept frames go (default: %(default)s)")
    p.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    p.add_argument("--scene", default="parking_lot", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("probe", help="read a camera for a few seconds: resolution, fps, motion vectors, drops, "
                                     "change-gate pass rate")
    p.add_argument("source", nargs="?", help="rtsp://..., /dev/video0, picamera2, a file or folder "
                                             "(default: the config's [source])")
    p.add_argument("--config", help="per-camera TOML: its [source] settings and [gates.change] masks")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to read (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_probe)

    from framecull import calibrate, preview

    p = sub.add_parser("preview", help="PNGs of what the gates see for a sample of frames: masks, changed "
                                       "contours, motion vectors, scores and the real decision")
    preview.add_arguments(p)
    p.set_defaults(func=preview.main)

    p = sub.add_parser("calibrate", help="replay once, plot scores and kept-vs-threshold curves, suggest "
                                         "novelty thresholds for a target rate (plots need framecull[tools])")
    calibrate.add_arguments(p)
    p.set_defaults(func=calibrate.main)

    p = sub.add_parser("memory", help="the memory of kept frames: stats, rebuild (after a model change), export")
    p.add_argument("action", choices=["stats", "rebuild", "export"])
    p.add_argument("--config", help="per-camera TOML (its store root and novelty model)")
    p.add_argument("--root", help="the store root holding memory.sqlite (default: from the config)")
    p.add_argument("--out", default="memory-export.npz", help="export: the .npz to write (default: %(default)s)")
    p.set_defaults(func=cmd_memory)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it narrates its CPU probing at INFO
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"framecull: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except SourceError as exc:
        print(f"framecull: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except KeyboardInterrupt:
        return 130
