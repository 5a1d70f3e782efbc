"""Readiness: whether the daemon is in step, and if not, why (``/readyz``)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Health:
    def __init__(self, on_change: Callable[[bool, str], None] | None = None) -> None:
        self.ready = False
        self.reason = "initial reconcile not done yet"
        self._lock = threading.Lock()
        self._on_change = on_change  # called (outside the lock) when readiness or its reason changes

    def set(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            changed = (ready, reason) != (self.ready, self.reason)
            self.ready, self.reason = ready, reason
        if changed and self._on_change is not None:
            self._on_change(ready, reason)

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self.ready, self.reason
