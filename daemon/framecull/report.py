"""One self-contained HTML page about a replay: what each stage dropped, the scores over time,
and the kept frames as thumbnails.

The page has no external assets and no script: the timeline is inline SVG and the thumbnails
are base64 JPEG data URIs, so the single file opens from disk in any browser and can be mailed.

    framecull report out/decisions.jsonl --frames out/frames --out report.html
"""

from __future__ import annotations

import base64
import html
import json
import sqlite3
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import cv2

from framecull.atomic import write_atomic
from framecull.gates.change import ChangeGate
from framecull.gates.motion import MotionVectorGate
from framecull.gates.novelty import NoveltyGate
from framecull.memory import kept_files

CHANGE, NOVELTY = ChangeGate.name, NoveltyGate.name
STAGES = [MotionVectorGate.name, CHANGE, NOVELTY, "pacing", "budget"]  # the order a frame meets them
THUMB_WIDTH = 240
PLOT_WIDTH, PLOT_HEIGHT, PAD = 1000, 110, 40  # one SVG panel, in SVG units
MAX_COLUMNS = PLOT_WIDTH  # long runs are reduced to one value (the max) per column

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
table.counts { border-collapse: collapse; } .counts td, .counts th { padding: 3px 12px; text-align: right;
  border-bottom: 1px solid #ddd; } .counts th { text-align: left; font-weight: normal; }
svg { width: 100%; max-width: 1080px; height: auto; background: #fafafa; border: 1px solid #ddd; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 240px; font-size: 12px; overflow-wrap: anywhere; } figure:target { outline: 3px solid #d33; }
img.thumb { width: 240px; display: block; background: #eee; }
.missing { width: 240px; height: 135px; background: #eee; color: #888; display: flex;
  align-items: center; justify-content: center; }
.muted { color: #777; }
"""


def load_decisions(path: Path) -> list[dict]:
    """The decisions JSONL of a replay, one object per line (blank lines ignored)."""
    decisions = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                decisions.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON object: {exc}") from None
    return decisions


def _score(d: dict, gate: str, key: str) -> float | None:
    value = (d.get("scores") or {}).get(gate, {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-4] + "Z"


def stage_counts(decisions: list[dict]) -> dict[str, int]:
    """frames in, dropped at each stage (in pipeline order), kept, lost to storage."""
    dropped = Counter(d["stage"] for d in decisions if not d["kept"] and d["stage"] != "store")
    counts = {"frames in": len(decisions)}
    for stage in STAGES + sorted(set(dropped) - set(STAGES)):
        if dropped.get(stage) or stage in (CHANGE, NOVELTY):
            counts[f"dropped at {stage}"] = dropped.get(stage, 0)
    counts["kept"] = sum(bool(d["kept"]) for d in decisions)
    counts["lost to storage"] = sum(1 for d in decisions if not d["kept"] and d["stage"] == "store")
    return counts


def _columns(decisions: list[dict], t0: float, span: float, value) -> dict[int, float]:
    """The largest value per plot column (x in 0..PLOT_WIDTH), for frames that have one."""
    columns: dict[int, float] = {}
    for d in decisions:
        v = value(d)
        if v is not None:
            x = round((d["timestamp"] - t0) / span * (MAX_COLUMNS - 1)) if span > 0 else 0
            columns[x] = max(v, columns.get(x, v))
    return columns


def _panel(y0: float, label: str, colour: str, columns: dict[int, float], as_line: bool) -> str:
    """One panel: values scaled to its height (0 at the bottom, the panel's max at the top)."""
    top = max(columns.values(), default=0.0) or 1.0
    parts = [f'<rect x="{PAD}" y="{y0}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" fill="#fff" stroke="#ccc"/>',
             f'<text x="{PAD + 4}" y="{y0 + 14}" font-size="12" fill="{colour}">{html.escape(label)} '
             f'(max {_fmt(top)})</text>']

    def xy(x: int, v: float) -> str:
        return f"{PAD + x:.1f},{y0 + PLOT_HEIGHT - v / top * (PLOT_HEIGHT - 18):.1f}"

    if as_line and columns:
        points = " ".join(xy(x, columns[x]) for x in sorted(columns))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1" points="{points}"/>')
    else:
        parts += [f'<circle cx="{xy(x, v).split(",")[0]}" cy="{xy(x, v).split(",")[1]}" r="1.8" fill="{colour}"/>'
                  for x, v in sorted(columns.items())]
    return "\n".join(parts)


def timeline_svg(decisions: list[dict]) -> str:
    """Change gate `changed` (a line) and novelty score (dots: candidates only) over capture time,
    kept frames as red ticks linking to their thumbnails."""
    if not decisions:
        return ""
    t0, t1 = decisions[0]["timestamp"], decisions[-1]["timestamp"]
    span = t1 - t0
    first = {d["index"] for d in decisions if (d.get("scores") or {}).get(CHANGE, {}).get("first")}
    changed = _columns(decisions, t0, span,
                       lambda d: None if d["index"] in first else _score(d, CHANGE, "changed"))
    novelty = _columns(decisions, t0, span, lambda d: _score(d, NOVELTY, "score"))
    height = 2 * PLOT_HEIGHT + 3 * 20 + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_WIDTH + 2 * PAD} {height}" '
             f'role="img" aria-label="scores over time">',
             _panel(20, "change: share of the frame changed", "#1f6fb4", changed, as_line=True),
             _panel(40 + PLOT_HEIGHT, "novelty: score of each candidate", "#6a3d9a", novelty, as_line=False)]
    bottom = 40 + 2 * PLOT_HEIGHT
    for d in decisions:
        if d["kept"]:
            x = PAD + ((d["timestamp"] - t0) / span * (MAX_COLUMNS - 1) if span > 0 else 0)
            parts.append(f'<a href="#f{d["index"]}"><title>frame {d["index"]} kept</title>'
                         f'<line x1="{x:.1f}" y1="20" x2="{x:.1f}" y2="{bottom + 8}" stroke="#d33" '
                         f'stroke-opacity="0.35"/><circle cx="{x:.1f}" cy="{bottom + 10}" r="3.5" fill="#d33"/></a>')
    parts.append(f'<text x="{PAD}" y="{height - 4}" font-size="12" fill="#555">0 s</text>')
    parts.append(f'<text x="{PAD + PLOT_WIDTH}" y="{height - 4}" font-size="12" fill="#555" '
                 f'text-anchor="end">{span:.1f} s</text>')
    parts.append(f'<text x="{PAD + PLOT_WIDTH / 2}" y="{height - 4}" font-size="12" fill="#d33" '
                 f'text-anchor="middle">● kept frame (click: its thumbnail)</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _image_index(frames_dir: Path | None) -> dict[str, Path]:
    if frames_dir is None or not frames_dir.is_dir():
        return {}
    return {p.name: p for p in frames_dir.rglob("*.jpg")}


def _resolve(path: str | None, images: dict[str, Path]) -> Path | None:
    """The kept frame's image: found by name under --frames first, else the recorded path."""
    if not path:
        return None
    if Path(path).name in images:
        return images[Path(path).name]
    return Path(path) if Path(path).is_file() else None


def thumbnail_uri(image_path: Path) -> str | None:
    image = cv2.imread(str(image_path))
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > THUMB_WIDTH:
        image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else None


def memory_ids(kept: list[dict], frames_dir: Path | None) -> dict[int, int]:
    """Memory id -> frame index of the kept frames of this run, so `nearest` can link to a thumbnail.

    From memory.sqlite beside frames/ when present (its `file` names the image); otherwise ids are
    taken as 1, 2, ... in keeping order, which holds when the run started with an empty memory
    (its first kept frame had no nearest neighbour)."""
    by_name = {Path(d["path"]).name: d["index"] for d in kept if d.get("path")}
    try:
        files = kept_files(frames_dir.parent) if frames_dir else {}
    except sqlite3.Error:
        files = {}
    if files:
        return {i: by_name[Path(f).name] for i, f in files.items() if Path(f).name in by_name}
    if kept and (kept[0].get("scores") or {}).get(NOVELTY, {}).get("nearest", 0) is None:
        return {k + 1: d["index"] for k, d in enumerate(kept)}
    return {}


def _figure(d: dict, t0: float, images: dict[str, Path], ids: dict[int, int]) -> str:
    image_path = _resolve(d.get("path"), images)
    uri = thumbnail_uri(image_path) if image_path else None
    index = d["index"]
    name = html.escape(Path(d["path"]).name) if d.get("path") else "no path recorded"
    picture = (f'<img class="thumb" src="{uri}" alt="frame {index}" title="{name}">' if uri
               else '<div class="missing">image not found</div>')
    novelty = (d.get("scores") or {}).get(NOVELTY, {})
    nearest = novelty.get("nearest")
    if nearest is None:
        near = "none (first in memory)" if "nearest" in novelty else "–"
    elif nearest in ids:
        near = f'<a href="#f{ids[nearest]}">frame {ids[nearest]}</a>'
    else:
        near = f"memory #{int(nearest)} (an earlier run)"
    lines = [
        f"<b>frame {index}</b> · {d['timestamp'] - t0:.1f} s · {html.escape(d['stage'])}",
        f'<span class="muted">{_utc(d["timestamp"])}</span>',
        f"change {_fmt(_score(d, CHANGE, 'changed'))} · novelty distance {_fmt(_score(d, NOVELTY, 'distance'))}"
        f" · region {_fmt(_score(d, NOVELTY, 'region'))} · score {_fmt(_score(d, NOVELTY, 'score'))}",
        f"nearest kept: {near}",
        f'<span class="muted">{name}</span>',
    ]
    return f'<figure id="f{index}">{picture}<figcaption>{"<br>".join(lines)}</figcaption></figure>'


def render(decisions: list[dict], frames_dir: Path | None, title: str = "") -> str:
    title = title or "framecull report"
    kept = [d for d in decisions if d["kept"]]
    t0 = decisions[0]["timestamp"] if decisions else 0.0
    counts = stage_counts(decisions)
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in counts.items())
    span = f"{_utc(decisions[0]['timestamp'])} – {_utc(decisions[-1]['timestamp'])}" if decisions else "no frames"
    images = _image_index(frames_dir)
    ids = memory_ids(kept, frames_dir)
    figures = "\n".join(_figure(d, t0, images, ids) for d in kept)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">{span}</p>
<h2>Stages</h2>
<table class="counts">
{rows}
</table>
<h2>Scores over time</h2>
{timeline_svg(decisions)}
<h2>Kept frames ({len(kept)})</h2>
<div class="grid">
{figures}
</div>
</body></html>
"""


def write_report(decisions: list[dict], frames_dir: Path | None, out: Path, title: str = "") -> Path:
    """Write the report page for these decisions (dicts as in decisions.jsonl); returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, render(decisions, Path(frames_dir) if frames_dir else None, title))
    return out


def add_arguments(parser) -> None:
    parser.add_argument("decisions", help="decisions JSONL written by `framecull replay --decisions`")
    parser.add_argument("--frames", help="the folder of kept frames (default: the paths in the decisions; "
                                         "use this when the frames moved, e.g. <out>/frames)")
    parser.add_argument("--out", default="report.html", help="the HTML file to write (default: %(default)s)")
    parser.add_argument("--title", default="", help="the page title (default: the decisions file name)")


def main(args) -> int:
    path = Path(args.decisions)
    try:
        decisions = load_decisions(path)
    except (OSError, ValueError) as exc:
        print(f"framecull: cannot read decisions: {exc}", file=sys.stderr)
        return 66  # EX_NOINPUT
    frames = Path(args.frames) if args.frames else None
    if frames is not None and not frames.is_dir():
        print(f"framecull: --frames {frames} is not a folder", file=sys.stderr)
        return 66
    out = write_report(decisions, frames, Path(args.out), args.title or f"framecull report: {path.name}")
    kept = sum(bool(d["kept"]) for d in decisions)
    print(f"report: {out} ({len(decisions)} frames, {kept} kept)")
    return 0
