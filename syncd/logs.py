"""Logging: readable lines on a terminal, timestamped lines otherwise, JSON lines on request."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

_process: str | None = None  # set when several processes share a target (and one log stream)


def name_process(name: str) -> None:
    """Name this process in every log line from now on (``process`` in JSON lines, ``[name]`` in
    text): the processes sharing a target through a PostgreSQL state log to one place."""
    global _process
    _process = name


def process_name() -> str:
    """This process as logs, notifications and the status page name it."""
    return _process or f"{socket.gethostname()}:{os.getpid()}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                 "message": record.getMessage()}
        if _process:
            entry["process"] = _process
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        return f"[{_process}] {line}" if _process else line


OBJECTS = "syncd.objects"  # one line per object written, deleted or orphaned: shown with -v


def setup(log_format: str = "text", verbose: int = 0) -> None:
    """Log to stderr: ``verbose`` 1 (``-v``) adds a line per object, 2 (``-vv``) debug lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        handler.setFormatter(TextFormatter("syncd: %(levelname)s: %(message)s"))
    else:
        handler.setFormatter(TextFormatter("%(asctime)s syncd %(levelname)s %(message)s"))
    root = logging.getLogger("syncd")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.getLogger(OBJECTS).setLevel(logging.INFO if verbose >= 1 else logging.WARNING)
    root.propagate = False


class Progress:
    """A progress bar on a terminal; a log line every ``interval`` seconds otherwise."""

    def __init__(self, label: str, interval: float = 10.0):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.interval = interval if not self.tty else 0.1
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        if self.tty:
            width = 30
            filled = int(width * done / total) if total else width
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{done}/{total} tasks {rate:,.0f}/s ")
            sys.stderr.flush()
            self.drawn = True
        elif now - self.started >= self.interval:
            logging.getLogger("syncd").info("%s: %d/%d tasks (%.0f/s)", self.label, done, total, rate)

    def finish(self) -> None:
        if self.drawn:
            self.drawn = False
            sys.stderr.write("\n")
            sys.stderr.flush()


def summary(message: str, **fields: object) -> None:
    """A run's summary: on stderr with the logs (stdout is for data: plans, listings), and in
    JSON lines with its counts as fields."""
    logging.getLogger("syncd").info("%s", message, extra={"fields": fields})
