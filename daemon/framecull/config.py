"""Per-camera TOML -> validated config models. Every default lives here, once."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, ValidationError, field_validator

EX_CONFIG = 78  # sysexits.h: configuration error; systemd must not restart-loop on it

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Fraction, Fraction]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: str | int | float) -> float:
    """'45s', '30m', '2h', '30d' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration like '90s', '30m', '2h' or '7d'")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]  # seconds, or "30m", "2h"...


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Section):
    kind: Literal["picamera2", "v4l2", "rtsp", "file", "folder", "synthetic"] = "synthetic"
    uri: str = ""  # device, URL, file or folder, by kind; for synthetic: the scene name
    fps: float = Field(0.0, ge=0.0, le=120.0)  # frames analysed per second; 0 = every frame
    # Live cameras (rtsp, v4l2, picamera2):
    capture_size: tuple[int, int] = (0, 0)  # (width, height) asked of the camera; (0, 0) = its default
    capture_fps: float = Field(0.0, ge=0.0, le=120.0)  # frame rate asked of the camera; 0 = its default
    fourcc: str = Field("MJPG", pattern=r"^([A-Za-z0-9]{4})?$")  # v4l2 pixel format; "" = the driver's
    transport: Literal["tcp", "udp"] = "tcp"  # rtsp
    timeout: Duration = 5.0  # a read that takes longer means the camera is gone (opening: twice this)
    reconnect_max: Duration = 60.0  # reconnect delays double from 1 s up to this

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


class MotionVectorsConfig(Section):
    enabled: bool = True
    min_magnitude: float = Field(1.0, ge=0.0, le=64.0)  # pixels a 16x16 block must move
    min_area: Fraction = 0.002  # fraction of the frame the moving blocks must cover
    min_cluster: int = Field(2, ge=2, le=1000)  # moving blocks that must touch; a lone block is noise
    hold_frames: int = Field(5, ge=0, le=10000)  # frames passed after motion stops (event ends, B-frames)
    count_intra: bool = True  # intra-coded blocks are new content; false for cameras with intra refresh


class Mask(Section):
    name: str = Field(min_length=1)
    polygon: list[Point] = Field(min_length=3)


class ChangeConfig(Section):
    width: int = Field(320, ge=32, le=1920)  # analysis width; height keeps the aspect ratio
    blur: int = Field(5, ge=0, le=31)  # Gaussian kernel size (odd); 0 or 1 = no blur
    threshold: float = Field(25.0, ge=1.0, le=255.0)  # grey levels, at normal daylight contrast
    min_area: Fraction = 0.0005  # contours smaller than this fraction of the frame are ignored
    min_changed: Fraction = 0.005  # fraction of the frame the accepted contours must cover
    light_change: float = Field(0.2, ge=0.0, le=10.0)  # brightness change that is a new lighting state; 0 = off
    reference: Literal["last_judged", "previous", "background"] = "last_judged"
    background_rate: float = Field(0.05, gt=0.0, le=1.0)  # weight of a new frame in the background
    border: tuple[Fraction, Fraction, Fraction, Fraction] = (0.0, 0.0, 0.0, 0.0)  # t, r, b, l
    masks: list[Mask] = Field(default_factory=list)

    @field_validator("blur")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v > 1 and v % 2 == 0:
            raise ValueError("must be odd (a Gaussian kernel size), or 0 for no blur")
        return v

    @field_validator("border")
    @classmethod
    def _border_leaves_a_frame(cls, v: tuple[float, float, float, float]) -> tuple:
        top, right, bottom, left = v
        if top + bottom >= 1.0 or left + right >= 1.0:
            raise ValueError("the crop leaves nothing of the frame (top+bottom and left+right must be < 1)")
        return v


class ModelInputConfig(Section):
    """How to feed a bring-your-own model: x = (pixel * scale - mean) / std, per channel."""

    name: str = ""  # "" = the graph's only input
    width: int = Field(0, ge=0, le=4096)  # 0 = from the graph's input shape
    height: int = Field(0, ge=0, le=4096)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["", "float32", "float16"] = ""  # "" = from the graph
    color: Literal["BGR", "RGB"] = "BGR"
    scale: float = Field(1.0, gt=0.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("std")
    @classmethod
    def _positive(cls, v: tuple[float, float, float]) -> tuple:
        if min(v) <= 0:
            raise ValueError("every std must be > 0")
        return v


class NoveltyConfig(Section):
    enabled: bool = True
    model: str = "default"  # "default" (shipped) or a path to an .onnx file
    output: str = ""  # tensor to read: a graph output or an internal tensor; "" = first output
    grid: tuple[int, int] = (0, 0)  # (cols, rows) of a grid embedding; (0, 0) = from the model
    min_distance: float = Field(0.05, ge=0.0, le=2.0)  # whole-frame cosine distance to the nearest kept frame
    region: bool = True  # also compare grid cells, so a small new object counts
    min_region_distance: float = Field(0.2, ge=0.0, le=2.0)  # mean distance of the most-changed cells
    region_cells: int = Field(3, ge=1, le=64)  # how many of the most-changed cells are averaged
    neighbours: int = Field(5, ge=1, le=64)  # kept frames compared cell by cell
    min_interval: Duration = 1.0  # during an event, at most one frame per this many seconds
    # Target keep rate: > 0 lets the thresholds adapt (slowly, x0.25..x4) so that about this many
    # frames per hour of capture time are kept, still the most novel; 0 = fixed thresholds.
    target_per_hour: float = Field(0.0, ge=0.0, le=36000.0)
    capacity: int = Field(100_000, ge=1)  # kept frames remembered; the oldest are forgotten first
    forget_after: Duration = 0.0  # forget kept frames older than this ("30d"); 0 = never
    input: ModelInputConfig = Field(default_factory=ModelInputConfig)


class GatesConfig(Section):
    motion_vectors: MotionVectorsConfig = Field(default_factory=MotionVectorsConfig)
    change: ChangeConfig = Field(default_factory=ChangeConfig)
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)


class StoreConfig(Section):
    root: str = ""  # empty: /var/lib/framecull/<camera>
    quality: int = Field(92, ge=1, le=100)  # JPEG quality of kept frames
    max_per_hour: int = Field(0, ge=0)  # 0 = no cap
    max_per_day: int = Field(0, ge=0)  # 0 = no cap
    max_bytes: ByteSize = ByteSize(0)  # e.g. "20GB"; 0 = no cap
    heartbeat: Duration = 0.0  # keep a frame when nothing was kept this long; 0 = off


class ServiceConfig(Section):
    metrics: str = ""  # e.g. "127.0.0.1:9108"; off when empty


class Config(Section):
    camera: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    source: SourceConfig = Field(default_factory=SourceConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    return config_from_dict(data, origin=str(path))


def config_from_dict(data: dict, origin: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}: {_key(e['loc'])}: {_reason(e)}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def to_toml(config: Config) -> str:
    """The effective config as TOML (what check-config prints)."""
    return _toml_table(config.model_dump(mode="json"), prefix="")


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


def _toml_table(table: dict, prefix: str) -> str:
    scalars, tables, arrays = [], [], []
    for key, value in table.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + _toml_table(value, prefix=f"{name}.")
    for key, items in arrays:
        name = f"{prefix}{key}"
        for item in items:
            out += f"\n[[{name}]]\n" + _toml_table(item, prefix=f"{name}.")
    return out
