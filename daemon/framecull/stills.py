"""Stills: when each picture of a folder was taken, and which camera took it.

Capture time, first found wins:
  1. the file name: 2021_03_27__10_36_36, 2012-09-12_06_05_16, 2023-06-13T03_11_46,
     20230613-031146, 20230613_031146 (a trailing Z or +02:00 is honoured), unix epoch seconds
     (10 digits) or milliseconds (13 digits), or the user's strptime format (`time_format`);
  2. EXIF DateTimeOriginal (JPEG, TIFF, WebP, PNG eXIf);
  3. the file's modification time, when asked (`mtime`).
Times without a zone are local times of `timezone` (default UTC).

Camera: what stands before the time in the name ("c21" in c21_2021_03_27__10_36_36.png), else the
first subfolder under the scanned folder, else "default".
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger("framecull.stills")

# Frames further apart than this (seconds) are stills, not a stream: far beyond the frame interval
# of any video, and long enough for the light and the scene to change everywhere at once.
STILLS_GAP = 10.0

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_CAMERA = "default"

_ZONE = r"(?P<zone>Z|[+-]\d{2}:?\d{2})?"
_DATE_PATTERNS = [
    # 2021_03_27__10_36_36, 2012-09-12_06_05_16, 2023-06-13T03_11_46, 2023-06-13 03:11:46
    re.compile(r"(?<!\d)(?P<Y>\d{4})[-_.](?P<m>\d\d)[-_.](?P<d>\d\d)(?:__|[_T -])"
               r"(?P<H>\d\d)[-_:.](?P<M>\d\d)[-_:.](?P<S>\d\d)(?!\d)" + _ZONE),
    # 20230613-031146, 20230613_031146, 20230613T031146
    re.compile(r"(?<!\d)(?P<Y>\d{4})(?P<m>\d\d)(?P<d>\d\d)[-_T](?P<H>\d\d)(?P<M>\d\d)(?P<S>\d\d)(?!\d)" + _ZONE),
]
_EPOCH = re.compile(r"(?<!\d)(?P<epoch>\d{13}|\d{10})(?!\d)")
# A 10-digit number from 2001-09-09 to 2286: plausible capture times only, not a counter.
_EPOCH_MIN = 1_000_000_000

# strptime directives a user's time_format may use, as regular expressions.
_DIRECTIVES = {"Y": r"\d{4}", "y": r"\d\d", "m": r"\d\d", "d": r"\d\d", "H": r"\d\d", "I": r"\d\d",
               "M": r"\d\d", "S": r"\d\d", "f": r"\d{1,6}", "j": r"\d{3}", "p": r"[AaPp][Mm]",
               "b": r"[A-Za-z]{3}", "z": r"[+-]\d{4}", "%": "%"}

EXIF_DATETIME_ORIGINAL = 0x9003
EXIF_IFD = 0x8769


@dataclass(frozen=True, slots=True)
class Still:
    """One file of a scanned folder (100,000 of them take about 15 MB)."""

    name: str  # its path relative to the scanned folder (posix)
    camera: str
    time: float | None  # capture time, seconds since the epoch (UTC); None when unknown


@dataclass(frozen=True)
class Naming:
    """How names (or files) tell capture times: the [source] keys time_format, timezone, mtime."""

    time_format: str = ""
    timezone: str = "UTC"
    mtime: bool = False

    def zone(self):
        return zone_info(self.timezone)


def zone_info(name: str):
    """A tz database zone (or UTC); ValueError naming the zone when it is unknown."""
    if name in ("", "UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use a tz database name like 'Europe/Berlin', or 'UTC')") \
            from None


def format_regex(time_format: str) -> re.Pattern:
    """A strptime format ("IMG_%d%m%Y_%H%M") as a regex that finds such a time inside a name."""
    parts, i = [], 0
    while i < len(time_format):
        if time_format[i] == "%" and i + 1 < len(time_format):
            directive = time_format[i + 1]
            if directive not in _DIRECTIVES:
                raise ValueError(f"time_format: %{directive} is not supported "
                                 f"(use %{', %'.join(sorted(set(_DIRECTIVES) - {'%'}))})")
            parts.append(_DIRECTIVES[directive])
            i += 2
        else:
            parts.append(re.escape(time_format[i]))
            i += 1
    return re.compile("".join(parts))


def time_from_name(stem: str, naming: Naming, pattern: re.Pattern | None = None) -> tuple[float, int] | None:
    """(capture time, where the time starts in the name), or None when the name holds no time."""
    if naming.time_format:
        pattern = pattern or format_regex(naming.time_format)
        for match in pattern.finditer(stem):
            try:
                when = datetime.strptime(match.group(0), naming.time_format)
            except ValueError:
                continue
            return _seconds(when, naming), match.start()
    for date_pattern in _DATE_PATTERNS:
        for match in date_pattern.finditer(stem):
            g = match.groupdict()
            try:
                when = datetime(int(g["Y"]), int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"]))
            except ValueError:
                continue
            if g["zone"]:
                when = when.replace(tzinfo=_parse_zone(g["zone"]))
            return _seconds(when, naming), match.start()
    for match in _EPOCH.finditer(stem):
        value = int(match.group("epoch"))
        seconds = value / 1000 if len(match.group("epoch")) == 13 else float(value)
        if seconds >= _EPOCH_MIN:
            return seconds, match.start()
    return None


def _parse_zone(text: str) -> timezone:
    if text == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _seconds(when: datetime, naming: Naming) -> float:
    if when.tzinfo is None:
        when = when.replace(tzinfo=naming.zone())
    return when.timestamp()


def exif_time(path: Path, naming: Naming) -> float | None:
    """EXIF DateTimeOriginal (or DateTime) of an image file, None when it has none or is unreadable.
    The image data is not decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            text = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(0x0132)
    except Exception:  # noqa: BLE001 - any unreadable file simply has no EXIF time
        return None
    if not isinstance(text, str):
        return None
    try:
        return _seconds(datetime.strptime(text.strip("\0 "), "%Y:%m:%d %H:%M:%S"), naming)
    except ValueError:
        return None


