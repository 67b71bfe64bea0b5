"""What can be known about a camera's config before the camera is there: the systemd instance
and the config agree, the store root is usable (store.check_root: writable, frames/ on one
filesystem with tmp/), the source kind's module imports, the URL parses, the file exists.
`check-config` and `run` both ask here, so a permanent problem is refused the same way (exit 78)
by both, before systemd could restart-loop on it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlsplit

from framecull.config import Config, ConfigError
from framecull.store import StoreRootError, check_root

# The Python module each source kind needs, and how to get it.
SOURCE_MODULES = {
    "rtsp": ("av", "pip install av"),
    "v4l2": ("cv2", "pip install opencv-python-headless"),
    "file": ("av", "pip install av"),
    "picamera2": ("picamera2", "on Raspberry Pi OS: sudo apt install python3-picamera2, and a venv made "
                               "with --system-site-packages"),
}
URL_SCHEMES = {"rtsp", "rtsps", "http", "https", "rtmp", "srt", "tcp", "udp"}


def bind_instance(config: Config, instance: str | None, origin: str) -> Config:
    """The config of systemd instance framecull@<instance>: its camera is the instance name
    (so the default store root is the unit's StateDirectory); a TOML naming another camera is
    refused. Without an instance the config is returned as it is."""
    if instance is None:
        return config
    if "camera" in config.model_fields_set and config.camera != instance:
        raise ConfigError(f"{origin}: camera: {config.camera!r} differs from the instance name {instance!r} "
                          f"(framecull@{instance}): make them the same, or leave camera out")
    try:
        Config(camera=instance)
    except ValueError:
        raise ConfigError(f"{origin}: instance name {instance!r} is not a camera name "
                          f"(letters, digits, . _ -)") from None
    return config.model_copy(update={"camera": instance})


def problems(config: Config, origin: str) -> list[str]:
    """One line per permanent problem, each naming the file and the key."""
    return [f"{origin}: {line}" for line in _store_problems(config.store_root) + _source_problems(config)]


def check(config: Config, origin: str) -> None:
    found = problems(config, origin)
    if found:
        raise ConfigError("\n".join(found))


def _store_problems(root: Path) -> list[str]:
    try:
        check_root(root)  # a folder (or can be one), writable, frames/ on tmp/'s filesystem
    except StoreRootError as exc:
        return [f"store.root: {exc}{_sandbox_hint(root)}"]
    return []


def _sandbox_hint(root: Path) -> str:
    if os.environ.get("INVOCATION_ID"):  # under systemd: ProtectSystem=strict allows the StateDirectory only
        return (" (under framecull@.service only /var/lib/framecull/<instance> is writable: use that root, "
                "or add ReadWritePaths= in a drop-in)")
    return ""


def _source_problems(config: Config) -> list[str]:
    s = config.source
    found = []
    if s.kind in SOURCE_MODULES:
        module, how = SOURCE_MODULES[s.kind]
        if importlib.util.find_spec(module) is None:
            found.append(f"source.kind: {s.kind!r} needs the Python module {module}, which is not installed ({how})")
    if s.kind == "rtsp":
        found += _url_problems(s.uri)
    elif s.kind == "file" and not Path(s.uri).is_file():
        found.append(f"source.uri: video file {s.uri!r} not found")
    elif s.kind == "folder" and not Path(s.uri).is_dir():
        found.append(f"source.uri: image folder {s.uri!r} not found")
    elif s.kind == "synthetic":
        from framecull.sources.synthetic import SCENES

        if (s.uri or "parking_lot") not in SCENES:
            found.append(f"source.uri: unknown synthetic scene {s.uri!r} (known: {', '.join(sorted(SCENES))})")
    return found


def _url_problems(uri: str) -> list[str]:
    try:
        url = urlsplit(uri)
        url.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        return [f"source.uri: {_redacted(uri)!r} is not a valid URL: {exc}"]
    if url.scheme not in URL_SCHEMES or not url.hostname:
        return [f"source.uri: {_redacted(uri)!r} is not a camera URL like rtsp://user:pass@host:554/stream"]
    return []


def _redacted(uri: str) -> str:
    from framecull.sources.rtsp import redact

    return redact(uri)
