"""sd_notify: READY, STATUS, WATCHDOG, STOPPING to systemd over NOTIFY_SOCKET, and the watchdog's pace."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("framecull.service")


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not running under systemd (no NOTIFY_SOCKET)."""
    try:
        from systemd import daemon
    except ImportError:
        daemon = None
    if daemon is not None:
        return bool(daemon.notify(message))
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


class Watchdog:
    """WATCHDOG=1 every WATCHDOG_USEC / 2 while the caller says it is healthy; off when systemd
    asked for no watchdog (or asked it of another process)."""

    def __init__(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
            usec = 0  # the watchdog is meant for another process
        self.interval = usec / 2e6 if usec > 0 else 0.0
        self._next = 0.0

    def ping(self, now: float, healthy: bool) -> None:
        if self.interval and now >= self._next and healthy:
            notify("WATCHDOG=1")
            self._next = now + self.interval
