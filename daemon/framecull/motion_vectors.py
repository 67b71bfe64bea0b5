"""Motion vectors of compressed video: FFmpeg's own records, read where the decoder left them.

Two origins, one format (MotionVectors: FFmpeg's AVMotionVector records and the picture size):
  - the decoder: FFmpeg exports the vectors it reads from an H.264 (or MPEG-4 part 2) stream as
    MOTION_VECTORS side data when the codec context has flags2=+export_mvs; a frame's records
    are a view of that side data, so a frame costs no conversion (the gate reads a few columns);
  - the legacy Raspberry Pi camera stack (raspivid -x, picamera 1.x motion_output): the GPU
    encoder's coarse vectors, one 4-byte record per 16x16 macroblock, saved next to a recording
    as `<stem>.mv`, are turned into the same records.

A record is one partition (16x16 down to 4x4) of a macroblock with its vector: (motion_x,
motion_y) / motion_scale is where the partition's content came from in the reference frame,
relative to the partition, in pixels; source is -1 for a past reference, +1 for a future one. For
a past reference an object moving right therefore has dx < 0. Blocks coded without a vector
(intra blocks: content the encoder could not find in the reference) have no record. Key frames
have no vectors at all: Frame.motion_vectors is None there ("unknown", not "no motion").
"""

from __future__ import annotations

import logging
from typing import BinaryIO, Iterator

import av
import numpy as np
from av.sidedata.sidedata import SideDataContainer, Type

log = logging.getLogger("framecull.motion_vectors")

BLOCK = 16  # H.264 macroblock size in pixels

# FFmpeg's AVMotionVector (libavutil/motion_vector.h), as PyAV's MotionVectors.to_ndarray() gives it.
# dst_x, dst_y: the partition's centre; src_x, src_y: where its content came from, whole pixels.
RECORD = np.dtype({
    "names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"],
    "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
    "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32], "itemsize": 40, "aligned": True,
})
PAST, FUTURE = -1, 1  # values of `source`
QUARTER_PEL = 4  # the motion_scale of vectors this module makes (FFmpeg's H.264 decoder uses it too)


class MotionVectors:
    """One frame's motion vectors: RECORD rows (for a decoded frame, a view of the decoder's side
    data) and the size of the picture they were coded on.

    FFmpeg's exporters write one motion_scale per picture; the gate reads it from the first record.
    The properties below compute per-record columns for drawing and tests; the gate reads the
    records' own columns."""

    __slots__ = ("records", "width", "height", "__weakref__")

    def __init__(self, records: np.ndarray, width: int, height: int) -> None:
        if records.dtype != RECORD:
            raise TypeError(f"motion vectors must be framecull.motion_vectors.RECORD rows, got {records.dtype}")
        grid_size(width, height)  # a positive size
        self.records, self.width, self.height = records, width, height

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"MotionVectors({len(self)} records, {self.width}x{self.height})"

    @property
    def grid(self) -> tuple[int, int]:
        """(columns, rows) of macroblocks."""
        return grid_size(self.width, self.height)

    @property
    def dx(self) -> np.ndarray:
        return (self.records["motion_x"] / np.maximum(self.records["motion_scale"], 1)).astype(np.float32)

    @property
    def dy(self) -> np.ndarray:
        return (self.records["motion_y"] / np.maximum(self.records["motion_scale"], 1)).astype(np.float32)

    @property
    def x(self) -> np.ndarray:
        """The partition's left edge, pixels."""
        return self.records["dst_x"] - (self.records["w"] >> 1)

    @property
    def y(self) -> np.ndarray:
        """The partition's top edge, pixels."""
        return self.records["dst_y"] - (self.records["h"] >> 1)

    @property
    def source(self) -> np.ndarray:
        return self.records["source"]

    @classmethod
    def of_blocks(cls, dx: np.ndarray, dy: np.ndarray, width: int, height: int,
                  present: np.ndarray | None = None, source: int = PAST) -> "MotionVectors":
        """One 16x16 record per macroblock from [rows, cols] arrays of vectors in pixels (rounded to
        a quarter pixel); blocks where `present` is False are intra (no record)."""
        cols, rows = grid_size(width, height)
        dx, dy = np.asarray(dx, np.float64), np.asarray(dy, np.float64)
        if dx.shape != (rows, cols) or dy.shape != (rows, cols):
            raise ValueError(f"vectors for {width}x{height} are {rows} x {cols} blocks, got {dx.shape} and {dy.shape}")
        block_rows, block_cols = np.divmod(np.arange(rows * cols), cols)
        keep = np.ones(rows * cols, bool) if present is None else np.asarray(present, bool).ravel()
        records = np.zeros(int(keep.sum()), RECORD)
        records["source"] = source
        records["w"] = records["h"] = BLOCK
        records["dst_x"], records["dst_y"] = block_cols[keep] * BLOCK + BLOCK // 2, block_rows[keep] * BLOCK + BLOCK // 2
        records["motion_x"] = np.rint(dx.ravel()[keep] * QUARTER_PEL)
        records["motion_y"] = np.rint(dy.ravel()[keep] * QUARTER_PEL)
        records["motion_scale"] = QUARTER_PEL
        records["src_x"] = records["dst_x"] + np.rint(dx.ravel()[keep])
        records["src_y"] = records["dst_y"] + np.rint(dy.ravel()[keep])
        return cls(records, width, height)


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


def from_av_frame(frame: av.VideoFrame) -> MotionVectors | None:
    """The frame's vectors, or None when it has none (I frame, or export not requested)."""
    if is_intra_frame(frame):
        return None
    # Not frame.side_data: the container PyAV caches there refers back to the frame, and that cycle
    # keeps every decoded picture alive until a garbage collection (measured: 296 MB instead of
    # 53 MB of 720p pictures waiting, and decoding 7% slower). A container of our own is freed
    # with the last reference to it.
    side_data = SideDataContainer(frame).get(Type.MOTION_VECTORS)
    if side_data is None:
        return None
    # A view of FFmpeg's buffer, not a copy (to_ndarray copies): this runs for every frame.
    return MotionVectors(np.frombuffer(side_data, RECORD), frame.width, frame.height)


# Legacy Raspberry Pi format: per frame, rows x (columns + 1) records; the last column is padding.
LEGACY_RECORD = np.dtype([("x", np.int8), ("y", np.int8), ("sad", "<u2")])


def legacy_frame_bytes(width: int, height: int) -> int:
    """Bytes of one frame of legacy Raspberry Pi vectors for a width x height recording."""
    cols, rows = grid_size(width, height)
    return (cols + 1) * rows * LEGACY_RECORD.itemsize


def parse_legacy(data: bytes, width: int, height: int) -> MotionVectors:
    """One frame of legacy Raspberry Pi vectors (SAD is dropped).

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
    return MotionVectors.of_blocks(records["x"], records["y"], width, height)


def read_legacy(stream: BinaryIO, width: int, height: int) -> Iterator[MotionVectors]:
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
