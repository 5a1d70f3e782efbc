"""File-system events as a change feed: watchdog's observer calling ``wake``.

Native watchers miss events on network filesystems and container bind mounts, so the daemon
always polls as well; an event only makes it look sooner. Without watchdog, or where a watch
cannot be set up, the feed is simply absent (one warning) and polling does the work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("syncd")


class FileFeed:
    """A running watchdog observer; ``close`` stops it."""

    def __init__(self, observer: Any):
        self._observer = observer

    def close(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=2)


def watch_paths(paths: Iterable[Path], wake: Callable[[], None], *, recursive: bool = False,
                only: Iterable[Path] | None = None) -> FileFeed | None:
    """Call ``wake`` on any change in the directories ``paths`` (below them with ``recursive``),
    or only on changes to the files ``only`` (their creation and replacement included)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        log.warning("watchdog is not installed; noticing changes by polling only")
        return None
    names = {str(p.absolute()) for p in only} if only is not None else None

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            if names is None:
                wake()
                return
            for path in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
                if path and os.fsdecode(path) in names:
                    wake()
                    return

    observer = Observer()
    observer.daemon = True
    try:
        for directory in sorted({str(p.absolute()) for p in paths}):
            observer.schedule(Handler(), directory, recursive=recursive)
        observer.start()
    except OSError as exc:
        log.warning("file watching unavailable (%s); noticing changes by polling only", exc)
        return None
    return FileFeed(observer)
