"""order_svc's cart cache against the real Valkey: the invalidation every cart write pays goes over
meshkit's pipelined connection, does what the valkey-py script did, and is bounded by a timeout."""

from __future__ import annotations

import asyncio
import secrets

import valkey.asyncio as valkey_asyncio

from order_svc.cart_cache import CartCache
from tests.integration.order_helpers import ORDER_VALKEY_URL


async def test_invalidation_bumps_the_generation_and_drops_the_entry_without_valkey_py():
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL)
    prefix = f"cart-cache-test-{secrets.token_hex(4)}:"
    cache = CartCache(client, ttl_seconds=60, key_prefix=prefix)

    async def refuse(*args, **kwargs):
        raise AssertionError("the invalidation went through valkey-py's script call")

    cache._invalidate = refuse  # the pipelined connection must carry it
    try:
        _, generation = await cache.get("ada")
        await cache.put("ada", generation, b"cart-bytes")
        assert (await cache.get("ada"))[0] == b"cart-bytes"

        await cache.invalidate("ada")

        entry, after = await cache.get("ada")
        assert entry is None and int(after) == int(generation) + 1
        assert await client.exists(f"{prefix}cart:ada") == 0
        assert 0 < await client.ttl(f"{prefix}cartgen:ada") <= 120  # twice the entries' TTL
        await cache.put("ada", generation, b"stale")  # a reader that raced the write
        assert (await cache.get("ada"))[0] is None
    finally:
        await cache.close()
        await client.delete(f"{prefix}cart:ada", f"{prefix}cartgen:ada")
        await client.aclose()


async def test_invalidation_returns_when_valkey_accepts_but_never_answers():
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = valkey_asyncio.from_url(f"valkey://127.0.0.1:{port}/0")
    cache = CartCache(client, ttl_seconds=60, timeout_seconds=0.2)
    try:
        # without its own timeout the call would wait for a reply that never comes (the guard below
        # only keeps a broken build from hanging the suite)
        await asyncio.wait_for(cache.invalidate("ada"), timeout=60)
    finally:
        done.set()
        await cache.close()
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_a_lost_invalidation_is_retried_and_this_process_serves_no_cached_cart_meanwhile():
    """Valkey did not take an invalidation (a partition, a timeout) but kept the entry: it carried
    the current generation, so every replica served the cart as it was before the write until the
    TTL ran out. Now this process reads that cart from PostgreSQL until a retry lands."""
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL)
    prefix = f"cart-cache-test-{secrets.token_hex(4)}:"
    cache = CartCache(client, ttl_seconds=60, key_prefix=prefix, retry_seconds=0.05)
    assert cache._pipelined is not None
    real = cache._pipelined.command
    lost = {"left": 3}  # the write's own call and the first two retries

    async def flaky(*args):
        if lost["left"]:
            lost["left"] -= 1
            raise ConnectionError("valkey connection lost")
        return await real(*args)

    cache._pipelined.command = flaky
    try:
        _, generation = await cache.get("ada")
        await cache.put("ada", generation, b"cart before the write")
        await cache.invalidate("ada")
        assert await client.get(f"{prefix}cart:ada") is not None  # Valkey still holds it
        assert await cache.get("ada") == (None, b"")  # a miss, and nothing to tag a put with
        await cache.put("ada", b"", b"what PostgreSQL said")  # so the reader caches nothing
        for _ in range(200):
            if not cache._unconfirmed:
                break
            await asyncio.sleep(0.02)
        assert not cache._unconfirmed and lost["left"] == 0
        entry, after = await cache.get("ada")
        assert entry is None and int(after) == int(generation) + 1  # no replica serves the old entry
    finally:
        await cache.close()
        await client.delete(f"{prefix}cart:ada", f"{prefix}cartgen:ada")
        await client.aclose()
