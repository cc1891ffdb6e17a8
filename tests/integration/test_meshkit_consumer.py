"""meshkit's DedupConsumer against real Kafka and PostgreSQL: a poll's records are applied in one
transaction, each event id once (also when it comes twice in one batch or is redelivered later),
records the selector refuses never touch the database, a transient failure rolls the batch back so
that a restarted consumer applies every record exactly once, and a record that can never be applied
is parked in dead_letters instead of stopping its partition."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaProducer
from psycopg import sql

from meshkit.consumer import DedupConsumer
from meshkit.context import request_id_var
from meshkit.db import open_pool
from meshkit.kafka import ensure_topics

SHARED_MIGRATIONS = sorted((Path(__file__).resolve().parents[2] / "meshkit" / "migrations").glob("*.sql"))


@pytest.fixture
async def schema_pool(test_database, unique_name):
    schema = unique_name("consumer")
    with psycopg.connect(test_database, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        for migration in SHARED_MIGRATIONS:
            conn.execute(migration.read_text())
        conn.execute("CREATE TABLE effects (event_id uuid NOT NULL, value text NOT NULL)")
    pool = await open_pool(test_database, schema=schema, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def _produce(bootstrap: str, topic: str, events: list[tuple[uuid.UUID, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
    try:
        for event_id, value in events:
            producer.send(
                topic, key=b"one-partition", value=value, headers=[("event-id", str(event_id).encode())]
            )
        producer.flush(timeout=10)
    finally:
        producer.close()


def _consumer(bootstrap: str, topic: str, group: str, pool, handler, select=None) -> DedupConsumer:
    return DedupConsumer(
        bootstrap=bootstrap, topics=[topic], group_id=group, pool=pool, handler=handler, select=select
    )


def _produce_without_event_id(bootstrap: str, topic: str, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
    try:
        producer.send(topic, key=b"one-partition", value=value)
        producer.flush(timeout=10)
    finally:
        producer.close()


async def _rows(pool, query: str) -> list[tuple]:
    async with pool.connection() as conn:
        cur = await conn.execute(query)
        return [tuple(row.values()) for row in await cur.fetchall()]


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "consumer did not catch up"
        await asyncio.sleep(0.2)


async def test_each_event_id_applies_once_and_refused_records_skip_the_database(
    schema_pool, infra_endpoints, unique_name, mesh
):
    bootstrap = infra_endpoints.kafka_bootstrap
    topic = unique_name(f"consumer-dedup-{mesh.suffix}")  # the session's suffix: deleted at its end
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], partitions=1)
    a, b, skip = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # b twice in what will most likely be one poll, and a refused record in the middle
    await asyncio.to_thread(
        _produce, bootstrap, topic, [(a, b"keep:a"), (b, b"keep:b"), (skip, b"drop:x"), (b, b"keep:b")]
    )

    async def handler(conn, record):
        await conn.execute(
            "INSERT INTO effects (event_id, value) VALUES (%s, %s)",
            (dict(record.headers)["event-id"].decode(), record.value.decode()),
        )

    consumer = _consumer(
        bootstrap,
        topic,
        unique_name(f"group-{mesh.suffix}"),
        schema_pool,
        handler,
        lambda record: record.value.startswith(b"keep:"),
    )
    async with _running(consumer):
        await _until(lambda: _count(schema_pool, "effects", 2))
        # a redelivery later (a producer retry, a replayed partition): still no second effect
        await asyncio.to_thread(_produce, bootstrap, topic, [(a, b"keep:a"), (uuid.uuid4(), b"keep:c")])
        await _until(lambda: _count(schema_pool, "effects", 3))
        await asyncio.sleep(1.0)
    effects = sorted(value for _, value in await _rows(schema_pool, "SELECT event_id, value FROM effects"))
    assert effects == ["keep:a", "keep:b", "keep:c"]
    recorded = {row[0] for row in await _rows(schema_pool, "SELECT event_id FROM processed_events")}
    assert a in recorded and b in recorded and skip not in recorded


@contextlib.asynccontextmanager
async def _running(consumer: DedupConsumer):
    task = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _count(pool, table: str, want: int) -> bool:
    [(n,)] = await _rows(pool, f"SELECT count(*) FROM {table}")
    return n >= want


async def test_a_transient_failure_rolls_back_its_batch_and_a_restart_applies_it_exactly_once(
    schema_pool, infra_endpoints, unique_name, mesh
):
    bootstrap = infra_endpoints.kafka_bootstrap
    topic = unique_name(f"consumer-fail-{mesh.suffix}")
    group = unique_name(f"group-{mesh.suffix}")
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], partitions=1)
    events = [(uuid.uuid4(), f"v{i}".encode()) for i in range(6)]
    await asyncio.to_thread(_produce, bootstrap, topic, events)
    failing = {"armed": True}

    async def handler(conn, record):
        await conn.execute(
            "INSERT INTO effects (event_id, value) VALUES (%s, %s)",
            (dict(record.headers)["event-id"].decode(), record.value.decode()),
        )
        if record.value == b"v4" and failing["armed"]:
            raise psycopg.OperationalError("the database went away on v4")

    def consumer() -> DedupConsumer:
        return DedupConsumer(
            bootstrap=bootstrap, topics=[topic], group_id=group, pool=schema_pool, handler=handler
        )

    with pytest.raises(psycopg.OperationalError, match="v4"):
        await asyncio.wait_for(consumer().run(), timeout=60)
    # the batch holding v4 was rolled back whole; whatever committed before it is there once
    before = [value for _, value in await _rows(schema_pool, "SELECT event_id, value FROM effects")]
    assert "v4" not in before and len(before) == len(set(before))

    failing["armed"] = False
    async with _running(consumer()):
        await _until(lambda: _count(schema_pool, "effects", 6))
        await asyncio.sleep(1.0)
    after = sorted(value for _, value in await _rows(schema_pool, "SELECT event_id, value FROM effects"))
    assert after == [f"v{i}" for i in range(6)]
    [(recorded,)] = await _rows(schema_pool, "SELECT count(*) FROM processed_events")
    assert recorded == 6


async def test_a_record_that_can_never_be_applied_is_parked_and_the_rest_flow_on(
    schema_pool, infra_endpoints, unique_name, mesh
):
    """A handler that always fails on one record (a bug, unreadable bytes) rolled its batch back,
    and the restarted consumer met it again, forever: nothing after it on the partition was ever
    applied. It is parked in dead_letters (with its processed_events row) after a few attempts; so is
    a record the selector cannot even read."""
    bootstrap = infra_endpoints.kafka_bootstrap
    topic = unique_name(f"consumer-poison-{mesh.suffix}")
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], partitions=1)
    events = [(uuid.uuid4(), f"v{i}".encode()) for i in range(6)]
    events[2] = (events[2][0], b"unreadable")
    await asyncio.to_thread(_produce, bootstrap, topic, events)
    attempts = {"v4": 0}

    async def handler(conn, record):
        if record.value == b"v4":
            attempts["v4"] += 1
            raise ValueError("cannot apply v4")
        await conn.execute(
            "INSERT INTO effects (event_id, value) VALUES (%s, %s)",
            (dict(record.headers)["event-id"].decode(), record.value.decode()),
        )

    def select(record) -> bool:
        if record.value == b"unreadable":
            raise ValueError("not an event")
        return True

    consumer = _consumer(bootstrap, topic, unique_name(f"group-{mesh.suffix}"), schema_pool, handler, select)
    async with _running(consumer):
        await _until(lambda: _count(schema_pool, "effects", 4))
        await asyncio.to_thread(_produce_without_event_id, bootstrap, topic, b"anonymous")
        later = uuid.uuid4()  # the partition still moves after the bad records
        await asyncio.to_thread(_produce, bootstrap, topic, [(later, b"v6")])
        await _until(lambda: _count(schema_pool, "effects", 5))
    effects = sorted(value for _, value in await _rows(schema_pool, "SELECT event_id, value FROM effects"))
    assert effects == ["v0", "v1", "v3", "v5", "v6"]
    parked = await _rows(
        schema_pool, "SELECT event_id, payload, attempts, error FROM dead_letters ORDER BY kafka_offset"
    )
    assert [(bytes(payload), n) for _, payload, n, _ in parked] == [
        (b"unreadable", 1),
        (b"v4", 3),
        (b"anonymous", 1),
    ]
    assert [event_id for event_id, *_ in parked[:2]] == [events[2][0], events[4][0]]
    assert "no event-id header" in parked[2][3]
    assert "cannot apply v4" in parked[1][3] and attempts["v4"] >= 3
    recorded = {row[0] for row in await _rows(schema_pool, "SELECT event_id FROM processed_events")}
    assert {events[2][0], events[4][0], later} <= recorded


async def test_a_handler_runs_with_the_producing_requests_id(schema_pool, infra_endpoints, unique_name, mesh):
    """Log lines of a consumed event carry the request id of the request that wrote it (the outbox
    header `request-id`), as every log line of a request does; one without the header carries none."""
    bootstrap = infra_endpoints.kafka_bootstrap
    topic = unique_name(f"consumer-request-id-{mesh.suffix}")
    await asyncio.to_thread(ensure_topics, bootstrap, [topic], partitions=1)
    with_id, without = uuid.uuid4(), uuid.uuid4()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=bootstrap.split(","))
        try:
            producer.send(
                topic,
                key=b"k",
                value=b"with",
                headers=[("event-id", str(with_id).encode()), ("request-id", b"req-0123456789abcdef")],
            )
            producer.send(topic, key=b"k", value=b"without", headers=[("event-id", str(without).encode())])
            producer.flush(timeout=10)
        finally:
            producer.close()

    await asyncio.to_thread(produce)
    seen: dict[bytes, str] = {}

    async def handler(conn, record):
        seen[record.value] = request_id_var.get()

    consumer = DedupConsumer(
        bootstrap=bootstrap,
        topics=[topic],
        group_id=unique_name(f"group-{mesh.suffix}"),
        pool=schema_pool,
        handler=handler,
    )

    async def both_seen() -> bool:
        return len(seen) == 2

    async with _running(consumer):
        await _until(both_seen)
    assert seen == {b"with": "req-0123456789abcdef", b"without": ""}
    assert request_id_var.get() == ""  # reset after each event
