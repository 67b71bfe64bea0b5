"""The replay report: one self-contained HTML page, built from a real replay, opened in a real browser."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from framecull import report

pytestmark = pytest.mark.slow  # real servers, subprocesses or whole clips: `make test` only

CHROMIUM_APT = "apt-get install -y --no-install-recommends chromium"
THUMB = re.compile(r'<img[^>]*class="thumb"')


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A real replay: `framecull demo` writes decisions.jsonl and the kept frames."""
    out = tmp_path_factory.mktemp("report") / "demo"
    result = subprocess.run([sys.executable, "-m", "framecull", "demo", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [out] = list(out.iterdir())  # the demo makes a folder of its own for the run
    return out, report.load_decisions(out / "decisions.jsonl")


def build(demo, tmp_path, frames: Path | None = None) -> tuple[Path, str, list[dict]]:
    out, decisions = demo
    page = report.write_report(decisions, frames if frames is not None else out / "frames", tmp_path / "r.html", "lot")
    return page, page.read_text(), decisions


def test_page_counts_every_stage_and_shows_every_kept_frame(demo, tmp_path):
    page, text, decisions = build(demo, tmp_path)
    kept = [d for d in decisions if d["kept"]]
    assert 0 < len(kept) < len(decisions)
    assert len(THUMB.findall(text)) == len(kept)
    for d in kept:
        assert f'id="f{d["index"]}"' in text
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>(\d+)</td></tr>", text))
    assert int(rows["frames in"]) == len(decisions)
    assert int(rows["kept"]) == len(kept)
    for stage, count in Counter(d["stage"] for d in decisions if not d["kept"]).items():
        assert int(rows[f"dropped at {stage}"]) == count
    # The timeline marks each kept frame once, and plots the change score of the frames.
    svg = text[text.index("<svg"):text.index("</svg>")]
    assert svg.count('fill="#d33"/>') == len(kept)
    assert "<polyline" in svg
    # Self-contained: no script, nothing fetched from anywhere, thumbnails inline as JPEG.
    assert "<script" not in text
    assert not re.search(r'(src|href)="(?!#|data:image/jpeg;base64,)', text)
    # The nearest kept neighbour links to that frame's thumbnail.
    nearest = re.findall(r'nearest kept: <a href="#f(\d+)">', text)
    assert nearest and all(f'id="f{n}"' in text for n in nearest)


def test_thumbnails_are_the_kept_frames_downscaled(demo, tmp_path):
    _, text, decisions = build(demo, tmp_path)
    first = next(d for d in decisions if d["kept"])
    uri = re.search(rf'<figure id="f{first["index"]}"><img class="thumb" src="data:image/jpeg;base64,([^"]+)"',
                    text).group(1)
    import base64

    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(first["path"])
    assert thumb.shape[1] == report.THUMB_WIDTH
    small = cv2.resize(original, thumb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(np.int16) - thumb).mean() < 6


def test_frames_that_moved_are_found_under_frames_dir(demo, tmp_path):
    out, decisions = demo
    moved = tmp_path / "pulled"
    shutil.copytree(out / "frames", moved)
    recorded = [dict(d, path=str(tmp_path / "gone" / Path(d["path"]).name) if d["path"] else None) for d in decisions]
    kept = sum(d["kept"] for d in decisions)
    text = report.write_report(recorded, moved, tmp_path / "a.html").read_text()
    assert len(THUMB.findall(text)) == kept
    text = report.write_report(recorded, None, tmp_path / "b.html").read_text()
    assert len(THUMB.findall(text)) == 0 and text.count("image not found") == kept


def test_counts_lost_and_budget_frames(tmp_path):
    base = {"timestamp": 1.0, "scores": {}, "path": None}
    decisions = [dict(base, index=0, kept=True, stage="novelty"), dict(base, index=1, kept=False, stage="change"),
                 dict(base, index=2, kept=False, stage="store"), dict(base, index=3, kept=False, stage="budget"),
                 dict(base, index=4, kept=False, stage="motion_vectors")]
    assert report.stage_counts(decisions) == {
        "frames in": 5, "dropped at motion_vectors": 1, "dropped at change": 1, "dropped at novelty": 0,
        "dropped at budget": 1, "kept": 1, "lost to storage": 1}
    text = report.write_report(decisions, None, tmp_path / "r.html").read_text()
    assert "image not found" in text and "<svg" in text


def test_main_writes_the_page_and_refuses_a_missing_file(demo, tmp_path, capsys):
    out, decisions = demo
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    page = tmp_path / "sub" / "report.html"
    assert report.main(parser.parse_args([str(out / "decisions.jsonl"), "--frames", str(out / "frames"),
                                          "--out", str(page)])) == 0
    assert len(THUMB.findall(page.read_text())) == sum(d["kept"] for d in decisions)
    assert str(page) in capsys.readouterr().out
    assert report.main(parser.parse_args([str(tmp_path / "none.jsonl"), "--out", str(page)])) == 66
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(decisions[0]) + "\n{not json\n")
    assert report.main(parser.parse_args([str(bad)])) == 66
    assert "bad.jsonl:2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed: the report page cannot be opened in a real browser"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI must install: {CHROMIUM_APT})")
        pytest.skip(f"{message} (install: {CHROMIUM_APT})")
    return path


def headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_page_opens_in_headless_chromium(demo, tmp_path, chromium):
    page, _, decisions = build(demo, tmp_path)
    kept = sum(d["kept"] for d in decisions)
    dom = headless(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(THUMB.findall(dom.stdout)) == kept
    assert "<svg" in dom.stdout
    shot = tmp_path / "shot.png"
    result = headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000",
                      page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2000, 1200)
    assert image.std() > 50  # measured: 72 with thumbnails, 35 with undecodable ones
    # The thumbnails fill much of the page with the lot's grey asphalt: a page whose images failed
    # to decode would be mostly white (measured: 0.31 with thumbnails, 0.06 with undecodable ones).
    not_white = (image.min(axis=2) < 200).mean()
    assert not_white > 0.15, not_white
