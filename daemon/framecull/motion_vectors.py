"""Motion vectors of compressed video, as one compact numpy array per frame.

Two origins, one format (MOTION_VECTOR_DTYPE, one row per block):
  - the decoder: FFmpeg exports the vectors it reads from an H.264 (or MPEG-4 part 2) stream as
    MOTION_VECTORS side data when the codec context has flags2=+export_mvs;
  - the legacy Raspberry Pi camera stack (raspivid -x, picamera 1.x motion_output): the GPU
    encoder's coarse vectors, one 4-byte record per 16x16 macroblock, saved next to a recording
    as `<stem>.mv`.

Vectors follow FFmpeg's convention: (dx, dy) is where the block's content came from in the
reference frame, relative to the block, in pixels. For a past reference (source -1) an object
moving right therefore has dx < 0.

A frame's array covers the whole macroblock grid: blocks the decoder coded without a vector
(intra blocks in a P/B frame: content the encoder could not find in the reference, such as
something appearing) are rows with source 0 and dx = dy = 0. Key frames have no array at all:
Frame.motion_vectors is None there ("unknown", not "no motion").
"""

from __future__ import annotations

import logging
from typing import BinaryIO, Iterator

import av
import numpy as np

log = logging.getLogger("framecull.motion_vectors")

BLOCK = 16  # H.264 macroblock size in pixels

MOTION_VECTOR_DTYPE = np.dtype([
    ("x", np.int16),  # block's left edge, pixels
    ("y", np.int16),  # block's top edge, pixels
    ("w", np.uint8),  # block width, pixels
    ("h", np.uint8),  # block height, pixels
    ("dx", np.float32),  # content came from (x + dx, y + dy) in the reference frame
    ("dy", np.float32),
    ("source", np.int8),  # -1 past reference, +1 future reference, 0 intra block (no vector)
])

PAST, INTRA = -1, 0  # values of `source`

# FFmpeg's AVMotionVector (libavutil/motion_vector.h), as PyAV's MotionVectors.to_ndarray() gives it.
FFMPEG_RECORD = np.dtype({
    "names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"],
    "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
    "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32], "itemsize": 40, "aligned": True,
})

# Codecs whose FFmpeg decoder exports vectors with flags2=+export_mvs (HEVC, VP8/9, AV1 do not).
EXPORTING_CODECS = frozenset({
    "h264", "mpeg1video", "mpeg2video", "mpeg4", "h263", "h263p", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3",
})


def request_export(stream: av.video.stream.VideoStream) -> bool:
    """Ask the stream's decoder to export motion vectors; call before the first decode (and after
    setting the stream's thread_type, which this overrides).

    Returns whether the codec exports them.
    """
    if stream.codec_context.name not in EXPORTING_CODECS:
        return False
    options = dict(stream.codec_context.options)
    options["flags2"] = "+export_mvs"
    stream.codec_context.options = options
    # With frame threads FFmpeg exports wrong vectors for some frames, different on every run
    # (seen with FFmpeg 8.1 through PyAV 18); slice threads export them right.
    stream.thread_type = "SLICE"
    return True


def grid_size(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of 16x16 macroblocks covering a width x height picture."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a picture size must be positive, got {width}x{height}")
    return (width + BLOCK - 1) // BLOCK, (height + BLOCK - 1) // BLOCK


def is_intra_frame(frame: av.VideoFrame) -> bool:
    """A key frame or any other I frame: coded without reference, so its motion is unknown."""
    return frame.key_frame or frame.pict_type == av.video.frame.PictureType.I


