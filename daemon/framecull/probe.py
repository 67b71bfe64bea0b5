"""`framecull probe SOURCE`: read a source for a few seconds and say what it delivers.

The first thing to run on a new camera: resolution, the frame rate really measured, whether
motion vectors come with the frames, frames dropped, and how many frames the configured change
gate would pass (a quiet scene should pass few).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from framecull.config import Config
from framecull.gates.change import ChangeGate
from framecull.sources import Source
from framecull.sources.synthetic import SCENES


def kind_for_uri(uri: str) -> str:
    """The source kind an operator most likely means by `uri` (for `framecull probe URI`):
    a URL, "picamera2", a /dev/video device or camera number, a folder, a scene name, a file."""
    if "://" in uri:
        return "rtsp"
    if uri == "picamera2":
        return "picamera2"
    if uri.startswith("/dev/") or uri.isdigit():
        return "v4l2"
    if os.path.isdir(uri):
        return "folder"
    if uri in SCENES:
        return "synthetic"
    return "file"  # a missing file is then reported as such


def probe(source: Source, seconds: float = 5.0, config: Config | None = None) -> dict:
    """Read `source` for at most `seconds` of wall time; closes it. A camera that delivers
    nothing ends the probe on time too. The change gate is `config`'s (default: Config())."""
    config = config or Config()
    gate = ChangeGate(config.gates.change, config.regions, config.lighting)
    frames = with_vectors = passed = 0
    previous = None
    size = analysis = None
    changed, periods = [], []
    # A live source's frames() blocks while its camera is silent: close it when time is up.
    timer = threading.Timer(seconds, source.close) if source.live else None
    started = time.monotonic()
    try:
        if timer is not None:
            timer.start()
        for frame in source.frames():
            if size is None:
                size = frame.image.shape[1::-1]
                analysis = frame.gray.shape[::-1]
            if previous is not None and frame.index > previous.index:
                # Per captured frame: indices count the frames dropped in between too.
                periods.append((frame.timestamp - previous.timestamp) / (frame.index - previous.index))
            previous = frame
            frames += 1
            with_vectors += frame.motion_vectors is not None
            verdict = gate.judge(frame)
            passed += verdict.passed
            changed.append(verdict.scores.get("changed", 0.0))
            if time.monotonic() - started >= seconds:
                break
    finally:
        if timer is not None:
            timer.cancel()
        source.close()
    elapsed = time.monotonic() - started
    # The median period: a burst of frames at connection (buffered while the stream was
    # opened) or one stall does not move it.
    period = float(np.median(periods)) if periods else 0.0
    report = {
        "kind": source.kind,
        "seconds": round(elapsed, 2),
        "frames": frames,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "analysis_width": analysis[0] if analysis else None,
        "analysis_height": analysis[1] if analysis else None,
        "fps": round(1.0 / period, 2) if period > 0 else None,
        "motion_vectors": source.has_motion_vectors,
        "motion_vector_fraction": round(with_vectors / frames, 3) if frames else 0.0,
        "change_passed": passed,
        "change_pass_fraction": round(passed / frames, 3) if frames else 0.0,
        "change_median": round(float(np.median(changed)), 6) if changed else None,
    }
    if source.live:
        counters = source.counters
        report |= {"dropped": counters.dropped, "reconnects": counters.reconnects,
                   "last_error": counters.last_error}
    return report


def format_probe(report: dict) -> str:
    """The report for a person, one fact a line."""
    lines = [("source", f"{report['kind']}, read for {report['seconds']:g} s")]
    if report["frames"]:
        fps = f"{report['fps']:g} fps measured" if report["fps"] else "rate unknown (one frame)"
        if report["motion_vector_fraction"]:
            vectors = f"on {report['motion_vector_fraction']:.0%} of frames (key frames have none)"
        elif report["motion_vectors"]:
            vectors = "expected, but no frame had any"
        else:
            vectors = "none: the motion-vector gate will pass every frame"
        lines += [
            ("frames", f"{report['frames']}, {fps}"),
            ("resolution", f"{report['width']}x{report['height']}, analysed at "
                           f"{report['analysis_width']}x{report['analysis_height']}"),
            ("motion vectors", vectors),
            ("change gate", f"{report['change_passed']} of {report['frames']} frames pass "
                            f"({report['change_pass_fraction']:.0%}), "
                            f"median changed area {report['change_median']:.4f}"),
        ]
    else:
        lines.append(("frames", "none"))
    if "dropped" in report:
        lines += [("dropped", f"{report['dropped']} (reading fell behind the camera)"),
                  ("reconnects", str(report["reconnects"]))]
        if report["last_error"]:
            lines.append(("last error", report["last_error"]))
    return "".join(f"{label:<16}{text}\n" for label, text in lines)
