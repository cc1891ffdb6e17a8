"""Transactional outbox: events leave a transaction only through this table.

Writer: `add_event(conn, ...)` inserts the serialized protobuf event in the caller's transaction, so
an event exists if and only if its change committed.

Relay: one active relay per service (all replicas and worker processes run the loop, but only the
holder of a session-level PostgreSQL advisory lock publishes). It reads unsent rows in id order,
sends them with the Kafka key (per-product / per-order keys keep per-key order on one partition),
waits for every ack, then marks the rows sent. Each event written inside a trace is sent under a
PRODUCER span of its own ("publish <topic>", child of the writer's span, with the time the event
waited in the outbox), whose context replaces the record's traceparent: a consumer's span hangs
under it, so a trace shows the hop from the commit to Kafka. A crash between ack and mark re-sends the batch:
delivery is at least once, and consumers drop duplicates by event id. If Kafka is down, rows simply
wait; the service keeps accepting writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from kafka import KafkaProducer
from opentelemetry import propagate, trace
from psycopg_pool import AsyncConnectionPool

from meshkit import metrics
from meshkit.context import request_id_var
from meshkit.tracing import inject_headers

log = logging.getLogger("meshkit.outbox")


@dataclasses.dataclass(frozen=True)
class OutboxEvent:
    """One outbox row, built but not yet written: `write_event` inserts it in the caller's
    transaction, or a stored function inserts it from `row()` in the same round trip as its change."""

    event_id: uuid.UUID
    topic: str
    key: str
    event_type: str
    payload: bytes
    headers: dict[str, str]

    def row(self) -> tuple[uuid.UUID, str, str, str, bytes, str]:
        """(event_id, topic, key, event_type, payload, headers as JSON): the outbox columns."""
        return (self.event_id, self.topic, self.key, self.event_type, self.payload, json.dumps(self.headers))


def context_headers() -> dict[str, str]:
    """The headers every event carries besides its id and type: trace context and the request id.
    (Stored functions that write outbox rows themselves take these and add id and type per event.)"""
    headers = inject_headers()
    request_id = request_id_var.get()
    if request_id:
        headers["request-id"] = request_id
    return headers


def prepare_event(
    *, topic: str, key: str, event_type: str, payload: bytes, event_id: uuid.UUID | None = None
) -> OutboxEvent:
    """An event with its id and the headers every event carries (event id and type, trace, request id)."""
    event_id = event_id or uuid.uuid4()
    headers = {"event-id": str(event_id), "event-type": event_type, **context_headers()}
    return OutboxEvent(event_id, topic, key, event_type, payload, headers)


def proto_event(
    message_type: Callable[..., Message], *, topic: str, key: str, event_type: str, **fields: Any
) -> OutboxEvent:
    """A protobuf event stamped with a fresh `event_id` (the message's field and the outbox row's):
    how catalog and order events are built. `fields` are the message's other fields."""
    event_id = uuid.uuid4()
    message = message_type(event_id=str(event_id), **fields)
    return prepare_event(
        topic=topic, key=key, event_type=event_type, payload=message.SerializeToString(), event_id=event_id
    )


async def write_event(conn: psycopg.AsyncConnection, event: OutboxEvent) -> uuid.UUID:
    """Insert a prepared event in the caller's transaction. Returns its id."""
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload, headers) VALUES (%s, %s, %s, %s, %s, %s)",
        event.row(),
    )
    return event.event_id


async def add_event(
    conn: psycopg.AsyncConnection,
    *,
    topic: str,
    key: str,
    event_type: str,
    payload: bytes,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record an event in the current transaction. Returns its id (also sent as header `event-id`)."""
    return await write_event(
        conn, prepare_event(topic=topic, key=key, event_type=event_type, payload=payload, event_id=event_id)
    )


def advisory_key(name: str) -> int:
    """A stable 64-bit advisory lock key for a job name (e.g. 'outbox-relay:inventory')."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# A lease's session on a connection that went half-open (a peer vanished without a FIN) must not
# stall leadership: the holder steps down when its ping does not answer in time, and both ends probe
# the idle socket, so the server drops the session (and its lock) within ~25 s instead of the
# kernel's default of two hours, and another instance can take over.
LEASE_PING_TIMEOUT_SECONDS = 5.0
LEASE_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3",
}


