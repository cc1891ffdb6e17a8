"""Exactly-once checkout under 100 concurrent requests with one key: with Valkey, with Valkey flushed
in the middle, and with Valkey unreachable (only the PostgreSQL layer left)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from decimal import Decimal

import grpc
import httpx
import pytest
import valkey.asyncio as valkey_asyncio
from shop.order.v1 import order_pb2

from tests.harness import free_port
from tests.integration.order_helpers import (
    ORDER_VALKEY_URL,
    add,
    captures,
    checkout_request,
    flush_order_valkey,
    new_key,
    new_product,
    order_events,
    orders,
    orders_for_key,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)


async def _hammer(
    mesh, user: str, key: str, count: int
) -> tuple[list[order_pb2.Order], list[grpc.aio.AioRpcError]]:
    stub = orders(mesh, user)

    async def one() -> order_pb2.Order | grpc.aio.AioRpcError:
        try:
            return (await stub.Checkout(checkout_request(key))).order
        except grpc.aio.AioRpcError as error:
            return error

    results = await asyncio.gather(*(one() for _ in range(count)))
    return (
        [r for r in results if isinstance(r, order_pb2.Order)],
        [r for r in results if isinstance(r, grpc.aio.AioRpcError)],
    )


async def _assert_exactly_once(
    mesh, user: str, key: str, product: int, results, *, quantity: int, stock: int
) -> None:
    paid, errors = results
    assert paid, "no caller got the order"
    assert {o.id for o in paid} == {paid[0].id}, "callers got different orders"
    assert {o.status for o in paid} == {order_pb2.ORDER_STATUS_PAID}
    for error in errors:
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.ABORTED, "IDEMPOTENCY_KEY_IN_PROGRESS"), (
            error.code(),
            error.details(),
        )
    order_id = paid[0].id
    assert [str(row[0]) for row in orders_for_key(mesh.database_url, user, key)] == [order_id]
    charges = captures(mesh.database_url, order_id)
    assert [(status, amount) for status, amount, _ in charges] == [("captured", Decimal("19.99") * quantity)]
    current = await stock_of(mesh, product)
    assert (current.quantity, current.reserved) == (stock - quantity, 0)
    # a late retry still gets the same order
    late = (await orders(mesh, user).Checkout(checkout_request(key))).order
    assert late.id == order_id
    events = order_events(mesh, order_id, want=2)
    created = {e.event_id for e in events if e.WhichOneof("payload") == "order_created"}
    assert len(created) == 1, f"order.created event ids: {created}"


async def test_100_concurrent_checkouts_with_one_key_make_one_order_one_charge_one_event(mesh):
    await start_order_mesh(mesh)
    user, key = user_id(), new_key()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 1)

    results = await _hammer(mesh, user, key, 100)

    await _assert_exactly_once(mesh, user, key, product, results, quantity=1, stock=5)


async def test_valkey_flushed_mid_stream_still_exactly_once(mesh):
    await start_order_mesh(mesh)
    user, key = user_id(), new_key()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 1)

    async def flush_soon() -> None:
        await asyncio.sleep(0.05)
        await flush_order_valkey()

    first, _ = await asyncio.gather(_hammer(mesh, user, key, 50), flush_soon())
    await flush_order_valkey()  # the completed entry is gone too: only PostgreSQL remembers the key
    replayed = (await orders(mesh, user).Checkout(checkout_request(key))).order
    await flush_order_valkey()
    second = await _hammer(mesh, user, key, 50)  # racing to re-create the Valkey entry
    results = (first[0] + [replayed] + second[0], first[1] + second[1])

    await _assert_exactly_once(mesh, user, key, product, results, quantity=1, stock=5)


async def test_valkey_unreachable_still_exactly_once(mesh):
    closed_port = free_port()  # nothing listens there: every Valkey call is refused
    await start_order_mesh(mesh, {"SHOPMESH_VALKEY_URL": f"valkey://127.0.0.1:{closed_port}/0"})
    try:
        user, key = user_id(), new_key()
        product = await new_product(mesh, stock=5)
        await add(mesh, user, product, 1)

        results = await _hammer(mesh, user, key, 100)

        await _assert_exactly_once(mesh, user, key, product, results, quantity=1, stock=5)
        # and Valkey really was out of the picture: every request fell back to the database layer
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(mesh.metrics_url("order_svc"))).text
        degraded = re.search(
            r'idempotency_store_degraded_total\{operation="begin",service="order_svc"\} (\S+)', text
        )
        assert degraded and float(degraded.group(1)) >= 100
    finally:
        await start_order_mesh(mesh)


async def test_a_checkout_that_outlives_its_lease_keeps_both_leases_renewed(mesh):
    # a 1.5 s lease and a payment that answers only after 4 s: both the Valkey marker and the order
    # row's lease must be renewed while it waits, or a retry could take the order over mid-payment
    await start_order_mesh(
        mesh, {"SHOPMESH_IDEMPOTENCY_LEASE_SECONDS": "1.5", "SHOPMESH_PAYMENT_TIMEOUT_SECONDS": "4"}
    )
    try:
        user, key = user_id(), new_key()
        product = await new_product(mesh, stock=5)
        await add(mesh, user, product, 1)
        marker = f"idem:{mesh.env.get('SHOPMESH_CACHE_KEY_PREFIX', '')}order-checkout:{user}:{key}"
        client = valkey_asyncio.from_url(ORDER_VALKEY_URL)
        stub = orders(mesh, user)

        async def pay_slowly() -> order_pb2.CheckoutResponse:
            return await stub.Checkout(checkout_request(key, "tok_timeout"), timeout=60)

        running = asyncio.create_task(pay_slowly())
        try:
            leases: set = set()
            renewed_marker = False
            last_ttl = None
            while len(leases) < 3 or not renewed_marker:  # the order row's lease moved on twice
                assert not running.done(), "the checkout ended before both leases were seen renewed"
                rows = sql(
                    mesh.database_url,
                    "SELECT lease_until FROM orders.orders WHERE user_id = %s AND idempotency_key = %s"
                    " AND lease_owner IS NOT NULL",
                    user,
                    key,
                )
                leases.update(row[0] for row in rows)
                ttl = await client.pttl(marker)
                renewed_marker = renewed_marker or (last_ttl is not None and 0 < last_ttl < ttl)
                last_ttl = ttl if ttl > 0 else last_ttl
                await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as caught:  # held: a retry is told to wait
                await orders(mesh, user).Checkout(checkout_request(key, "tok_timeout"))
            assert reason_of(caught.value) == "IDEMPOTENCY_KEY_IN_PROGRESS"
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await running
            await client.aclose()
        error = running.exception()
        assert reason_of(error) == "PAYMENT_UNAVAILABLE", (error.code(), error.details())
    finally:
        await start_order_mesh(mesh)
