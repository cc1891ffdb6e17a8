"""Application-level group commit for reservations on one SKU.

Why: on a hot SKU every reserve contends for the same stock rows; each transaction holds the row
lock until its COMMIT's WAL flush, so one transaction per reserve caps throughput near the single-row
commit rate (see shared MEASUREMENTS.md). Here concurrent reserves for the same product share one
transaction and one commit, and each caller still gets its own outcome.

How: one queue per product. A request that finds its product idle is flushed at once (a lone request
is never delayed). While a flush is in flight, new requests for that product queue up; when it
finishes, everything queued (up to `max_batch`) goes in the next flush, after waiting at most
`window` for stragglers when the previous batch showed contention. At most one flush per product is
in flight in this process, so batches never fight each other for the row lock; other processes'
batches serialize on the row lock in the database.

If a whole batch fails (an unexpected database error caused by one request), every request of that
batch is retried alone, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")

# A flush applies a batch in one transaction; it returns, per request in order, a result or an
# exception instance (an expected per-request failure such as insufficient stock).
FlushFn = Callable[[Hashable, Sequence[Req]], Awaitable[Sequence[Any]]]


@dataclasses.dataclass
class _Pending(Generic[Req]):
    request: Req
    future: asyncio.Future[Any]


class KeyedBatcher(Generic[Req, Res]):
    def __init__(self, flush: FlushFn[Req], *, window: float = 0.002, max_batch: int = 256) -> None:
        self._flush = flush
        self._window = window
        self._max_batch = max_batch
        self._queues: dict[Hashable, list[_Pending[Req]]] = {}
        self._busy: set[Hashable] = set()
        self._drainers: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.requests = 0

    async def submit(self, key: Hashable, request: Req) -> Res:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, []).append(_Pending(request, future))
        if key not in self._busy:
            self._start_drain(key)
        return await future

    def _start_drain(self, key: Hashable) -> None:
        self._busy.add(key)
        task = asyncio.create_task(self._drain(key))
        self._drainers.add(task)
        task.add_done_callback(self._drainers.discard)

    async def _drain(self, key: Hashable) -> None:
        contended = False
        try:
            while True:
                if contended and self._window > 0:
                    await asyncio.sleep(self._window)
                queue = self._queues.get(key)
                if not queue:
                    self._queues.pop(key, None)
                    return
                batch, self._queues[key] = queue[: self._max_batch], queue[self._max_batch :]
                batch = [p for p in batch if not p.future.done()]  # callers that gave up
                if not batch:
                    continue
                await self._run(key, batch)
                contended = bool(self._queues.get(key))
        finally:
            self._busy.discard(key)
            if self._queues.get(key):  # arrived after the final check; never strand a request
                self._start_drain(key)

    async def _run(self, key: Hashable, batch: list[_Pending[Req]]) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            outcomes = await self._flush(key, [p.request for p in batch])
        except Exception as batch_error:
            if len(batch) == 1:
                _settle(batch[0].future, batch_error)
                return
            for pending in batch:  # isolate the failing request
                try:
                    (outcome,) = await self._flush(key, [pending.request])
                except Exception as single_error:
                    outcome = single_error
                _settle(pending.future, outcome)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            _settle(pending.future, outcome)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
