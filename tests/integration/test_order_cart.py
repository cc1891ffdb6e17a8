"""The cart over gRPC: reservations follow every change, expiry shows, the Valkey cache is invalidated
on writes, and the cart keeps working from PostgreSQL when Valkey is unreachable."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import valkey.asyncio as valkey_asyncio
from google.protobuf import duration_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import cart_pb2

from order_svc.cart import add_request_id
from tests.harness import free_port
from tests.integration.order_helpers import (
    ORDER_VALKEY_URL,
    add,
    carts,
    inventory,
    metadata_of,
    new_product,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)

ACTIVE = cart_pb2.RESERVATION_STATE_ACTIVE
EXPIRED = cart_pb2.RESERVATION_STATE_EXPIRED


async def _cart(mesh, user: str) -> cart_pb2.Cart:
    return (await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart


async def _reserved(mesh, product: int) -> int:
    return (await stock_of(mesh, product)).reserved


async def _fails(call, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), reason_of(caught.value)) == (code, reason), caught.value.details()
    return caught.value


async def test_every_cart_change_reserves_or_releases_exactly_the_difference(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, price="4.00", stock=5, title="Cart test mug")
    other = await new_product(mesh, stock=5)
    stub = carts(mesh, user)

    item = await add(mesh, user, product, 2)
    assert (item.quantity, item.reservation_state, item.title) == (2, ACTIVE, "Cart test mug")
    assert item.expires_at.seconds > time.time() + 25 * 60
    assert await _reserved(mesh, product) == 2
    assert (await add(mesh, user, product, 1)).quantity == 3
    assert await _reserved(mesh, product) == 3

    short = await _fails(
        stub.AddCartItem(cart_pb2.AddCartItemRequest(product_id=product, quantity=3)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_STOCK",
    )
    assert metadata_of(short)["available"] == "2"
    assert [i.quantity for i in (await _cart(mesh, user)).items] == [3]  # nothing changed

    down = await stub.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=1))
    assert down.item.quantity == 1 and await _reserved(mesh, product) == 1
    up = await stub.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=4))
    assert up.item.quantity == 4 and await _reserved(mesh, product) == 4

    await add(mesh, user, other, 2)
    cart = await _cart(mesh, user)
    assert [(i.product_id, i.quantity) for i in cart.items] == [(product, 4), (other, 2)]
    assert (cart.subtotal.units, cart.subtotal.nanos) == (55, 980_000_000)  # 4 x 4.00 + 2 x 19.99

    removed = await stub.RemoveCartItem(cart_pb2.RemoveCartItemRequest(product_id=product))
    assert [i.product_id for i in removed.cart.items] == [other]
    assert await _reserved(mesh, product) == 0
    await _fails(
        stub.RemoveCartItem(cart_pb2.RemoveCartItemRequest(product_id=product)),
        grpc.StatusCode.NOT_FOUND,
        "CART_ITEM_NOT_FOUND",
    )
    await _fails(
        stub.UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=1)),
        grpc.StatusCode.NOT_FOUND,
        "CART_ITEM_NOT_FOUND",
    )
    cleared = await stub.ClearCart(cart_pb2.ClearCartRequest())
    assert list(cleared.cart.items) == [] and await _reserved(mesh, other) == 0


async def test_a_retried_add_with_the_same_request_id_is_applied_once(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    request = cart_pb2.AddCartItemRequest(product_id=product, quantity=2, request_id="9b1c3f4e-add-once")
    stub = carts(mesh, user)

    results = await asyncio.gather(
        stub.AddCartItem(request), stub.AddCartItem(request), stub.AddCartItem(request)
    )

    assert {r.item.quantity for r in results} == {2}
    assert await _reserved(mesh, product) == 2


async def test_reads_are_cached_and_every_write_invalidates(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 1)
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL)
    cart_key = f"{mesh.env.get('SHOPMESH_CACHE_KEY_PREFIX', '')}cart:{user}"
    try:
        first = await _cart(mesh, user)
        assert await client.exists(cart_key) == 1
        assert await _cart(mesh, user) == first

        await carts(mesh, user).UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=3))
        assert await client.exists(cart_key) == 0
        assert [i.quantity for i in (await _cart(mesh, user)).items] == [3]
    finally:
        await client.aclose()


async def test_lapsed_lines_show_expired_and_a_change_reserves_them_again(mesh):
    await start_order_mesh(mesh, {"SHOPMESH_CART_RESERVATION_TTL_SECONDS": "2"})
    try:
        user = user_id()
        product = await new_product(mesh, stock=5)
        await add(mesh, user, product, 2)
        assert [i.reservation_state for i in (await _cart(mesh, user)).items] == [ACTIVE]  # now cached

        await asyncio.sleep(2.5)
        # checked at read time: past expires_at the line is expired, cached or not, event or not
        assert [i.reservation_state for i in (await _cart(mesh, user)).items] == [EXPIRED]

        again = await carts(mesh, user).UpdateCartItem(
            cart_pb2.UpdateCartItemRequest(product_id=product, quantity=3)
        )
        assert (again.item.quantity, again.item.reservation_state) == (3, ACTIVE)
        assert await _reserved(mesh, product) == 3
    finally:
        await start_order_mesh(mesh)


async def test_cart_is_served_from_postgres_when_valkey_is_unreachable(mesh):
    await start_order_mesh(mesh, {"SHOPMESH_VALKEY_URL": f"valkey://127.0.0.1:{free_port()}/0"})
    try:
        user = user_id()
        product = await new_product(mesh, stock=5)
        await add(mesh, user, product, 2)
        await carts(mesh, user).UpdateCartItem(cart_pb2.UpdateCartItemRequest(product_id=product, quantity=1))
        cart = await _cart(mesh, user)
        assert [(i.product_id, i.quantity, i.reservation_state) for i in cart.items] == [(product, 1, ACTIVE)]
        assert await _reserved(mesh, product) == 1
    finally:
        await start_order_mesh(mesh)


async def test_an_add_retried_after_its_answer_was_lost_reuses_its_reservation(mesh):
    # issue 11: inventory committed the first attempt's reservation but the answer never came back
    # (inventory killed, or the gateway's deadline), so order_svc rolled back; another add of the same
    # user committed before the retry. The retry must find that reservation, not hold the units again.
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=3)
    request_id = "5d0c1e2a-lost-answer"
    lost = await inventory(mesh).ReserveStock(
        inventory_pb2.ReserveStockRequest(
            owner=user,
            product_id=product,
            quantity=2,
            ttl=duration_pb2.Duration(seconds=1800),
            request_id=add_request_id(user, product, 2, request_id=request_id, version=0, total=2),
        )
    )
    assert await _reserved(mesh, product) == 2
    assert (await add(mesh, user, product, 1)).quantity == 1  # moves the cart version

    retried = await carts(mesh, user).AddCartItem(
        cart_pb2.AddCartItemRequest(product_id=product, quantity=2, request_id=request_id)
    )

    assert retried.item.quantity == 3
    assert await _reserved(mesh, product) == 3  # the lost reservation was taken up, not doubled
    on_cart = {
        str(r[0]): r[1]
        for r in sql(
            mesh.database_url,
            "SELECT reservation_id, quantity FROM orders.cart_reservations WHERE user_id = %s",
            user,
        )
    }
    assert {r.id for r in lost.reservations} <= set(on_cart)
    active = sql(
        mesh.database_url,
        "SELECT id::text, quantity FROM inventory.reservations WHERE owner = %s AND status = 'active'",
        user,
    )
    assert dict(active) == on_cart  # no reservation of this user is active outside the cart
