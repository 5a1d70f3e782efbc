"""Backoff and retries: the one formula every retry in syncd uses.

One tier per call path (rclone's lesson: tiers that multiply turn 5 attempts into 20). The
cloud SDKs are configured not to retry at all; each storage adapter runs every request it makes
(a PUT, a HEAD, one page of a listing) through ``call`` with the store's ``max_attempts``, so a
request is tried at most ``max_attempts`` times in all. The daemon's longer-lived tiers (a lost
database, a task that keeps failing) wait with the same ``delay``.

``delay`` is capped exponential backoff with full jitter (AWS's "exponential backoff and
jitter"), and never earlier than a server's ``Retry-After``: a server that asks for 7 seconds
gets at least 7.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from syncd.errors import StoreError

log = logging.getLogger("syncd")

T = TypeVar("T")

BASE = 0.5  # seconds: the first retry waits up to this long
CAP = 20.0  # seconds: no wait between two tries of one request is longer (unless the server asks)
sleep = time.sleep  # the wait without a ``stop`` (a module attribute: tests record the waits)


def delay(attempt: int, retry_after: float | None = None, *, base: float = BASE, cap: float = CAP) -> float:
    """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1): a random time up to
    ``min(cap, base * 2 ** (attempt - 1))``, but never less than ``retry_after``."""
    jittered = random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    return max(jittered, retry_after) if retry_after is not None else jittered


def call(op: Callable[[], T], what: str, attempts: int, stop: threading.Event | None = None) -> T:
    """Run ``op``; on a retryable ``StoreError`` wait ``delay`` and try again, ``attempts`` tries
    in all. A ``stop`` that is set ends the waiting and re-raises the last error."""
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except StoreError as exc:
            if not exc.retryable or attempt >= attempts or (stop is not None and stop.is_set()):
                raise
            wait = delay(attempt, exc.retry_after)
            log.debug("%s: %s; try %d of %d in %.1fs", what, exc, attempt + 1, attempts, wait)
            if stop is not None:
                if stop.wait(wait):
                    raise
            else:
                sleep(wait)
    raise AssertionError("unreachable")


class Backoff:
    """The wait of a longer-lived retry (a reconnect, a failing task): ``delay`` of the number of
    failures so far; ``reset`` after a success."""

    def __init__(self, base: float = 1.0, cap: float = 60.0):
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self, retry_after: float | None = None) -> float:
        self.failures += 1
        return delay(self.failures, retry_after, base=self.base, cap=self.cap)

    def reset(self) -> None:
        self.failures = 0
