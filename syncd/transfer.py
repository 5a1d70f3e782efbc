"""Running store operations: a bounded pool of workers whose results come back in order of
completion, in the caller's thread. Retries are the store's own (``syncd.retry``); an object
that still fails is reported by key and never blocks the rest."""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Transfers:
    """A pool that runs at most ``workers`` operations at once and hands back results in the
    caller's thread (so the checkpoint is only ever touched from one thread)."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="syncd-transfer")
        self._inflight = 0
        # Finished operations queue up here as they finish: picking the next one costs the same
        # however many are in flight (``concurrent.futures.wait`` visits every pending future).
        self._finished: queue.SimpleQueue[tuple[Any, Future]] = queue.SimpleQueue()

    def submit(self, fn: Callable[[], Any], tag: Any, on_done: Callable[[Any, Future], None]) -> None:
        # Keep the queue short: memory stays flat and a fatal error stops the run quickly.
        while self._inflight >= self.workers * 2:
            self._reap(on_done, block=True)
        future = self._pool.submit(fn)
        self._inflight += 1
        future.add_done_callback(lambda done: self._finished.put((tag, done)))
        self._reap(on_done, block=False)

    def drain(self, on_done: Callable[[Any, Future], None]) -> None:
        while self._inflight:
            self._reap(on_done, block=True)

    def _reap(self, on_done: Callable[[Any, Future], None], block: bool) -> None:
        """Hand every finished operation to ``on_done``; with ``block``, wait for one first."""
        while self._inflight:
            try:
                tag, future = self._finished.get(block=block)
            except queue.Empty:
                return
            self._inflight -= 1
            block = False
            on_done(tag, future)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