def camera_name(text: str) -> str:
    """A camera name usable in file names and configs: letters, digits, . _ - (64 at most)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._- ")
    return text[:64] or DEFAULT_CAMERA


def describe(path: Path, name: str, naming: Naming, pattern: re.Pattern | None = None) -> Still:
    """The Still for one file: its capture time and camera (see the module doc)."""
    stem = PurePosixPath(name).name.rsplit(".", 1)[0]
    found = time_from_name(stem, naming, pattern)
    prefix = stem[: found[1]] if found else ""
    time = found[0] if found else exif_time(path, naming)
    if time is None and naming.mtime:
        try:
            time = os.stat(path).st_mtime
        except OSError:
            time = None
    folder = PurePosixPath(name).parts[:-1]
    camera = prefix.strip("._- ") or (folder[0] if folder else "")
    return Still(name, sys.intern(camera_name(camera) if camera else DEFAULT_CAMERA), time)


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def scan(folder: Path, naming: Naming) -> list[Still]:
    """Every image file under `folder` (subfolders included), ordered by capture time, then by
    natural name order (frame2 before frame10). Stills with no capture time come last, in natural
    name order; the caller decides what to do with them."""
    pattern = format_regex(naming.time_format) if naming.time_format else None
    stills = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = Path(directory)
        for file in files:
            if Path(file).suffix.lower() in IMAGE_SUFFIXES and not file.startswith("."):
                path = base / file
                stills.append(describe(path, path.relative_to(folder).as_posix(), naming, pattern))
    # Natural name order only where there is no time to go by: its keys cost ~1 KB a name.
    untimed = sorted((s for s in stills if s.time is None), key=lambda s: natural_key(s.name))
    stills = [s for s in stills if s.time is not None]
    stills.sort(key=lambda s: (s.time, s.name))
    return stills + untimed


def by_camera(stills: list[Still]) -> dict[str, list[Still]]:
    """The stills of each camera, in the order given; cameras in name order."""
    groups: dict[str, list[Still]] = {}
    for still in stills:
        groups.setdefault(still.camera, []).append(still)
    return dict(sorted(groups.items()))


def naming_of(source_config) -> Naming:
    """The Naming a [source] section describes."""
    return Naming(source_config.time_format, source_config.timezone, source_config.mtime)
