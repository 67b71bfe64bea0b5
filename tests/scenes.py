"""Small generated pictures and real H.264 files for the tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import av
import cv2
import numpy as np


def textured_background(seed: int = 0, height: int = 360, width: int = 640) -> np.ndarray:
    """A float32 gray scene with fine texture, broad shading and a white line (0..255)."""
    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.normal(110, 25, (height, width)).astype(np.float32), (0, 0), 2.0)
    scene += cv2.resize(rng.normal(0, 30, (9, 16)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(scene, (width // 12, height * 5 // 9), (width * 15 // 16, height * 5 // 9 + 5), 230, -1)
    return scene


def textured_thing(height: int, width: int, level: float, seed: int, spread: float = 20.0,
                   blur: float = 1.5) -> np.ndarray:
    """A float32 patch of fine texture around `level` (a person, a car, a ball)."""
    rng = np.random.default_rng(seed)
    return level + cv2.GaussianBlur(rng.normal(0, spread, (height, width)).astype(np.float32), (0, 0), blur)


def paste(picture: np.ndarray, thing: np.ndarray, x: float, y: int) -> None:
    """Draw `thing` at (x, y), x to a fraction of a pixel (a creeping car moves 0.4 px a frame),
    clipped at the picture's left and right edges."""
    h, w = thing.shape
    x0 = int(np.floor(x))
    shifted = cv2.warpAffine(thing, np.float32([[1, 0, x - x0], [0, 1, 0]]), (w + 1, h),
                             borderMode=cv2.BORDER_REPLICATE)
    left, right = max(x0, 0), min(x0 + w + 1, picture.shape[1])
    if right > left:
        picture[y:y + h, left:right] = shifted[:, left - x0:right - x0]


def with_car(scene: np.ndarray, x: int = 300, y: int = 230, w: int = 90, h: int = 45, value: float = 40) -> np.ndarray:
    """The scene with a car-sized dark block (about 1.8% of a 640x360 frame)."""
    out = scene.copy()
    cv2.rectangle(out, (x, y), (x + w, y + h), value, -1)
    cv2.rectangle(out, (x + 15, y + 8), (x + w - 15, y + 20), value + 60, -1)
    return out


def to_bgr(scene: np.ndarray, rng: np.random.Generator, noise: float = 2.0, gain: float = 1.0,
           jpeg: int | None = None) -> np.ndarray:
    """Render a gray scene as a camera would: gain, sensor noise, 8 bits, optional JPEG."""
    pixels = scene * gain + rng.normal(0.0, noise, scene.shape)
    bgr = cv2.cvtColor(np.clip(pixels, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    if jpeg is not None:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return bgr


def encode_video(path: Path, images, fps: int = 10, codec: str = "libx264", gop: int | None = None,
                 preset: str = "ultrafast", crf: int = 20, pix_fmt: str = "yuv420p") -> Path:
    """Encode BGR images (any iterable) with PyAV: real H.264 by default (libx264); a raw Annex-B
    .h264 stream when the path ends in .h264."""
    images = iter(images)
    first = next(images)
    h, w = first.shape[:2]
    with av.open(str(path), "w", format="h264" if path.suffix == ".h264" else None) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": preset, "crf": str(crf)}
        for image in (first, *images):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def parked_lot_stills(folder, pictures: list[np.ndarray]) -> None:
    """The pictures as PNG stills of camera c1, 3 minutes apart, each with fresh sensor noise."""
    rng = np.random.default_rng(5)
    start = datetime(2021, 3, 27, 10, 0, 0)
    for i, picture in enumerate(pictures):
        noisy = np.clip(picture + rng.normal(0, 2.0, picture.shape[:2])[..., None], 0, 255).astype(np.uint8)
        name = f"c1_{(start + timedelta(minutes=3 * i)).strftime('%Y_%m_%d__%H_%M_%S')}.png"
        assert cv2.imwrite(str(folder / name), noisy)
