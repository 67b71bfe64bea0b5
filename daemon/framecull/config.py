"""Per-camera TOML -> validated config models. Every default lives here, once."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

EX_CONFIG = 78  # sysexits.h: configuration error; systemd must not restart-loop on it

MIN_VISIBLE = 0.01  # of the frame that the border and masks must leave to judge
MIN_MAX_BYTES = 100 * 10**6  # a cap below this holds too few frames to be meant ("20" meant as 20 GB)

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Fraction, Fraction]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | int | float) -> float:
    """'45s', '30m', '2h', '30d' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:  # a list, a table, a date, true: ValueError, so pydantic names the key
        raise ValueError(f"{value!r} is not a duration like '90s', '30m', '2h' or '7d'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]  # seconds, or "30m", "2h"...


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def D(default, description: str, **constraints):  # noqa: N802 - reads as a field declaration
    """A config field: its default (written here, once) and what it means (check-config prints it)."""
    if callable(default):
        return Field(default_factory=default, description=description, **constraints)
    return Field(default, description=description, **constraints)


class SourceConfig(Section):
    kind: Literal["picamera2", "v4l2", "rtsp", "file", "folder", "synthetic"] = D(
        "synthetic", "picamera2 | v4l2 | rtsp | file | folder | synthetic")
    uri: str = D("", "by kind: an rtsp:// URL, a /dev/video device, the picamera2 camera number, a video "
                     "file, an image folder, a synthetic scene name")
    fps: float = D(0.0, "frames analysed per second; 0 = every frame the source delivers; at least one an "
                        "hour (0.0003)", ge=0.0, le=120.0)
    analysis_width: int = D(320, "width of the gray analysis plane every pixel gate looks at; its height "
                                 "keeps the aspect ratio", ge=32, le=1920)
    capture_size: tuple[int, int] = D((0, 0), "live cameras: [width, height] asked of the camera; [0, 0] = "
                                              "its default")
    capture_fps: float = D(0.0, "live cameras: frame rate asked of the camera; 0 = its default", ge=0.0, le=120.0)
    fourcc: str = D("MJPG", "v4l2 pixel format (MJPG, YUYV, ...); \"\" = the driver's",
                    pattern=r"^([A-Za-z0-9]{4})?$")
    transport: Literal["tcp", "udp"] = D("tcp", "rtsp transport: tcp | udp")
    timeout: Duration = D(5.0, "live cameras: a read that takes longer means the camera is gone "
                               "(opening gets twice this)")
    reconnect_max: Duration = D(60.0, "live cameras: reconnect delays double from 1 s up to this")
    time_format: str = D("", "folder: strptime format of the capture time in the file names (\"IMG_%d%m%Y_%H%M\"), "
                             "for names the built-in patterns do not know; \"\" = the built-in patterns only")
    timezone: str = D("UTC", "folder: zone of capture times that carry none (a tz database name, "
                             "\"Europe/Berlin\")")
    mtime: bool = D(False, "folder: stills without a time in the name or EXIF are dated by their file's "
                           "modification time")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from framecull.stills import zone_info

        zone_info(v)
        return v

    @field_validator("time_format")
    @classmethod
    def _usable_format(cls, v: str) -> str:
        from framecull.stills import format_regex

        format_regex(v)
        return v

    @field_validator("fps")
    @classmethod
    def _at_least_one_an_hour(cls, v: float) -> float:
        if 0 < v < 1 / 3600:
            raise ValueError("fewer than one frame an hour switches the camera off; give at least 0.0003, or 0 "
                             "for every frame")
        return v

    @field_validator("timeout", "reconnect_max")
    @classmethod
    def _at_least_a_second(cls, v: float) -> float:
        if not 1.0 <= v <= 3600.0:
            raise ValueError("must be between 1 s and 1 h")
        return v

    @field_validator("capture_size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if (v[0] == 0) != (v[1] == 0) or not (0 <= v[0] <= 8192 and 0 <= v[1] <= 8192):
            raise ValueError("give both width and height (up to 8192), or [0, 0] for the camera's default")
        return v


class Mask(Section):
    name: str = Field(min_length=1, description="what the masked area is (shown by framecull preview)")
    polygon: list[Point] = Field(min_length=3, description="[x, y] fractions of the frame, (0, 0) = top left")


class RegionsConfig(Section):
    """What every gate that looks at pixels ignores."""

    border: tuple[Fraction, Fraction, Fraction, Fraction] = D(
        (0.0, 0.0, 0.0, 0.0), "crop before analysis: top, right, bottom, left, fractions of the frame")
    masks: list[Mask] = D(list, "areas that never count as change or motion: timestamps, sky, trees, a road")

    @field_validator("border")
    @classmethod
    def _border_leaves_a_frame(cls, v: tuple[float, float, float, float]) -> tuple:
        top, right, bottom, left = v
        if top + bottom >= 1.0 or left + right >= 1.0:
            raise ValueError("the crop leaves nothing of the frame (top+bottom and left+right must be < 1)")
        return v

    @model_validator(mode="after")
    def _leaves_something_to_judge(self) -> "RegionsConfig":
        from framecull.regions import valid_mask  # the gates' own mask, drawn on a small plane

        seen = float(valid_mask((120, 160), self).mean()) / 255
        if seen < MIN_VISIBLE:
            raise ValueError(f"the border and masks leave {seen:.1%} of the frame to judge (at least "
                             f"{MIN_VISIBLE:.0%} is needed): nothing would ever be kept")
        return self


class LightingConfig(Section):
    min_change: float = D(0.2, "a change of mean brightness by this ratio (either way) is a new lighting "
                               "state: a candidate for the change gate, novel to the novelty gate when no "
                               "near kept frame has that brightness; 0 = off", ge=0.0, le=10.0)


class MotionVectorsConfig(Section):
    enabled: bool | Literal["auto"] = D(
        "auto", "drop frames whose H.264 motion vectors show nothing moving; auto = where the vectors come "
                "with the stream (file, rtsp), not picamera2 (its lores encoder would run only for them and "
                "costs more than the change gate it spares); true = there too; false = never")
    min_magnitude: float = D(1.0, "pixels a 16x16 block must move to count, at least", ge=0.0, le=64.0)
    noise_factor: float = D(4.0, "a block counts when its vector is this many times longer than the "
                                 "stream's vector noise (RMS, measured on still blocks)", ge=1.0, le=20.0)
    min_area: Fraction = D(0.0005, "fraction of the frame the moving blocks must cover")
    min_cluster: int = D(2, "moving blocks that must touch; a lone block is noise", ge=2, le=1000)
    hold_frames: int = D(2, "frames still passed after motion stops (an event's last frames)",
                         ge=0, le=10000)
    max_gap: Duration = D(2.0, "one frame passes when none passed for this long, so that what vectors cannot "
                               "see (a slow creep, light) reaches the change gate; 0 = never")


class ChangeConfig(Section):
    blur: int = D(5, "Gaussian kernel size, odd; 0 or 1 = no blur", ge=0, le=31)
    threshold: float = D(25.0, "grey-level difference that counts as changed, at daylight contrast "
                               "(lower in flat, dark scenes; never below 3.5 noise sigmas)", ge=1.0, le=255.0)
    min_area: Fraction = D(0.0005, "changed blobs smaller than this fraction of the frame are ignored")
    min_changed: Fraction = D(0.005, "a frame is a candidate when the accepted blobs cover this fraction")
    reference: Literal["last_judged", "previous", "background"] = D(
        "last_judged", "compare with: the last frame that passed (last_judged), the frame before "
                       "(previous), or a running average (background)")
    background_rate: float = D(0.05, "weight of each new frame in the background reference", gt=0.0, le=1.0)

    @field_validator("blur")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v > 1 and v % 2 == 0:
            raise ValueError("must be odd (a Gaussian kernel size), or 0 for no blur")
        return v


class ModelInputConfig(Section):
    """How to feed a bring-your-own model: x = (pixel * scale - mean) / std, per channel."""

    name: str = D("", "input tensor; \"\" = the graph's only input")
    width: int = D(0, "input width; 0 = from the graph's input shape", ge=0, le=4096)
    height: int = D(0, "input height; 0 = from the graph's input shape", ge=0, le=4096)
    layout: Literal["NCHW", "NHWC"] = D("NCHW", "NCHW | NHWC")
    dtype: Literal["", "float32", "float16"] = D("", "float32 | float16; \"\" = from the graph")
    color: Literal["BGR", "RGB"] = D("BGR", "channel order the model expects")
    scale: float = D(1.0, "pixel values are multiplied by this first", gt=0.0)
    mean: tuple[float, float, float] = D((0.0, 0.0, 0.0), "subtracted per channel, after scale")
    std: tuple[float, float, float] = D((1.0, 1.0, 1.0), "divided per channel, after mean")

    @field_validator("std")
    @classmethod
    def _positive(cls, v: tuple[float, float, float]) -> tuple:
        if min(v) <= 0:
            raise ValueError("every std must be > 0")
        return v


class NoveltyConfig(Section):
    enabled: bool = D(True, "keep a candidate only if it is far from every frame kept before")
    model: str = D("default", "\"default\" (shipped) or a path to an .onnx file")
    output: str = D("", "tensor to read: a graph output or an internal tensor; \"\" = the first output")
    grid: tuple[int, int] = D((0, 0), "[cols, rows] of a grid embedding; [0, 0] = from the model")
    min_distance: float = D(0.05, "whole-frame cosine distance (0..2) to the nearest kept frame that is novel",
                            ge=0.0, le=2.0)
    region: bool = D(True, "also compare grid cells, so a small new object counts")
    min_region_distance: float = D(0.2, "mean distance of the most-changed cells that is novel", ge=0.0, le=2.0)
    region_cells: int = D(3, "how many of the most-changed cells are averaged", ge=1, le=64)
    neighbours: int = D(5, "kept frames compared cell by cell", ge=1, le=64)
    target_per_hour: float = D(0.0, "> 0: the distance thresholds adapt slowly (x0.25..x4) so that about "
                                    "this many frames are kept per hour of capture time; 0 = fixed",
                               ge=0.0, le=36000.0)
    capacity: int = D(100_000, "kept frames remembered; the oldest are forgotten first", ge=1)
    forget_after: Duration = D(0.0, "forget kept frames older than this (\"30d\"); 0 = never")
    input: ModelInputConfig = D(ModelInputConfig, "how to feed a bring-your-own model")


class GatesConfig(Section):
    motion_vectors: MotionVectorsConfig = D(MotionVectorsConfig, "the motion-vector gate")
    change: ChangeConfig = D(ChangeConfig, "the change gate")
    novelty: NoveltyConfig = D(NoveltyConfig, "the novelty gate")


class PacingConfig(Section):
    min_interval: Duration = D(1.0, "while candidates keep coming, keep at most one frame (the most novel) "
                                    "per this much time; at most 1 h", le=3600.0)
    heartbeat: Duration = D(0.0, "when nothing was kept this long, one frame skips the cheap gates and "
                                 "goes to novelty; 0 = off")


class BudgetConfig(Section):
    max_per_hour: int = D(0, "kept frames per rolling hour; 0 = no cap", ge=0)
    max_per_day: int = D(0, "kept frames per rolling day; 0 = no cap", ge=0)
    max_bytes: ByteSize = D(ByteSize(0), "cap on frames/ on disk (\"20GB\"), oldest deleted first; 0 = no cap; "
                                         "at least 100MB")

    @field_validator("max_bytes")
    @classmethod
    def _holds_frames(cls, v: ByteSize) -> ByteSize:
        if 0 < v < MIN_MAX_BYTES:
            raise ValueError(f"{int(v)} bytes hold only a few frames (a 1080p frame is about 0.5 MB): every kept "
                             f"frame would be deleted as it is written while the memory keeps it; give a size "
                             f"like \"20GB\" (at least 100MB), or 0 for no cap")
        return v


class StoreConfig(Section):
    root: str = D("", "where frames/, memory.sqlite and status.json live; \"\" = /var/lib/framecull/<camera>")
    quality: int = D(92, "JPEG quality of kept frames", ge=1, le=100)


class ServiceConfig(Section):
    metrics: str = D("", "Prometheus endpoint, e.g. \"127.0.0.1:9108\"; off when empty")

    @field_validator("metrics")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if v and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{v!r} is not HOST:PORT with a port from 1 to 65535")
        return v


class Config(Section):
    camera: str = D("default", "names the instance, the stored files and the log lines",
                    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    source: SourceConfig = D(SourceConfig, "where frames come from")
    regions: RegionsConfig = D(RegionsConfig, "what every pixel gate ignores")
    lighting: LightingConfig = D(LightingConfig, "when a change of brightness is a new state")
    gates: GatesConfig = D(GatesConfig, "the gates, cheapest first")
    pacing: PacingConfig = D(PacingConfig, "how often frames are kept during events and in quiet times")
    budget: BudgetConfig = D(BudgetConfig, "caps on what is kept")
    store: StoreConfig = D(StoreConfig, "where kept frames are written")
    service: ServiceConfig = D(ServiceConfig, "the daemon's own settings")

    @property
    def store_root(self) -> Path:
        return Path(self.store.root or f"/var/lib/framecull/{self.camera}")

    def digest(self) -> str:
        """Short hash of the effective config, written into every sidecar."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigError(Exception):
    """A config that cannot be used; str() is the message for the operator."""


def _key(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _reason(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return error["msg"].removeprefix("Value error, ")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if text.startswith("\ufeff"):
        raise ConfigError(f"{path}: starts with a byte-order mark (BOM, U+FEFF): save it as UTF-8 without BOM")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed TOML: arrays or tables nested too deeply") from None
    return config_from_dict(data, origin=str(path))


def config_from_dict(data: dict, origin: str = "<config>") -> Config:
    """Validated strictly, as JSON types: `quality = true` or `enabled = "yes"` are refused, not
    coerced; a TOML date or time is refused wherever it stands (no key takes one)."""
    try:
        dates = _dates(data)
        if dates:
            raise ConfigError("\n".join(f"{origin}: {_key(loc)}: {value.isoformat()} is a TOML date/time, which "
                                         "no key takes" for loc, value in dates))
        return Config.model_validate_json(json.dumps(data, default=_json_value), strict=True)
    except ValidationError as exc:
        lines = [f"{origin}: {_key(e['loc'])}: {_reason(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    except RecursionError:
        raise ConfigError(f"{origin}: arrays or tables nested too deeply") from None


def _dates(data, loc: tuple = ()) -> list[tuple[tuple, object]]:
    """(key path, value) of every TOML date or time in `data`."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    found = []
    for key, value in items:
        if isinstance(value, (datetime.date, datetime.time)):
            found.append(((*loc, key), value))
        else:
            found += _dates(value, (*loc, key))
    return found


def _json_value(value):
    if isinstance(value, (tuple, Path)):
        return list(value) if isinstance(value, tuple) else str(value)
    raise TypeError(f"{value!r} is not a config value")


def to_toml(config: Section, explain: bool = True) -> str:
    """The effective config as TOML (what check-config prints), each key followed by what it means."""
    return _toml_table(config, "", explain).lstrip("\n")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(model: Section, prefix: str, explain: bool) -> str:
    data = model.model_dump(mode="json")
    fields = type(model).model_fields
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        attr = getattr(model, key)
        note = f"  # {fields[key].description}" if explain and fields[key].description else ""
        if isinstance(attr, Section):
            tables.append((key, attr, note))
        elif isinstance(attr, list) and attr and all(isinstance(v, Section) for v in attr):
            arrays.append((key, attr, note))
        else:
            scalars.append(f"{key} = {_toml_value(value)}{note}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, table, note in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]{note}\n" + _toml_table(table, f"{name}.", explain)
    for key, items, note in arrays:
        name = f"{prefix}{key}"
        for item in items:
            out += f"\n[[{name}]]{note}\n" + _toml_table(item, f"{name}.", explain)
    return out
