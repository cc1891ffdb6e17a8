"""Application-level group commit for reservations on one SKU.

Why: on a hot SKU every reserve contends for the same stock rows; each transaction holds the row
lock until its COMMIT's WAL flush, so one transaction per reserve caps throughput near the single-row
commit rate (see shared MEASUREMENTS.md). Here concurrent reserves for the same product share one
transaction and one commit, and each caller still gets its own outcome.

How: one queue per product. A request that finds its product idle is flushed at once (a lone request
is never delayed). While a flush is in flight, new requests for that product queue up; when it
finishes, everything queued (up to `max_batch`) goes in the next flush. A batch waits for stragglers
at most `window` after its oldest request arrived; requests that queued while the previous batch was
in the database have usually waited that long already, so the next batch leaves at once. At most one
flush per product is in flight in this process, so batches never fight each other for the row lock;
other processes' batches serialize on the row lock in the database.

Pipelining: when a batch's result arrives, the next batch is sent to the database BEFORE the finished
batch's callers are answered. Answering them (building and sending each gRPC response) is event-loop
CPU work; done first, it left the database idle and every queued request waiting behind it. Now the
database applies batch N+1 while the loop answers batch N's callers.

Tracing: each batch runs in a span of its own ("reserve batch"), a child of its first sampled
caller's span with links to every other caller's, so what the batch writes (the reserve event's
traceparent, read from the current span) belongs to a caller of that batch and every caller's trace
leads to it. Before, a batch ran in the context of whichever request had started the product's
drain loop, possibly answered long before.

If a whole batch fails (an unexpected database error caused by one request), every request of that
batch whose caller still waits is retried alone, so one bad request cannot fail the others. Not when
`isolate` says the error is not one request's doing (the database is unreachable): then the whole
batch fails with it at once. Retrying alone there cost one pool timeout per request with the key
blocked meanwhile, and could reserve twice when a commit went through but its answer was lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

Req = TypeVar("Req")
Res = TypeVar("Res")

# A flush applies a batch in one transaction; it returns, per request in order, a result or an
# exception instance (an expected per-request failure such as insufficient stock).
FlushFn = Callable[[Hashable, Sequence[Req]], Awaitable[Sequence[Any]]]


@dataclasses.dataclass
class _Pending(Generic[Req]):
    request: Req
    future: asyncio.Future[Any]
    arrived: float
    span_context: trace.SpanContext  # the caller's


class KeyedBatcher(Generic[Req, Res]):
    def __init__(
        self,
        flush: FlushFn[Req],
        *,
        window: float = 0.002,
        max_batch: int = 256,
        isolate: Callable[[Exception], bool] = lambda error: True,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._flush = flush
        self._tracer = tracer or trace.get_tracer(__name__)
        self._isolate = isolate
        self._window = window
        self._max_batch = max_batch
        self._queues: dict[Hashable, list[_Pending[Req]]] = {}
        self._busy: set[Hashable] = set()
        self._drainers: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.requests = 0

    async def submit(self, key: Hashable, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        caller = trace.get_current_span().get_span_context()
        self._queues.setdefault(key, []).append(_Pending(request, future, loop.time(), caller))
        if key not in self._busy:
            self._start_drain(key)
        return await future

    def _start_drain(self, key: Hashable) -> None:
        self._busy.add(key)
        task = asyncio.create_task(self._drain(key))
        self._drainers.add(task)
        task.add_done_callback(self._drainers.discard)

    def _take(self, key: Hashable) -> list[_Pending[Req]]:
        """The next batch: queued requests whose callers still wait, oldest first."""
        queue = self._queues.get(key)
        batch: list[_Pending[Req]] = []
        while queue and not batch:
            head, queue = queue[: self._max_batch], queue[self._max_batch :]
            batch = [p for p in head if not p.future.done()]  # callers that gave up
        if queue:
            self._queues[key] = queue
        else:
            self._queues.pop(key, None)
        return batch

    def _straggler_wait(self, key: Hashable) -> float:
        """How long the next batch should still wait for stragglers (0: leave now)."""
        queue = self._queues.get(key)
        if not queue or self._window <= 0:
            return 0.0
        return queue[0].arrived + self._window - asyncio.get_running_loop().time()

    async def _drain(self, key: Hashable) -> None:
        try:
            batch = self._take(key)
            flight = asyncio.ensure_future(self._apply(key, batch)) if batch else None
            while flight is not None:
                try:
                    outcomes = await flight
                except BaseException as stopped:  # cancelled (shutdown): never leave a caller hanging
                    _settle_all(batch, [stopped] * len(batch))
                    raise
                done, batch, flight = batch, [], None
                if self._straggler_wait(key) <= 0:
                    # send the next batch first: the database works while the loop answers callers
                    batch = self._take(key)
                    if batch:
                        flight = asyncio.ensure_future(self._apply(key, batch))
                    _settle_all(done, outcomes)
                    continue
                _settle_all(done, outcomes)
                await asyncio.sleep(max(0.0, self._straggler_wait(key)))
                batch = self._take(key)
                if batch:
                    flight = asyncio.ensure_future(self._apply(key, batch))
        finally:
            self._busy.discard(key)
            if self._queues.get(key):  # arrived after the final check; never strand a request
                self._start_drain(key)

    async def _apply(self, key: Hashable, batch: list[_Pending[Req]]) -> list[Any]:
        """Outcomes of the batch in order (results or exception instances); never raises."""
        self.batches += 1
        self.requests += len(batch)
        callers = [p.span_context for p in batch if p.span_context.is_valid]
        sampled = [c for c in callers if c.trace_flags.sampled]
        parent = (sampled or callers or [None])[0]
        with self._tracer.start_as_current_span(
            "reserve batch",
            context=trace.set_span_in_context(trace.NonRecordingSpan(parent))
            if parent is not None
            else otel_context.Context(),
            links=[trace.Link(c) for c in callers if c is not parent],
            attributes={"shop.batch_size": len(batch)},
        ):
            return await self._apply_in_span(key, batch)

    async def _apply_in_span(self, key: Hashable, batch: list[_Pending[Req]]) -> list[Any]:
        try:
            return list(await self._flush(key, [p.request for p in batch]))
        except Exception as batch_error:
            if len(batch) == 1 or not self._isolate(batch_error):
                return [batch_error] * len(batch)
        outcomes: list[Any] = []
        for pending in batch:  # isolate the failing request
            if pending.future.done():  # its caller gave up: what it would hold, nobody would learn of
                outcomes.append(None)
                continue
            try:
                (outcome,) = await self._flush(key, [pending.request])
            except Exception as single_error:
                outcome = single_error
            outcomes.append(outcome)
        return outcomes


def _settle_all(batch: Sequence[_Pending[Any]], outcomes: Sequence[Any]) -> None:
    for pending, outcome in zip(batch, outcomes, strict=True):
        _settle(pending.future, outcome)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
