"""Running store operations: a bounded pool of workers and per-object retries.

Retries come in tiers (as rclone does): the SDK retries inside each call; here each object
gets a few more tries with capped exponential backoff that honours Retry-After; an object that
still fails is reported by key and never blocks the rest.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from syncd.errors import StoreError

log = logging.getLogger("syncd")

MAX_BACKOFF = 30.0


def with_retries(op: Callable[[], Any], what: str, attempts: int = 4, base_delay: float = 0.5,
                 stop: threading.Event | None = None) -> Any:
    """Run ``op``; on a retryable ``StoreError`` wait and try again, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        try:
            return op()
        except StoreError as exc:
            if not exc.retryable or attempt == attempts or (stop is not None and stop.is_set()):
                raise
            delay = exc.retry_after if exc.retry_after is not None else base_delay * 2 ** (attempt - 1)
            delay = min(MAX_BACKOFF, delay) * random.uniform(0.8, 1.2)
            log.debug("%s: %s; retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


class Transfers:
    """A pool that runs at most ``workers`` operations at once and hands back results in the
    caller's thread (so the checkpoint is only ever touched from one thread)."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="syncd-transfer")
        self._inflight: dict[Future, Any] = {}

    def submit(self, fn: Callable[[], Any], tag: Any, on_done: Callable[[Any, Future], None]) -> None:
        # Keep the queue short: memory stays flat and a fatal error stops the run quickly.
        while len(self._inflight) >= self.workers * 2:
            self._reap(on_done, block=True)
        self._inflight[self._pool.submit(fn)] = tag
        self._reap(on_done, block=False)

    def drain(self, on_done: Callable[[Any, Future], None]) -> None:
        while self._inflight:
            self._reap(on_done, block=True)

    def _reap(self, on_done: Callable[[Any, Future], None], block: bool) -> None:
        if not self._inflight:
            return
        done, _ = wait(list(self._inflight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            on_done(self._inflight.pop(future), future)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
