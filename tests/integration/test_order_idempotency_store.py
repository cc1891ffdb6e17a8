"""meshkit.idempotency against a real Valkey: lease, renewal, expiry, replay, reuse, fail-open."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import valkey.asyncio as valkey_asyncio

from meshkit.idempotency import IdempotencyStore, KeyInProgress, KeyReused, Lease, Replay
from tests.harness import free_port
from tests.integration.order_helpers import ORDER_VALKEY_URL


@pytest.fixture
async def valkey_client(infra_endpoints):
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


def _store(client, lease_seconds: float = 5.0) -> IdempotencyStore:
    return IdempotencyStore(
        client, namespace=f"test-{secrets.token_hex(4)}", service="tests", lease_seconds=lease_seconds
    )


async def test_first_caller_leases_the_key_others_wait_and_then_get_the_stored_response(valkey_client):
    store = _store(valkey_client)
    lease = await store.begin("u1", "k", "hash-a")
    assert isinstance(lease, Lease) and not lease.degraded
    with pytest.raises(KeyInProgress):
        await store.begin("u1", "k", "hash-a")
    with pytest.raises(KeyReused):
        await store.begin("u1", "k", "hash-b")
    assert isinstance(await store.begin("u2", "k", "hash-b"), Lease)  # keys are per scope (user)

    await lease.complete(b"\x00response bytes", "hash-a")
    replay = await store.begin("u1", "k", "hash-a")
    assert replay == Replay(b"\x00response bytes")
    with pytest.raises(KeyReused):
        await store.begin("u1", "k", "hash-b")
    assert 86_000 < await valkey_client.ttl(store.key_name("u1", "k")) <= 86_400


async def test_a_crashed_lease_expires_and_a_renewed_one_does_not(valkey_client):
    store = _store(valkey_client, lease_seconds=0.3)
    crashed = await store.begin("u", "crash", "h")
    assert isinstance(crashed, Lease)
    await asyncio.sleep(0.5)
    taken = await store.begin("u", "crash", "h")  # the crashed attempt no longer blocks retries
    assert isinstance(taken, Lease)

    # the expired lease must not remove or complete the marker of the attempt that took over
    await crashed.release()
    with pytest.raises(KeyInProgress):
        await store.begin("u", "crash", "h")

    working = await store.begin("u", "long", "h")
    async with working.keep_alive():
        await asyncio.sleep(0.8)  # well past one lease period
        with pytest.raises(KeyInProgress):
            await store.begin("u", "long", "h")
    await working.release()
    assert isinstance(await store.begin("u", "long", "h"), Lease)


async def test_valkey_unreachable_degrades_to_a_no_op_lease():
    client = valkey_asyncio.from_url(
        f"valkey://127.0.0.1:{free_port()}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    try:
        store = _store(client)
        lease = await store.begin("u", "k", "h")
        assert isinstance(lease, Lease) and lease.degraded
        async with lease.keep_alive():
            pass
        await lease.complete(b"r", "h")
        await lease.release()
        await store.remember("u", "k", "h", b"r")
        assert isinstance(await store.begin("u", "k", "h"), Lease)
    finally:
        await client.aclose()


async def test_dropping_an_unreadable_leftover_never_drops_the_lease_that_replaced_it(valkey_client):
    store = _store(valkey_client)
    name = store.key_name("u", "leftover")
    await valkey_client.set(name, b"not json from an older format")
    assert isinstance(await store.begin("u", "leftover", "h"), Lease)  # dropped, then leased

    await valkey_client.set(name, b"not json either")
    real_get = valkey_client.get

    async def get_then_another_request_wins(key):
        raw = await real_get(key)
        # another request read the same leftover, dropped it and took the key meanwhile
        await valkey_client.delete(key)
        assert isinstance(await _store_like(store).begin("u", "leftover", "h"), Lease)
        return raw

    valkey_client.get = get_then_another_request_wins
    try:
        with pytest.raises(KeyInProgress):  # it used to delete the other's lease and take the key too
            await store.begin("u", "leftover", "h")
    finally:
        valkey_client.get = real_get
    await valkey_client.delete(name)


def _store_like(store: IdempotencyStore) -> IdempotencyStore:
    """Another process's store on the same namespace."""
    return IdempotencyStore(store._client, namespace=store._namespace, service="tests", lease_seconds=5)
