"""The source, read in a thread into a one-frame queue, so the service loop never blocks on a camera."""

from __future__ import annotations

import queue
import threading

from framecull.config import Config
from framecull.sources import Source, iter_frames, open_source

END = object()  # the source has no more frames


def open_camera(config: Config) -> Source:
    """The configured source as the daemon reads it: a synthetic scene plays as a live camera
    (real time, wall-clock stamps, endless); every other kind as open_source opens it."""
    if config.source.kind == "synthetic":
        from framecull.sources.synthetic import SyntheticCamera

        return SyntheticCamera(config.source)
    return open_source(config)


class Feeder:
    """get() returns a Frame, END, the exception that broke the source, or None after `timeout`."""

    def __init__(self, source: Source, fps: float) -> None:
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fps,), name="framecull-feeder", daemon=True)
        self.thread.start()

    def _run(self, fps: float) -> None:
        try:
            for frame in iter_frames(self.source, fps):
                if not self._put(frame):
                    return
            self._put(END)
        except Exception as exc:  # a source that breaks: the loop logs it and exits
            self._put(exc)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def get(self, timeout: float):
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        if self.source.live:
            self.source.close()  # thread-safe: ends a frames() that waits for the camera
        self.thread.join(3.0)
        if not self.source.live:
            self.source.close()
