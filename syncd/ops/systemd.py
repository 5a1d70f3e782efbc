"""systemd's notify protocol (sd_notify): READY=1, STOPPING=1 and watchdog pings."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("syncd")


class Notifier:
    """sd_notify over ``$NOTIFY_SOCKET``; a no-op without it."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        self.address = ("\0" + address[1:]) if address and address.startswith("@") else address
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        watchdog = bool(usec and usec.isdigit() and (not pid or pid == str(os.getpid())))
        self.watchdog_interval = int(usec) / 2e6 if watchdog else None
        self._last_ping = 0.0

    def send(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", message, exc)

    def ready(self) -> None:
        self.send("READY=1\nSTATUS=in step")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def beat(self) -> None:
        """Call often from the main loop: pings the watchdog at half of ``WATCHDOG_USEC``."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
