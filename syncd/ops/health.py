"""Readiness: whether the daemon is in step, and if not, why (``/readyz``)."""

from __future__ import annotations

import threading


class Health:
    def __init__(self) -> None:
        self.ready = False
        self.reason = "initial reconcile not done yet"
        self._lock = threading.Lock()

    def set(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self.ready, self.reason = ready, reason

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self.ready, self.reason
