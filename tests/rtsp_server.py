"""A real RTSP server on 127.0.0.1 for the tests: GStreamer's gst-rtsp-server, from Debian.

Run as a script with the system Python, which has the `gi` bindings (the venv does not):
    /usr/bin/python3 tests/rtsp_server.py --port 0
It serves a live test picture (a moving ball, H.264) at rtsp://127.0.0.1:PORT/cam and prints
"ready PORT" once it listens. Imported, it gives `RtspServer` to start, stop, pause and resume
that process from a test.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys

SYSTEM_PYTHON = "/usr/bin/python3"
DEBIAN_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                   "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")
PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! rtph264pay name=pay0 pt=96 )"
)


def unavailable() -> str:
    """Why the server cannot run here ("" when it can)."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} is missing"
    check = subprocess.run([SYSTEM_PYTHON, __file__, "--check"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        return (check.stdout + check.stderr).strip() or f"{SYSTEM_PYTHON} {__file__} --check failed"
    return ""


class RtspServer:
    """The server as a child process. `port` 0 lets it pick one; a restart keeps the port."""

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        self.size = (width, height, fps)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 15.0) -> "RtspServer":
        width, height, fps = self.size
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, __file__, "--port", str(self.port), "--width", str(width), "--height", str(height),
             "--fps", str(fps)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"the RTSP server did not start within {timeout} s")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing is sent, a hung camera."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="only check that everything needed is installed")
    args = parser.parse_args()
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        print(f"GStreamer RTSP server bindings missing ({exc}); apt-get install {DEBIAN_PACKAGES}")
        return 1
    Gst.init(None)
    missing = [name for name in ("videotestsrc", "x264enc", "rtph264pay") if Gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}; apt-get install {DEBIAN_PACKAGES}")
        return 1
    if args.check:
        return 0
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(width=args.width, height=args.height, fps=args.fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}")
        return 1
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
