"""The keyed group-commit batcher's scheduling rules, with a plain in-memory flush function."""

from __future__ import annotations

import asyncio

from opentelemetry import context as otel_context

from inventory_svc.batcher import KeyedBatcher


class RecordingFlush:
    def __init__(self, delay: float = 0.01, fail_on: object = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, key, requests):
        self.batches.append(list(requests))
        await asyncio.sleep(self.delay)
        if self.fail_on in requests:
            raise RuntimeError("statement failed")
        return [r * 10 if r >= 0 else ValueError(f"rejected {r}") for r in requests]


async def test_lone_request_is_flushed_without_waiting_for_the_window():
    flush = RecordingFlush(delay=0)
    batcher = KeyedBatcher(flush, window=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.submit("sku", 1) == 10
    assert loop.time() - started < 1.0


async def test_concurrent_requests_for_one_key_share_batches_and_keep_their_own_outcomes():
    flush = RecordingFlush()
    batcher = KeyedBatcher(flush, window=0.001)
    results = await asyncio.gather(*(batcher.submit("sku", i) for i in range(50)), return_exceptions=True)
    assert results == [i * 10 for i in range(50)]
    assert len(flush.batches) < 10
    assert sorted(x for b in flush.batches for x in b) == list(range(50))


async def test_per_request_failures_do_not_affect_others():
    batcher = KeyedBatcher(RecordingFlush(), window=0.001)
    results = await asyncio.gather(*(batcher.submit("sku", i) for i in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 10 and isinstance(results[1], ValueError) and results[2] == 20


async def test_a_failing_batch_is_retried_request_by_request():
    flush = RecordingFlush(fail_on=3)
    batcher = KeyedBatcher(flush, window=0.001)
    results = await asyncio.gather(*(batcher.submit("sku", i) for i in range(6)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(results[3], RuntimeError)


async def test_keys_are_independent():
    flush = RecordingFlush()
    batcher = KeyedBatcher(flush, window=0.001)
    await asyncio.gather(*(batcher.submit(k, 1) for k in ("a", "b", "c")))
    assert len(flush.batches) == 3


async def test_the_next_batch_is_sent_before_the_previous_batch_is_answered():
    events: list[str] = []

    async def flush(key, requests):
        events.append(f"flush {list(requests)}")
        await asyncio.sleep(0.01)
        return list(requests)

    batcher = KeyedBatcher(flush, window=0)

    async def caller(i: int) -> None:
        await batcher.submit("sku", i)
        events.append(f"answered {i}")

    first = asyncio.create_task(caller(1))
    await asyncio.sleep(0)  # 1 is in flight alone
    await asyncio.gather(first, caller(2), caller(3))
    assert events == ["flush [1]", "flush [2, 3]", "answered 1", "answered 2", "answered 3"]


async def test_a_cancelled_flush_fails_its_callers_instead_of_stranding_them():
    async def flush(key, requests):
        await asyncio.sleep(3600)

    batcher = KeyedBatcher(flush, window=0)
    caller = asyncio.create_task(batcher.submit("sku", 1))
    await asyncio.sleep(0.01)
    for drainer in list(batcher._drainers):
        drainer.cancel()
    await asyncio.wait([caller], timeout=10)  # a stranded caller would wait forever
    assert caller.done()


async def test_isolation_skips_callers_that_gave_up():
    """A failed batch is retried request by request only for callers still waiting: reserving for one
    that timed out would hold stock nobody learns of until its TTL."""
    flush = RecordingFlush(delay=0.2, fail_on=3)
    batcher = KeyedBatcher(flush, window=0.001)
    first = asyncio.ensure_future(batcher.submit("sku", 0))  # in flight while the others queue
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batcher.submit("sku", i)) for i in (1, 2, 3, 4)]
    while len(flush.batches) < 2:  # [1, 2, 3, 4] has gone to the "database" (200 ms there)
        await asyncio.sleep(0.005)
    assert flush.batches == [[0], [1, 2, 3, 4]]
    waiting[1].cancel()  # the caller of 2 gives up
    results = await asyncio.gather(first, *waiting, return_exceptions=True)

    assert results[0] == 0 and results[1] == 10 and results[4] == 40
    assert isinstance(results[2], asyncio.CancelledError) and isinstance(results[3], RuntimeError)
    assert flush.batches == [[0], [1, 2, 3, 4], [1], [3], [4]]


async def test_an_error_that_is_not_one_requests_fails_the_whole_batch_without_retries():
    class Unreachable(Exception):
        pass

    class DatabaseAway(RecordingFlush):
        async def __call__(self, key, requests):
            self.batches.append(list(requests))
            await asyncio.sleep(self.delay)
            raise Unreachable("pool timeout")

    flush = DatabaseAway(delay=0.02)
    batcher = KeyedBatcher(flush, window=0.001, isolate=lambda error: not isinstance(error, Unreachable))
    first = asyncio.ensure_future(batcher.submit("sku", 0))
    await asyncio.sleep(0.005)
    results = await asyncio.gather(
        first, *(batcher.submit("sku", i) for i in (1, 2, 3)), return_exceptions=True
    )

    assert all(isinstance(r, Unreachable) for r in results)
    assert flush.batches == [[0], [1, 2, 3]]  # no request-by-request pass


async def test_each_batch_runs_in_a_span_under_its_first_sampled_caller_linking_the_others():
    """What a batch writes carries the current span's context (the reserve event's traceparent): the
    batch's own span, in the trace of a caller of that batch and linked from the rest. It ran in the
    context of whichever request had started the drain loop, answered by then."""
    from opentelemetry import propagate
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    first_in = asyncio.Event()
    release = asyncio.Event()
    carried: dict[int, str] = {}

    async def flush(key, requests):
        headers: dict[str, str] = {}
        propagate.inject(headers)  # as inject_headers() does for the batch's event
        for r in requests:
            carried[r] = headers["traceparent"]
        if requests == [0]:
            first_in.set()
            await release.wait()
        return list(requests)

    batcher = KeyedBatcher(flush, window=0, tracer=tracer)

    async def caller(i: int, *, sampled: bool = True) -> int:
        if sampled:
            with tracer.start_as_current_span(f"caller {i}"):
                return await batcher.submit("sku", i)
        unsampled = SpanContext(int(f"{i + 1}" * 8, 16), 0xABC, is_remote=True, trace_flags=TraceFlags(0))
        token = otel_context.attach(set_span_in_context(NonRecordingSpan(unsampled)))
        try:
            return await batcher.submit("sku", i)
        finally:
            otel_context.detach(token)

    lone = asyncio.ensure_future(caller(0))
    await first_in.wait()  # the first batch is in flight: the next three queue into one batch
    queued = [
        asyncio.ensure_future(caller(1, sampled=False)),
        *(asyncio.ensure_future(caller(i)) for i in (2, 3)),
    ]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(lone, *queued) == [0, 1, 2, 3]

    spans = {s.name: s for s in exporter.get_finished_spans()}
    batches = [s for s in exporter.get_finished_spans() if s.name == "reserve batch"]
    assert [b.attributes["shop.batch_size"] for b in batches] == [1, 3]
    lone_batch, shared = batches
    assert lone_batch.parent.span_id == spans["caller 0"].context.span_id and not lone_batch.links
    # the first sampled caller is the parent (caller 1's unsampled trace would drop the span)
    assert shared.parent.span_id == spans["caller 2"].context.span_id
    assert shared.context.trace_id == spans["caller 2"].context.trace_id
    assert {(link.context.trace_id, link.context.span_id) for link in shared.links} == {
        (int("2" * 8, 16), 0xABC),
        (spans["caller 3"].context.trace_id, spans["caller 3"].context.span_id),
    }
    # what the batch wrote carries the batch span, not the caller that started the drain loop
    assert carried[0].split("-")[2] == f"{lone_batch.context.span_id:016x}"
    assert {carried[i].split("-")[2] for i in (1, 2, 3)} == {f"{shared.context.span_id:016x}"}
