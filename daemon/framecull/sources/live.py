"""What the camera sources share: a reader thread, a bounded queue, reconnection with backoff.

A LiveSource reads its camera in a thread of its own and hands frames to `frames()` through a
queue of at most `queue_size` frames. When the consumer falls behind, the oldest queued frame
is dropped and counted, so memory stays bounded and the pipeline always sees recent frames.
When the camera fails (unplugged, stream ended, timed out), the thread closes it, waits
(1 s doubling up to [source] reconnect_max, back to 1 s after a frame) and opens it again;
`frames()` keeps yielding across reconnects. `close()`, from any thread, ends `frames()` at
once, even while the reader is stuck in a camera call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterator

from framecull.config import SourceConfig
from framecull.frame import Frame
from framecull.sources import Source

log = logging.getLogger("framecull.source.live")

QUEUE_SIZE = 4  # frames waiting for the consumer; the oldest is dropped beyond this
RECONNECT_MIN = 1.0  # seconds before the first reconnection attempt; doubles up to reconnect_max


class CameraLost(Exception):
    """The connection to the camera ended; the reader reconnects."""


class Backoff:
    """Delays between reconnection attempts: `initial`, doubling up to `maximum`."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._delay = self.initial


@dataclass
class LiveCounters:
    frames: int = 0  # frames captured from the camera: delivered + dropped + still queued
    dropped: int = 0  # frames discarded because the consumer fell behind
    reconnects: int = 0  # connection attempts after the first one
    last_error: str = ""  # why the last connection failed or ended ("" until one did)


class StreamClock:
    """Capture times from a stream's own clock, anchored to the wall clock.

    The anchor is the smallest (receipt time - stream time) seen, so frames that arrive in a
    burst (after a network stall, or buffered while the stream was probed) keep their real
    spacing and no timestamp is ever ahead of the wall clock. When the stream clock falls
    more than `max_lag` seconds behind (a camera clock that runs slow, a reset), it is
    anchored again. These times are labels: pacing runs on Frame.clock, the monotonic time
    LiveSource gives each frame it receives. When the wall clock is stepped (NTP at boot on a Pi
    without a real-time clock, an operator) the labels follow it at once, backwards too.
    """

    def __init__(self, max_lag: float = 2.0) -> None:
        self.max_lag = max_lag
        self._anchor: float | None = None
        self._last = 0.0
        self._wall_offset: float | None = None  # wall clock minus monotonic clock

    def timestamp(self, stream_time: float | None) -> float:
        """Never earlier than the previous timestamp while the wall clock runs steadily: a stream
        clock that steps back a little (RTP re-synced by an RTCP report) must not make time run
        backwards for the gates."""
        now = time.time()
        wall_offset = now - time.monotonic()
        if self._wall_offset is not None and abs(wall_offset - self._wall_offset) > self.max_lag:
            self._anchor, self._last = None, 0.0  # the wall clock was stepped: anchor again
        self._wall_offset = wall_offset
        if stream_time is None:
            stamp = now
        else:
            offset = now - stream_time
            if self._anchor is None or offset < self._anchor or offset - self._anchor > self.max_lag:
                self._anchor = offset
            stamp = self._anchor + stream_time
        self._last = max(stamp, self._last)
        return self._last


class LiveSource(Source):
    """Base of the camera sources, built from the [source] section. Subclasses implement
    connect, capture and disconnect:

    connect()     open the camera; raise when it cannot be opened
    capture()     yield Frames from the open camera (indices from `next_index()`); raise or
                  return when the camera fails. Blocking calls in here must time out
                  (after `self.timeout` seconds).
    disconnect()  release whatever connect opened; called after every attempt, even failed ones

    `queue_size` and `reconnect_min` are not config keys; only the tests change them.
    """

    kind = "live"
    live = True

    def __init__(self, cfg: SourceConfig, *, queue_size: int = QUEUE_SIZE,
                 reconnect_min: float = RECONNECT_MIN) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.width = cfg.analysis_width
        self.timeout = cfg.timeout
        self.queue_size = queue_size
        self.backoff = Backoff(reconnect_min, cfg.reconnect_max)
        self.name = self.kind
        self.counters = LiveCounters()
        self._queue: deque[Frame] = deque()
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._index = 0

    # --- for subclasses ---

    def connect(self) -> None:
        raise NotImplementedError

    def capture(self) -> Iterator[Frame]:
        raise NotImplementedError

    def disconnect(self) -> None:
        pass

    def next_index(self) -> int:
        index, self._index = self._index, self._index + 1
        return index

    def describe(self, error: Exception) -> str:
        """The error as logged and kept in counters.last_error."""
        return f"{type(error).__name__}: {error}"

    # --- for consumers ---

    def frames(self) -> Iterator[Frame]:
        """Frames in capture order until close(), or until the caller stops iterating (which
        closes the source). Indices skip the frames that were dropped."""
        self.start()
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: self._queue or self._stop.is_set())
                    if self._stop.is_set():
                        return
                    frame = self._queue.popleft()
                yield frame
        finally:
            self.close()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stats(self) -> dict:
        return asdict(self.counters) | {"queued": self.queued}

    def start(self) -> None:
        """Start the reader thread (frames() does it; a caller may start reading earlier)."""
        if self._reader is None and not self._stop.is_set():
            self._reader = threading.Thread(target=self._read, name=f"framecull-{self.name}", daemon=True)
            self._reader.start()

    def close(self, wait: float = 1.0) -> None:
        """Stop reading and end frames(). Waits at most `wait` seconds for the reader thread:
        a reader stuck in a camera call finishes on its own (its calls time out) and exits."""
        self._stop.set()
        with self._ready:
            self._queue.clear()
            self._ready.notify_all()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(wait)
            if reader.is_alive():
                log.info("%s: reader still inside a camera call; it exits when the call times out", self.name)

    # --- the reader thread ---

    def _read(self) -> None:
        attempts = 0
        while not self._stop.is_set():
            if attempts:
                self.counters.reconnects += 1
            attempts += 1
            try:
                self.connect()
                for frame in self.capture():
                    self._put(frame)
                    self.backoff.reset()
                    if self._stop.is_set():
                        return
                raise CameraLost("the stream ended")
            except Exception as exc:  # whatever broke the camera, the answer is to reconnect
                error = self.describe(exc)
            finally:
                self._disconnect()
            if self._stop.is_set():
                return
            self.counters.last_error = error
            delay = self.backoff.next()
            log.warning("%s: camera unavailable (%s); trying again in %.3g s", self.name, error, delay)
            self._stop.wait(delay)

    def _put(self, frame: Frame) -> None:
        frame.clock = time.monotonic()  # pacing and throttling never see the wall clock jump
        with self._ready:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.counters.dropped += 1
            self._queue.append(frame)
            self.counters.frames += 1
            self._ready.notify()

    def _disconnect(self) -> None:
        try:
            self.disconnect()
        except Exception as exc:
            log.debug("%s: error while closing the camera: %s", self.name, exc)