class LeaderLease:
    """Leadership by a session-level advisory lock held on a dedicated connection.

    Losing the connection (crash, network, DB restart) releases the lock, so another instance takes
    over within one poll interval.
    """

    def __init__(self, database_url: str, name: str) -> None:
        self._url = database_url
        self._key = advisory_key(name)
        self.name = name
        self._conn: psycopg.AsyncConnection | None = None
        self._held = False  # pg_try_advisory_lock said yes on self._conn
        self._confirmed = 0.0  # time.monotonic() when the lock's session last answered

    async def acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=3, **LEASE_KEEPALIVES
                )
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            row = await cur.fetchone()
            held = bool(row and row[0])
        except psycopg.Error:
            self._held = False
            await self.release()
            return False
        self._held = held  # a refused try keeps the connection for the next one, but leads nothing
        if held:
            self._confirmed = time.monotonic()
        return held

    async def still_held(self, *, within: float = 0.0) -> bool:
        """Whether the lock's session is still alive. `within`: trust an answer that recent instead of
        asking again (a hot loop need not ping the database on every pass; a lost session is noticed
        at the next check, and the caller should `recheck()` as soon as its own queries fail)."""
        if not self._held or self._conn is None or self._conn.closed:
            return False
        if within and time.monotonic() - self._confirmed < within:
            return True
        try:
            async with asyncio.timeout(LEASE_PING_TIMEOUT_SECONDS):
                await self._conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError):
            self._held = False  # the session is gone or stuck: close it without asking it to unlock
            await self.release()
            return False
        self._confirmed = time.monotonic()
        return True

    def recheck(self) -> None:
        """Make the next `still_held(within=...)` ask the database."""
        self._confirmed = 0.0

    async def release(self) -> None:
        if self._conn is not None:
            # unlock first: closing alone frees the lock only once the server has ended the session,
            # a moment after close() returns, and a follower's try in that moment is refused
            if self._held and not self._conn.closed:
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    async with asyncio.timeout(LEASE_PING_TIMEOUT_SECONDS):
                        await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            try:
                await self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
        self._held = False
        self._confirmed = 0.0


# The relay checks its lease's session at most this often while it publishes (a query failing on the
# pool, e.g. a database restart, makes it check at once), and reads the backlog gauge's count(*) at
# most this often: both ran on every pass, ~8% of inventory_svc's main thread at 64 clients.
LEASE_CHECK_SECONDS = 2.0
BACKLOG_REPORT_SECONDS = 1.0


class OutboxRelay:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        database_url: str,
        service: str,
        producer_factory: Callable[[], KafkaProducer],
        batch_size: int = 500,
        poll_seconds: float = 0.2,
    ) -> None:
        self._pool = pool
        self._service = service
        self._lease = LeaderLease(database_url, f"outbox-relay:{service}")
        self._producer_factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._batch_size = batch_size
        self._poll = poll_seconds
        self.wakeup = asyncio.Event()
        self._next_backlog_report = 0.0

    async def run(self) -> None:
        """Forever: become leader if possible, publish batches, back off on Kafka failures."""
        backoff = self._poll
        try:
            while True:
                is_leader = (
                    await self._lease.still_held(within=LEASE_CHECK_SECONDS) or await self._lease.acquire()
                )
                metrics.outbox_relay_leader.labels(self._service).set(1 if is_leader else 0)
                if not is_leader:
                    # a follower reports an empty backlog, so max() over a service's processes is the
                    # leader's figure and a former leader's last value does not linger
                    metrics.outbox_backlog.labels(self._service).set(0)
                    metrics.outbox_oldest_age_seconds.labels(self._service).set(0)
                    await asyncio.sleep(1.0)
                    continue
                try:
                    sent = await self.publish_batch()
                    backoff = self._poll
                except Exception as exc:  # Kafka or DB trouble: keep rows, retry with backoff
                    metrics.outbox_publish_failures_total.labels(self._service).inc()
                    log.warning(
                        "outbox publish failed", extra={"error": repr(exc)[:300], "service": self._service}
                    )
                    await self._drop_producer()
                    self._lease.recheck()  # the database may be what failed: is the lock still ours?
                    # while Kafka is down the backlog's age is what the OutboxBacklogOld alert watches
                    if time.monotonic() >= self._next_backlog_report:
                        with contextlib.suppress(Exception):
                            await self._update_backlog_metrics()
                    backoff = min(backoff * 2, 5.0)
                    await asyncio.sleep(backoff)
                    continue
                if time.monotonic() >= self._next_backlog_report:
                    await self._update_backlog_metrics()  # at most once a second, idle or busy
                if sent < self._batch_size:
                    try:
                        await asyncio.wait_for(self.wakeup.wait(), timeout=self._poll)
                    except TimeoutError:
                        pass
                    self.wakeup.clear()
        finally:
            await self._drop_producer()
            await self._lease.release()
            metrics.outbox_relay_leader.labels(self._service).set(0)

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were sent."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, event_id, topic, key, payload, payload_json, message_type, headers,"
                " extract(epoch FROM created_at)::float8 AS created_at FROM outbox"
                " WHERE sent_at IS NULL ORDER BY id LIMIT %s",
                (self._batch_size,),
            )
            rows = await cur.fetchall()
        if not rows:
            return 0
        producer = await self._get_producer()
        await asyncio.to_thread(_send_all, producer, rows)
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],)
            )
        for row in rows:
            metrics.outbox_published_total.labels(self._service, row["topic"]).inc()
        return len(rows)

    async def _update_backlog_metrics(self) -> None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
                " FROM outbox WHERE sent_at IS NULL"
            )
            row = await cur.fetchone()
        metrics.outbox_backlog.labels(self._service).set(row["n"])
        metrics.outbox_oldest_age_seconds.labels(self._service).set(float(row["age"]))
        self._next_backlog_report = time.monotonic() + BACKLOG_REPORT_SECONDS

    async def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = await asyncio.to_thread(self._producer_factory)
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.close, 2)