def from_av_frame(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's vectors, or None when it has none (I frame, or export not requested)."""
    if is_intra_frame(frame):
        return None
    side_data = frame.side_data.get(av.sidedata.sidedata.Type.MOTION_VECTORS)
    if side_data is None:
        return None
    # A view of FFmpeg's buffer, not a copy (to_ndarray copies): this runs for every frame.
    return from_ffmpeg(np.frombuffer(side_data, FFMPEG_RECORD), frame.width, frame.height)


def from_ffmpeg(raw: np.ndarray, width: int, height: int) -> np.ndarray:
    """FFmpeg AVMotionVector records (PyAV's MotionVectors.to_ndarray()) -> MOTION_VECTOR_DTYPE,
    plus one intra row for every macroblock no vector lies in."""
    cols, rows = grid_size(width, height)
    w, h = raw["w"], raw["h"]
    centre_x, centre_y = raw["dst_x"], raw["dst_y"]  # FFmpeg gives the block's centre
    covered = np.zeros(rows * cols, bool)
    block = (centre_y // BLOCK).astype(np.intp) * cols + centre_x // BLOCK
    covered[np.clip(block, 0, rows * cols - 1)] = True
    intra_blocks = np.flatnonzero(~covered)

    out = np.zeros(len(raw) + len(intra_blocks), MOTION_VECTOR_DTYPE)
    inter, intra = out[: len(raw)], out[len(raw):]
    per_unit = np.float32(1) / np.maximum(raw["motion_scale"], 1)
    inter["x"], inter["y"] = centre_x - (w >> 1), centre_y - (h >> 1)
    inter["w"], inter["h"] = w, h
    inter["dx"], inter["dy"] = raw["motion_x"] * per_unit, raw["motion_y"] * per_unit
    inter["source"] = raw["source"]  # FFmpeg: -1 or +1
    block_rows, block_cols = np.divmod(intra_blocks, cols)
    intra["x"], intra["y"] = block_cols * BLOCK, block_rows * BLOCK
    intra["w"] = intra["h"] = BLOCK
    return out


# Legacy Raspberry Pi format: per frame, rows x (columns + 1) records; the last column is padding.
LEGACY_RECORD = np.dtype([("x", np.int8), ("y", np.int8), ("sad", "<u2")])


def legacy_frame_bytes(width: int, height: int) -> int:
    """Bytes of one frame of legacy Raspberry Pi vectors for a width x height recording."""
    cols, rows = grid_size(width, height)
    return (cols + 1) * rows * LEGACY_RECORD.itemsize


def parse_legacy(data: bytes, width: int, height: int) -> np.ndarray:
    """One frame of legacy Raspberry Pi vectors -> MOTION_VECTOR_DTYPE (SAD is dropped).

    The Pi's coarse motion search gives whole-pixel vectors against the previous frame.
    """
    cols, rows = grid_size(width, height)
    expected = legacy_frame_bytes(width, height)
    if len(data) != expected:
        raise ValueError(
            f"legacy motion vectors for {width}x{height}: a frame is {rows} rows x {cols + 1} records "
            f"x {LEGACY_RECORD.itemsize} bytes = {expected} bytes, got {len(data)}"
        )
    records = np.frombuffer(data, LEGACY_RECORD).reshape(rows, cols + 1)[:, :cols]
    block_rows, block_cols = np.divmod(np.arange(rows * cols), cols)
    out = np.zeros(rows * cols, MOTION_VECTOR_DTYPE)
    out["x"], out["y"] = block_cols * BLOCK, block_rows * BLOCK
    out["w"] = out["h"] = BLOCK
    out["dx"], out["dy"] = records["x"].ravel(), records["y"].ravel()
    out["source"] = PAST
    return out


def read_legacy(stream: BinaryIO, width: int, height: int) -> Iterator[np.ndarray]:
    """Frames of legacy Raspberry Pi vectors from a file or a pipe, until the end of the data.

    A partial last frame (a recording cut short) is logged and dropped.
    """
    size = legacy_frame_bytes(width, height)
    while True:
        data = bytearray()
        while len(data) < size:
            chunk = stream.read(size - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) < size:
            if data:
                log.warning("legacy motion vectors: %d trailing bytes are less than a frame (%d bytes) and are ignored",
                            len(data), size)
            return
        yield parse_legacy(bytes(data), width, height)
