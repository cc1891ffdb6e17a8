"""De-duplicating Kafka consumer: each event id is applied once, in the same transaction as its effect.

Each poll's records are applied in one DB transaction: it first inserts every (consumer, event_id)
into `processed_events` in one statement, and the handler runs only for the ids that statement
inserted (a redelivered event hits the primary key and is skipped; an id seen twice in one batch
runs once). Offsets are committed to Kafka only after that transaction commits, so a crash
re-delivers (at least once) and the de-duplication makes the effect exactly once.

A failing batch: an error of the moment (database or network away, a deadlock) rolls it back and the
consumer restarts and meets the same records again. Any other error means a record the handler
cannot apply (unreadable, or a bug): the batch is then applied record by record, each in its own
transaction, and a record that still fails after DEAD_LETTER_ATTEMPTS is parked in `dead_letters`
with its processed_events row, so one bad record never stops its partition, and with it the
consumer, forever. Parked records are counted (outcome "dead_lettered") and logged.

One transaction per batch instead of per event: an event's own transaction was ~4 round trips and
most of catalog_svc's consumer CPU under checkout load. Events the consumer has no use for (`select`
says no, e.g. stock changes to order_svc's expiry consumer) never reach the database at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import psycopg
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, RebalanceInProgressError
from opentelemetry import context as otel_context
from opentelemetry import trace
from psycopg_pool import AsyncConnectionPool

from meshkit import metrics
from meshkit.context import request_id_var
from meshkit.db import CONNECTION_ERRORS
from meshkit.errors import Unavailable
from meshkit.tracing import extract_context

log = logging.getLogger("meshkit.consumer")

Handler = Callable[[psycopg.AsyncConnection, ConsumerRecord], Awaitable[None]]
# True when the handler has an effect for the record; False records are counted "ignored" and
# skipped without a transaction (nothing to make exactly-once). May raise on an unreadable record.
Selector = Callable[[ConsumerRecord], bool]

# How long the broker holds an empty fetch and one poll() waits. An event is still delivered as soon
# as it is written (fetch_min_bytes=1 answers the held fetch at once); what this sets is how often an
# idle consumer wakes. Each wake is several hops between the worker thread, kafka-python's IO thread
# and the event loop: at the library's 500 ms, catalog_svc's two consumers took ~1% of a core while
# idle and, under load, competed with the serving thread for the GIL 4 times a second. The
# coordinator still caps each wait at the next heartbeat (3 s), so a rebalance is joined as promptly.
IDLE_WAIT_MS = 5000
DEAD_LETTER_ATTEMPTS = 3
# namespace of the ids a record without an event-id header is parked under (topic:partition:offset)
NO_EVENT_ID = uuid.UUID("6f1d8f3e-2b7a-4c55-9a49-6c1f3b0e9d21")
# errors of the moment: retry the whole batch after a restart, never park a record for them
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock timeout
# connection, insufficient resources, operator intervention (shutdown), system error
_RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})


def is_transient(error: BaseException) -> bool:
    """An error that says nothing about the record: the database, Kafka or a peer is away or busy."""
    if isinstance(error, (Unavailable, *CONNECTION_ERRORS, ConnectionError, TimeoutError)):
        return True
    if not isinstance(error, psycopg.Error) or not error.sqlstate:
        return False
    return error.sqlstate in _RETRYABLE_SQLSTATES or error.sqlstate[:2] in _RETRYABLE_SQLSTATE_CLASSES


def header_of(record: ConsumerRecord, name: str) -> str:
    """A record header's text ("" when absent or not UTF-8)."""
    for key, value in record.headers or []:
        if key == name and value:
            try:
                return value.decode()
            except UnicodeDecodeError:
                return ""
    return ""


def event_id_of(record: ConsumerRecord) -> uuid.UUID | None:
    text = header_of(record, "event-id")
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