def _payload_bytes(row: dict[str, Any]) -> bytes:
    if row["payload"] is not None:
        return bytes(row["payload"])
    descriptor = descriptor_pool.Default().FindMessageTypeByName(row["message_type"])
    message = message_factory.GetMessageClass(descriptor)()
    json_format.ParseDict(row["payload_json"], message)
    return message.SerializeToString()


def _send_all(producer: KafkaProducer, rows: list[dict[str, Any]]) -> None:
    tracer = trace.get_tracer("meshkit.outbox")
    spans: list[trace.Span] = []
    try:
        futures = []
        for row in rows:
            headers = dict(row["headers"])
            if _sampled(headers.get("traceparent", "")):
                span = _publish_span(tracer, row, headers)
                spans.append(span)
                propagate.inject(headers, context=trace.set_span_in_context(span))
            futures.append(
                producer.send(
                    row["topic"],
                    key=row["key"].encode(),
                    value=_payload_bytes(row),
                    headers=[(k, str(v).encode()) for k, v in headers.items()],
                )
            )
        producer.flush(timeout=10)
        deadline = time.monotonic() + 10
        for future in futures:
            future.get(timeout=max(0.1, deadline - time.monotonic()))
    except Exception as error:
        for span in spans:
            span.record_exception(error)
            span.set_status(trace.StatusCode.ERROR, str(error)[:200])
        raise
    finally:
        for span in spans:
            span.end()


_ODD_HEX_DIGITS = frozenset("13579bdfBDF")


def _sampled(traceparent: str) -> bool:
    """A W3C traceparent whose trace is sampled (flags bit 0). An unsampled one gets no PRODUCER
    span: it would record nothing, and costs ~20 us an event to create and inject."""
    return len(traceparent) >= 55 and traceparent[-1:] in _ODD_HEX_DIGITS


def _publish_span(tracer: trace.Tracer, row: dict[str, Any], headers: dict[str, str]) -> trace.Span:
    """The PRODUCER span of one event, child of the span that wrote it (the row's traceparent)."""
    return tracer.start_span(
        f"publish {row['topic']}",
        context=propagate.extract(headers),
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": row["topic"],
            "messaging.message.id": str(row["event_id"]),
            "messaging.kafka.message.key": row["key"],
            "shop.outbox.wait_ms": round(max(0.0, time.time() - row["created_at"]) * 1000, 1),
        },
    )


async def outbox_status(pool: AsyncConnectionPool) -> dict[str, Any]:
    """Backlog summary for `shopctl outbox status`."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL) AS unsent, count(*) AS total,"
            " min(created_at) FILTER (WHERE sent_at IS NULL) AS oldest_unsent FROM outbox"
        )
        return dict(await cur.fetchone())
