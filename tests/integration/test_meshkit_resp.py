"""meshkit.resp against the real Valkey: replies reach their own callers, failures fail fast and
recover; and catalog's cache entries written before the encoded field existed get it back."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
from decimal import Decimal

import pytest
import valkey.asyncio as valkey_asyncio

from catalog_svc.cache import GuardedValkey, ProductCache
from catalog_svc.convert import product_wire
from catalog_svc.model import Product
from meshkit.circuit import CircuitBreaker
from meshkit.resp import PipelinedReader
from tests.harness import free_port


@pytest.fixture
async def client(infra_endpoints):
    client = valkey_asyncio.from_url(infra_endpoints.valkey_url, socket_connect_timeout=1.0)
    yield client
    await client.aclose()


@pytest.fixture
async def reader(client):
    reader = PipelinedReader.for_client(client)
    assert reader is not None
    yield reader
    reader.close()


async def test_concurrent_callers_each_get_their_own_reply(client, reader):
    prefix = f"resp-test-{secrets.token_hex(4)}"
    keys = [f"{prefix}:{i}" for i in range(300)]
    try:
        for i, key in enumerate(keys):
            if i % 3:  # every third key stays absent
                await client.hset(key, mapping={"p": f"value-{i}".encode(), "a": i % 2})
        replies = await asyncio.gather(*(reader.command("HMGET", key, "p", "a") for key in keys))
        expected = await asyncio.gather(*(client.hmget(key, ["p", "a"]) for key in keys))
        assert replies == expected
        assert replies[0] == [None, None] and replies[1] == [b"value-1", b"1"]
        with pytest.raises(Exception, match="WRONGTYPE"):  # an error reply fails only its caller
            await reader.command("LPUSH", keys[1], "x")
        assert await reader.command("HGET", keys[2], "p") == b"value-2"
    finally:
        await client.delete(*keys)


async def test_a_pipeline_answers_in_order_and_an_error_fails_only_that_call(client, reader):
    prefix = f"resp-test-{secrets.token_hex(4)}"
    try:
        await client.hset(f"{prefix}:1", mapping={"d": "one"})
        await client.set(f"{prefix}:s", "plain")
        replies = await reader.pipeline([("HGET", f"{prefix}:{i}", "d") for i in (1, 2, 1)])
        assert replies == [b"one", None, b"one"]
        with pytest.raises(Exception, match="WRONGTYPE"):
            await reader.pipeline([("HGET", f"{prefix}:1", "d"), ("HGET", f"{prefix}:s", "d"), ("PING",)])
        assert await reader.pipeline([("ECHO", "next")]) == [b"next"]
    finally:
        await client.delete(f"{prefix}:1", f"{prefix}:s")


async def test_a_caller_that_gave_up_does_not_shift_the_replies_of_the_next(reader):
    key = f"resp-test-{secrets.token_hex(4)}"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await reader.command("BLPOP", key, "0.3")  # the server answers nil after 0.3 s
    assert await reader.command("ECHO", "mine") == b"mine"


async def test_a_killed_connection_fails_its_callers_and_the_next_call_reconnects(client, reader):
    first_id = await reader.command("CLIENT", "ID")
    waiting = asyncio.create_task(reader.command("BLPOP", f"resp-test-{secrets.token_hex(4)}", "5"))
    await asyncio.sleep(0.05)
    await client.client_kill_filter(_id=first_id)
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(2):
            await waiting
    assert await reader.command("PING") == b"PONG"
    assert await reader.command("CLIENT", "ID") != first_id


async def test_a_server_that_stopped_answering_is_dropped_after_the_stall_time(infra_endpoints):
    client = valkey_asyncio.from_url(infra_endpoints.valkey_url)
    reader = PipelinedReader.for_client(client)
    assert reader is not None
    reader._stall = 0.2
    key = f"resp-test-{secrets.token_hex(4)}"
    try:
        first_id = await reader.command("CLIENT", "ID")
        stuck = asyncio.create_task(reader.command("BLPOP", key, "0"))  # never answered
        await asyncio.sleep(0.3)
        assert await reader.command("ECHO", "after") == b"after"
        assert await reader.command("CLIENT", "ID") != first_id
        with pytest.raises(ConnectionError):
            await stuck
    finally:
        reader.close()
        await client.aclose()


async def test_an_unreachable_server_is_an_os_error_not_a_hang():
    reader = PipelinedReader(host="127.0.0.1", port=free_port(), connect_timeout=0.5)
    with pytest.raises(OSError):
        await reader.command("PING")


async def test_an_entry_without_the_encoded_product_is_completed_at_the_same_version(client):
    cache = ProductCache(
        GuardedValkey(client, timeout=2, breaker=CircuitBreaker("valkey-test-resp")),
        ttl_seconds=60,
        prefix=f"resp-test-{secrets.token_hex(4)}:",
    )
    now = dt.datetime.now(dt.UTC)
    product = Product(
        7, 1, "Lamp", "lamp", "", None, "", Decimal("9.50"), Decimal("4.5"), 2, True, "", (), 3, now, now
    )
    try:
        await client.hset(cache.key(7), mapping={"v": 3, "d": "{}"})  # as written before `p` existed
        assert await cache.get_encoded(7) is None  # a miss, not an error
        await cache.put_many([product])
        assert await cache.get_encoded(7) == (product_wire(product), True)
        await cache.put_many([dataclasses.replace(product, title="stale copy")])  # same version
        assert (await cache.get_many([7]))[7].title == "Lamp"  # now complete: not replaced
    finally:
        await client.delete(cache.key(7))