class DedupConsumer:
    def __init__(
        self,
        *,
        bootstrap: str,
        topics: list[str],
        group_id: str,
        pool: AsyncConnectionPool,
        handler: Handler,
        consumer_name: str | None = None,
        auto_offset_reset: str = "earliest",
        select: Selector | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group = group_id
        self._pool = pool
        self._handler = handler
        self._select = select
        self._name = consumer_name or group_id
        self._reset = auto_offset_reset
        self._consumer: KafkaConsumer | None = None
        self._tracer = trace.get_tracer("meshkit.consumer")

    def _build(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap.split(","),
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset=self._reset,
            max_poll_records=200,
            session_timeout_ms=10000,
            heartbeat_interval_ms=3000,
            request_timeout_ms=30500,
            fetch_max_wait_ms=IDLE_WAIT_MS,
        )
        consumer.subscribe(self._topics)
        return consumer

    async def run(self) -> None:
        try:
            while True:
                if self._consumer is None:
                    self._consumer = await asyncio.to_thread(self._build)
                batches = await asyncio.to_thread(self._consumer.poll, IDLE_WAIT_MS)
                try:
                    records = [record for part in batches.values() for record in part]
                    if records:
                        await self._apply_batch(records)
                except Exception:
                    # a failing event stops this consumer and it meets the event again after its
                    # restart: report the lag from the committed offsets, or the gauge (and the
                    # KafkaConsumerLagHigh alert) would stay at the last healthy value
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self._report_lag, from_committed=True)
                    raise
                if batches:
                    await asyncio.to_thread(self._commit_and_report_lag)
        finally:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await asyncio.to_thread(consumer.close)

    async def _apply_batch(self, records: list[ConsumerRecord]) -> None:
        wanted: list[tuple[uuid.UUID, ConsumerRecord]] = []
        unreadable: list[tuple[uuid.UUID, ConsumerRecord, Exception]] = []
        ignored = 0
        for record in records:
            event_id = event_id_of(record)
            if event_id is None:  # no producer of ours writes one: parked, under an id of its place
                where = f"{record.topic}:{record.partition}:{record.offset}"
                unreadable.append((uuid.uuid5(NO_EVENT_ID, where), record, ValueError("no event-id header")))
                continue
            try:
                selected = self._select is None or self._select(record)
            except Exception as error:  # the selector decodes: it will fail the same way every time
                unreadable.append((event_id, record, error))
                continue
            if not selected:
                ignored += 1
                continue
            wanted.append((event_id, record))
        if ignored:
            metrics.kafka_events_consumed_total.labels(self._group, "ignored").inc(ignored)
        for event_id, record, error in unreadable:
            await self._dead_letter(event_id, record, error, attempts=1)
        if not wanted:
            return
        try:
            await self._apply_in_one_transaction(wanted)
        except Exception as error:
            if is_transient(error):
                raise
            log.warning(
                "a batch failed; applying its records one by one",
                extra={"group": self._group, "records": len(wanted), "error": repr(error)[:300]},
            )
            for event_id, record in wanted:
                await self._apply_alone_or_park(event_id, record)

    async def _apply_alone_or_park(self, event_id: uuid.UUID, record: ConsumerRecord) -> None:
        for attempt in range(1, DEAD_LETTER_ATTEMPTS + 1):
            try:
                await self._apply_in_one_transaction([(event_id, record)])
                return
            except Exception as error:
                if is_transient(error):
                    raise
                if attempt == DEAD_LETTER_ATTEMPTS:
                    await self._dead_letter(event_id, record, error, attempts=attempt)

    async def _dead_letter(
        self, event_id: uuid.UUID, record: ConsumerRecord, error: Exception, *, attempts: int
    ) -> None:
        """Park a record nothing can apply, with its processed_events row (one transaction)."""
        headers = {key: (value or b"").decode("utf-8", "replace") for key, value in record.headers or []}
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO processed_events (consumer, event_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (self._name, event_id),
            )
            if await cur.fetchone() is None:
                return  # applied (or parked) by another member meanwhile
            await conn.execute(
                "INSERT INTO dead_letters (consumer, event_id, topic, kafka_partition, kafka_offset,"
                " record_key, payload, headers, error, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (consumer, event_id) DO NOTHING",
                (
                    self._name,
                    event_id,
                    record.topic,
                    record.partition,
                    record.offset,
                    record.key,
                    record.value,
                    json.dumps(headers),
                    repr(error)[:2000],
                    attempts,
                ),
            )
        metrics.kafka_events_consumed_total.labels(self._group, "dead_lettered").inc()
        log.error(
            "event parked in dead_letters: it cannot be applied",
            extra={
                "group": self._group,
                "event_id": str(event_id),
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": repr(error)[:300],
            },
        )

    async def _apply_in_one_transaction(self, wanted: list[tuple[uuid.UUID, ConsumerRecord]]) -> None:
        counter = metrics.kafka_events_consumed_total
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO processed_events (consumer, event_id) SELECT %s, unnest(%s::uuid[])"
                " ON CONFLICT DO NOTHING RETURNING event_id",
                (self._name, [event_id for event_id, _ in wanted]),
            )
            fresh = {row["event_id"] for row in await cur.fetchall()}
            applied = 0
            for event_id, record in wanted:
                if event_id not in fresh:
                    continue
                fresh.discard(event_id)  # the same id twice in one batch: the first one applies
                await self._apply(conn, record)
                applied += 1
        if applied:
            counter.labels(self._group, "applied").inc(applied)
        if len(wanted) > applied:
            counter.labels(self._group, "duplicate").inc(len(wanted) - applied)

    async def _apply(self, conn: psycopg.AsyncConnection, record: ConsumerRecord) -> None:
        token = otel_context.attach(extract_context(record.headers))
        # the producing request's id (outbox header `request-id`) in this event's log lines
        request_id = request_id_var.set(header_of(record, "request-id"))
        try:
            with self._tracer.start_as_current_span(
                f"consume {record.topic}",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": record.topic,
                    "messaging.consumer.group.name": self._group,
                },
            ):
                await self._handler(conn, record)
        finally:
            request_id_var.reset(request_id)
            otel_context.detach(token)

    def _commit_and_report_lag(self) -> None:
        """After a batch: one hop to the worker thread for both (each hop wakes the event loop)."""
        consumer = self._consumer
        if consumer is None:
            return
        try:
            consumer.commit()
        except (CommitFailedError, RebalanceInProgressError) as error:
            # the group is rebalancing: the batch is applied (and recorded) in the database; the
            # next poll rejoins, and whoever gets the partitions meets these records again and skips
            # them by event id. Rebuilding the consumer here would leave and join the group once more.
            log.warning(
                "offset commit refused during a rebalance", extra={"group": self._group, "error": repr(error)}
            )
            return
        self._report_lag()

    def _report_lag(self, *, from_committed: bool = False) -> None:
        """Messages behind the log end per topic, over this consumer's partitions. After a batch the
        position is the progress; after a failure only the committed offset is."""
        consumer = self._consumer
        if consumer is None:
            return
        assigned = list(consumer.assignment())
        if not assigned:
            return
        if from_committed:
            ends = consumer.end_offsets(assigned)
        else:
            # each fetch response carries its partitions' high watermark, the end the consumer last
            # saw: lag without a ListOffsets round trip per batch (what Java's records-lag reports)
            ends = {tp: consumer.highwater(tp) for tp in assigned}
            unknown = [tp for tp, end in ends.items() if end is None]
            if unknown:
                ends.update(consumer.end_offsets(unknown))
        starts = consumer.beginning_offsets(assigned) if from_committed else {}
        # a subscribed topic none of whose partitions is assigned here any more reads 0, not its old lag
        per_topic: dict[str, int] = dict.fromkeys(self._topics, 0)
        for tp in assigned:
            if from_committed:
                committed = consumer.committed(tp)
                position = starts.get(tp, 0) if committed is None else committed
            else:
                position = consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends.get(tp, position) - position)
        for topic, lag in per_topic.items():
            metrics.kafka_consumer_lag.labels(self._group, topic).set(lag)


__all__ = ["DedupConsumer", "TopicPartition", "event_id_of"]
