"""Running store operations: a bounded pool of workers whose results come back in order of
completion, in the caller's thread. Retries are the store's own (``syncd.retry``); an object
that still fails is reported by key and never blocks the rest."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any


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
