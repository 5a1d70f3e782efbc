"""Waking the daemon: file-system events where they work, polling where they do not.

Native watchers miss events on network filesystems and container bind mounts, so the daemon
always polls as well; an event only makes it look sooner. What is looked at is confirmed
cheaply (SQLite's ``PRAGMA data_version``) before any query that costs something.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("syncd")


class Waker:
    """An event that file-system watchers (or anyone) set, and the main loop waits on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._observer = None

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float, settle: float = 0.0, max_settle: float = 0.25) -> bool:
        """Block until woken or ``timeout`` passes; True if woken.

        With ``settle``, once woken keep waiting until no new wake-up came for ``settle``
        seconds (at most ``max_settle``): Label Studio commits an annotation and, some 50 ms
        later, its task row; syncing once after both saves a second write of the same object."""
        woken = self._event.wait(timeout)
        self._event.clear()
        if woken and settle > 0:
            deadline = time.monotonic() + max_settle
            while self._event.wait(min(settle, max(0.0, deadline - time.monotonic()))):
                self._event.clear()
                if time.monotonic() >= deadline:
                    break
        return woken

    def watch_files(self, paths: list[Path]) -> None:
        """Wake on any change to these files (and on their creation or replacement)."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # polling still works
            log.warning("watchdog is not installed; noticing changes by polling only")
            return
        names = {str(p.absolute()) for p in paths}
        waker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                for path in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
                    if path and os.fsdecode(path) in names:
                        waker.wake()
                        return

        observer = Observer()
        for directory in {str(p.absolute().parent) for p in paths}:
            try:
                observer.schedule(Handler(), directory, recursive=False)
            except OSError as exc:
                log.warning("cannot watch %s (%s); noticing changes by polling only", directory, exc)
                return
        observer.daemon = True
        try:
            observer.start()
        except OSError as exc:
            log.warning("file watching unavailable (%s); noticing changes by polling only", exc)
            return
        self._observer = observer

    def watch_directory(self, directory: Path) -> None:
        """Wake on any change below ``directory`` (the dir:// source)."""
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return
        waker = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                waker.wake()

        observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(Handler(), str(directory), recursive=True)
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s (%s); noticing changes by polling only", directory, exc)
            return
        self._observer = observer

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
