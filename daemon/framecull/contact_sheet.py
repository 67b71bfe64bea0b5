"""A contact sheet: thumbnails of kept frames in one PNG, for a quick look."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

THUMB_WIDTH = 200
COLUMNS = 5


def _capture_time(path: Path) -> str:
    """'HH:MM:SS' from a stored name <camera>_<YYYYmmddTHHMMSS.ffffffZ>_<seq>, else the name."""
    stamp = path.stem.split("_")[-2] if path.stem.count("_") >= 2 else ""
    if len(stamp) >= 15 and stamp[8] == "T":
        return f"{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}"
    return path.stem


def write_contact_sheet(images: list[Path], out: Path) -> Path:
    thumbs = []
    for path in images:
        image = cv2.imread(str(path))
        if image is None:
            continue
        h, w = image.shape[:2]
        thumb = cv2.resize(image, (THUMB_WIDTH, round(h * THUMB_WIDTH / w)), interpolation=cv2.INTER_AREA)
        label = _capture_time(path)
        cv2.putText(thumb, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(thumb, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        thumbs.append(thumb)
    if not thumbs:
        sheet = np.full((60, THUMB_WIDTH * 2, 3), 255, np.uint8)
        cv2.putText(sheet, "no frames kept", (10, 35), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    else:
        th = max(t.shape[0] for t in thumbs)
        rows = -(-len(thumbs) // COLUMNS)
        cols = min(COLUMNS, len(thumbs))
        sheet = np.full((rows * (th + 4) + 4, cols * (THUMB_WIDTH + 4) + 4, 3), 255, np.uint8)
        for i, thumb in enumerate(thumbs):
            y, x = 4 + (i // COLUMNS) * (th + 4), 4 + (i % COLUMNS) * (THUMB_WIDTH + 4)
            sheet[y : y + thumb.shape[0], x : x + THUMB_WIDTH] = thumb
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise OSError(f"cannot write contact sheet {out}")
    return out
