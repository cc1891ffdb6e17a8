"""One cart under racing requests (served concurrently, each on its own database connection):
checkouts with different idempotency keys and cart adds at the same time. Whatever interleaving the servers pick, every unit added is either
sold once (in a paid order charged once) or still held by the cart, and nothing else is held."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal

import grpc
from shop.order.v1 import cart_pb2, order_pb2

from tests.integration.order_helpers import (
    captures,
    carts,
    checkout_request,
    new_key,
    new_product,
    orders,
    reason_of,
    sql,
    start_order_mesh,
    stock_of,
    user_id,
)

STOCK = 60
# what a request racing another change of the same cart may be told: retry later, or the cart is empty
ALLOWED_REFUSALS = {
    ("checkout", grpc.StatusCode.ABORTED, "ABORTED"),  # another checkout of this cart is unfinished
    ("checkout", grpc.StatusCode.FAILED_PRECONDITION, "CART_EMPTY"),  # an earlier one sold everything
    ("add", grpc.StatusCode.ABORTED, "CHECKOUT_IN_PROGRESS"),  # more of a product being sold
}
RACING_CHANGE = {
    "another checkout of this cart is in progress; retry later",
    "the cart kept changing during checkout; retry",
}


async def test_racing_checkouts_and_adds_of_one_cart_sell_each_unit_once_and_charge_each_order_once(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    products = [await new_product(mesh, stock=STOCK) for _ in range(2)]
    cart_stub, order_stub = carts(mesh, user), orders(mesh, user)
    await cart_stub.AddCartItem(cart_pb2.AddCartItemRequest(product_id=products[0], quantity=2))
    added = Counter({products[0]: 2})
    paid: list[order_pb2.Order] = []
    refusals: list[tuple[str, grpc.StatusCode, str, str]] = []

    async def checkout_once() -> None:
        try:
            order = (await order_stub.Checkout(checkout_request(new_key()))).order
        except grpc.aio.AioRpcError as error:
            refusals.append(("checkout", error.code(), reason_of(error), error.details() or ""))
            return
        assert order.status == order_pb2.ORDER_STATUS_PAID, order
        paid.append(order)

    async def add_once(product_id: int) -> None:
        try:
            await cart_stub.AddCartItem(cart_pb2.AddCartItemRequest(product_id=product_id, quantity=1))
        except grpc.aio.AioRpcError as error:
            refusals.append(("add", error.code(), reason_of(error), error.details() or ""))
            return
        added[product_id] += 1

    for round_ in range(3):
        calls = [checkout_once() for _ in range(4)] + [add_once(p) for p in products for _ in range(4)]
        random.Random(round_).shuffle(calls)
        await asyncio.gather(*calls)

    for what, code, reason, details in refusals:
        assert (what, code, reason) in ALLOWED_REFUSALS, (what, code, reason, details)
        if reason == "ABORTED":  # not the saga giving up ("stock kept lapsing"): stock is ample
            assert details in RACING_CHANGE, details
    assert paid, f"no checkout succeeded: {refusals}"
    assert len({o.id for o in paid}) == len(paid)

    sold: Counter[int] = Counter()
    for order in paid:
        for line in order.lines:
            sold[line.product_id] += line.quantity
        total = Decimal(order.total.units) + Decimal(order.total.nanos) / 10**9
        assert [(s, a) for s, a, _ in captures(mesh.database_url, order.id)] == [("captured", total)]
    cart = (await cart_stub.GetCart(cart_pb2.GetCartRequest())).cart
    in_cart = Counter({item.product_id: item.quantity for item in cart.items})
    assert {i.reservation_state for i in cart.items} <= {cart_pb2.RESERVATION_STATE_ACTIVE}
    for product in products:
        stock = await stock_of(mesh, product)
        assert sold[product] + in_cart[product] == added[product], (product, sold, in_cart, added)
        assert (stock.quantity, stock.reserved) == (STOCK - sold[product], in_cart[product])
    # no order left unfinished, and every order that is not paid charged nothing
    rows = sql(mesh.database_url, "SELECT id::TEXT, status FROM orders.orders WHERE user_id = %s", user)
    assert {status for _, status in rows} <= {"paid", "failed"}
    assert {i for i, status in rows if status == "paid"} == {o.id for o in paid}
    for order_id, status in rows:
        if status == "failed":
            assert [s for s, _, _ in captures(mesh.database_url, order_id)] in ([], ["voided"], ["declined"])
