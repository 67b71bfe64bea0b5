"""framecull command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from framecull.config import EX_CONFIG, Config, ConfigError, config_from_dict, load_config, to_toml
from framecull.replay import OutputInUse
from framecull.sources import SourceError, open_source, with_recorded_source
from framecull.store import StoreRootError

EX_USAGE = 64  # sysexits.h: the command was used the wrong way
EX_NOINPUT = 66  # sysexits.h: the input (source) does not exist or cannot be read

log = logging.getLogger("framecull")


def _load(path: str | None) -> Config:
    return load_config(path) if path else Config()


def cmd_check_config(args) -> int:
    from framecull import checks

    config = checks.bind_instance(load_config(args.file), args.camera, args.file)
    checks.check(config, args.file)  # the store root, the source: what can be known without the camera
    if config.gates.novelty.enabled:
        from framecull.gates.novelty import load_embedder

        load_embedder(config.gates.novelty)  # a missing or broken model fails here, not at start
    if not args.quiet:
        sys.stdout.write(to_toml(config))
    return 0


def cmd_replay(args) -> int:
    from framecull.replay import DEFAULT_PARENT, new_output, replay, replay_stills, stills_summary, summary

    config = with_recorded_source(_load(args.config), args.source)
    source = {key: value for key, value in (("time_format", args.time_format), ("timezone", args.timezone),
                                            ("fps", args.fps)) if value is not None}
    if args.mtime:
        source["mtime"] = True
    if source:  # validated like the same keys in a config file
        config = config_from_dict({**config.model_dump(mode="json"),
                                   "source": {**config.source.model_dump(mode="json"), **source}},
                                  origin="command line")
    out = Path(args.out) if args.out else new_output(DEFAULT_PARENT, args.source)
    if config.source.kind == "folder":
        runs = replay_stills(config, Path(args.source), out, per_camera=args.per_camera, resume=args.resume,
                             link=args.link, list_path=Path(args.list) if args.list else None)
        print(stills_summary(runs))
        if args.list:
            print(f"list of every input file: {args.list}")
        if args.report and args.per_camera:  # one page per camera: report.html -> report-<camera>.html
            page = Path(args.report)
            for run in runs:
                _report(run.out, page.with_name(f"{page.stem}-{run.camera}{page.suffix}"),
                        f"framecull replay: {Path(args.source).name}, camera {run.camera}")
    else:
        if args.per_camera or args.link or args.list:
            raise SourceError("--per-camera, --link and --list are for a folder of stills")
        runner = replay(config, open_source(config), out, resume=args.resume)
        print(summary(runner, out))
    if args.report and not args.per_camera:
        _report(out, Path(args.report), f"framecull replay: {Path(args.source).name}")
    return 0


def _report(out: Path, page: Path, title: str) -> None:
    from framecull.replay import DECISIONS_FILE
    from framecull.report import load_decisions, write_report

    written = write_report(load_decisions(out / DECISIONS_FILE), out / "frames", page, title=title)
    print(f"report: {written}")


def cmd_demo(args) -> int:
    from framecull.contact_sheet import write_contact_sheet
    from framecull.replay import DECISIONS_FILE, new_output, replay, summary
    from framecull.report import load_decisions
    from framecull.sources.synthetic import SyntheticSource

    config = _load(args.config)
    out = new_output(Path(args.out), args.scene)
    source = SyntheticSource(args.scene, config.source.analysis_width)
    scene = source.scene
    runner = replay(config, source, out)
    print(summary(runner, out))
    kept = [d for d in load_decisions(out / DECISIONS_FILE) if d["kept"]]
    caught = sum(any(e.start <= d["index"] <= e.end for d in kept) for e in scene.events)
    print(f"events in the scene: {len(scene.events)}, with at least one kept frame: {caught}")
    sheet = write_contact_sheet([Path(d["path"]) for d in kept], out / "contact_sheet.png")
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
    report = probe(open_source(config), seconds=args.seconds, config=config)
    sys.stdout.write(json.dumps(report) + "\n" if args.json else format_probe(report))
    return 0 if report["frames"] else 1


def _memory_root(args, config: Config) -> Path:
    return Path(args.root) if args.root else config.store_root


def cmd_memory(args) -> int:
    from framecull.gates.novelty import load_embedder, open_memory

    config = _load(args.config)
    root = _memory_root(args, config)
    if not (root / "memory.sqlite").exists():
        raise SourceError(f"no memory at {root} (memory.sqlite not found)")
    embedder = load_embedder(config.gates.novelty)
    rebuild = args.action == "rebuild"
    with open_memory(config.gates.novelty, embedder, root, rebuild=rebuild) as memory:
        if rebuild:
            reembedded, forgotten = memory.reembed(embedder.embed, config.source.analysis_width)
            print(f"memory at {root}: {len(memory)} frames for model {embedder.sha256[:12]} "
                  f"({reembedded} re-embedded, {forgotten} forgotten: their images are gone)")
        elif args.action == "stats":
            for key, value in memory.stats().items():
                print(f"{key}: {value}")
        else:
            count = memory.export(Path(args.out))
            print(f"exported {count} kept frames to {args.out}")
    return 0


def cmd_run(args) -> int:
    import os
    import signal

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the service listens must not kill it

    from framecull.service.loop import SAVE_INTERVAL, STALL_AFTER, STATUS_INTERVAL, Service

    # The intervals are constants; the environment may shorten them (the tests do).
    def seconds(name: str, default: float) -> float:
        return float(os.environ.get(name, default))

    service = Service(args.config, instance=args.camera,
                      status_interval=seconds("FRAMECULL_STATUS_INTERVAL", STATUS_INTERVAL),
                      save_interval=seconds("FRAMECULL_SAVE_INTERVAL", SAVE_INTERVAL),
                      stall_after=seconds("FRAMECULL_STALL_AFTER", STALL_AFTER))
    try:
        status = service.run()
    except ConfigError as exc:
        print(f"framecull: config error: {exc}", file=sys.stderr)
        status = EX_CONFIG
    except SourceError as exc:  # a source that cannot exist is as permanent as a bad config
        print(f"framecull: source error: {exc}", file=sys.stderr)
        status = EX_CONFIG
    except StoreRootError as exc:  # taken by another process since the check, or checked by the Store only
        print(f"framecull: {exc}", file=sys.stderr)
        status = EX_CONFIG
    # Everything is saved and closed: end here, without the interpreter's teardown, which would
    # run under a camera thread still inside a decoder call (a segfault) and with the signal
    # handlers reset (a SIGHUP then kills).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def cmd_status(args) -> int:
    from framecull.service.status import format_status, read_status

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
    p.add_argument("--camera", help="the systemd instance (framecull@<camera>): the config's camera must be "
                                    "this or absent")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="what a running daemon reports: counters, source state, last decisions")
    p.add_argument("camera", nargs="?", default="default", help="the camera (default: %(default)s)")
    p.add_argument("--root", help="its store root (default: /var/lib/framecull/<camera>, or from --config)")
    p.add_argument("--config", help="per-camera TOML: its store root")
    p.add_argument("--json", action="store_true", help="print status.json as one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check-config", help="validate a per-camera TOML (keys, model, store root, source as far "
                                            "as it is known without the camera) and print the effective config")
    p.add_argument("file")
    p.add_argument("--camera", help="the systemd instance (framecull@<camera>): the config's camera must be "
                                    "this or absent")
    p.add_argument("--quiet", action="store_true", help="print only problems (systemctl reload runs this)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("replay", help="run the pipeline offline over a video file or a folder of images")
    p.add_argument("source", help="a video file or a folder of images")
    p.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    p.add_argument("--out", help="where kept frames, the memory and decisions.jsonl go (default: a new folder "
                                 "replay-out/<source>-<time>/); refused when it holds a memory, unless --continue")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="reuse the memory in --out on purpose: tune against what a camera already kept, "
                        "or finish an interrupted replay")
    p.add_argument("--report", help="also write a self-contained HTML report of the run to this file")
    p.add_argument("--per-camera", action="store_true",
                   help="stills: group them by camera (the part of the name before the time, else the "
                        "subfolder); one memory and one output folder (OUT/<camera>/) per camera")
    p.add_argument("--link", action="store_true",
                   help="stills: hard-link kept stills from the input folder instead of copying them")
    p.add_argument("--list", metavar="FILE",
                   help="stills: copy nothing; write one CSV line per input file (file, camera, time, kept, "
                        "stage, scores) to FILE")
    p.add_argument("--time-format", help="stills: strptime format of the capture time in the names, for names "
                                         "the built-in patterns do not know (e.g. 'IMG_%%d%%m%%Y_%%H%%M')")
    p.add_argument("--timezone", help="stills: zone of capture times that carry none (default UTC)")
    p.add_argument("--mtime", action="store_true",
                   help="stills: date stills without a time in the name or EXIF by their file's modification time")
    p.add_argument("--fps", type=float, help="frames per second: stills without any capture time are taken "
                                             "1/fps s apart; a video is analysed at this rate")
    p.set_defaults(func=cmd_replay)

    from framecull import report

    p = sub.add_parser("report", help="one self-contained HTML page about a replay: stage counts, "
                                      "scores over time, kept frames")
    report.add_arguments(p)
    p.set_defaults(func=report.main)

    p = sub.add_parser("demo", help="replay a synthetic parking lot and show what is kept")
    p.add_argument("--out", default="demo-out", help="a new folder for each run is made in here (default: %(default)s)")
    p.add_argument("--config", help="per-camera TOML (default: built-in defaults)")
    p.add_argument("--scene", default="parking_lot", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("probe", help="read a camera for a few seconds: resolution, fps, motion vectors, drops, "
                                     "change-gate pass rate")
    p.add_argument("source", nargs="?", help="rtsp://..., /dev/video0, picamera2, a file or folder "
                                             "(default: the config's [source])")
    p.add_argument("--config", help="per-camera TOML: its [source] settings and [regions] masks")
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
    except StoreRootError as exc:  # permanent until someone fixes the disk: systemd must not loop
        print(f"framecull: {exc}", file=sys.stderr)
        return EX_CONFIG
    except SourceError as exc:
        print(f"framecull: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except OutputInUse as exc:
        print(f"framecull: {exc}", file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        return 130
