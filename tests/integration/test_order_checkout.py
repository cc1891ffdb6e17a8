"""Checkout against real inventory_svc, catalog_svc, PostgreSQL, Valkey and Kafka.

Happy path with events, replay and key reuse, stock shortage naming the lines, re-reservation of
expired lines, payment decline and timeout (stock restored, nothing charged), bad input.
"""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.common.v1 import address_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import cart_pb2, order_pb2

from tests.fault.scenario import metric
from tests.integration.order_helpers import (
    add,
    admin_orders,
    captures,
    carts,
    checkout,
    checkout_request,
    inventory,
    metadata_of,
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
    wait_for,
)

PAID = order_pb2.ORDER_STATUS_PAID
FAILED = order_pb2.ORDER_STATUS_FAILED
PENDING = order_pb2.ORDER_STATUS_PENDING
EXPIRED = cart_pb2.RESERVATION_STATE_EXPIRED
ACTIVE = cart_pb2.RESERVATION_STATE_ACTIVE


async def _error(call) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


async def _get_cart(mesh, user: str) -> cart_pb2.Cart:
    return (await carts(mesh, user).GetCart(cart_pb2.GetCartRequest())).cart


async def _expire_reservations_of(mesh, user: str, *, sweep: bool = True) -> None:
    """Make the user's reservations lapse in inventory now (as its expiry job would after 30 minutes);
    `sweep=False` leaves them past their expiry but not yet released, as between two sweeper runs."""
    sql(
        mesh.database_url,
        "UPDATE inventory.reservations SET expires_at = now() - interval '1 second'"
        " WHERE owner = %s AND status = 'active'",
        user,
    )
    if sweep:
        await inventory(mesh).ExpireReservations(inventory_pb2.ExpireReservationsRequest())


async def test_checkout_prices_from_catalog_commits_stock_charges_once_and_clears_cart(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    first = await new_product(mesh, price="10.50", stock=5)
    second = await new_product(mesh, price="3.25", stock=4)
    await add(mesh, user, first, 2)
    await add(mesh, user, second, 1)

    order = await checkout(mesh, user, new_key(), notes="leave at the door")

    assert order.status == PAID
    assert [(line.product_id, line.quantity) for line in order.lines] == [(first, 2), (second, 1)]
    assert order.lines[0].unit_price.units == 10 and order.lines[0].unit_price.nanos == 500_000_000
    assert (order.total.units, order.total.nanos) == (24, 250_000_000)
    assert order.payment.status == order_pb2.PAYMENT_STATUS_CAPTURED
    assert order.notes == "leave at the door" and order.shipping_address.city == "London"
    assert [(s, str(a)) for s, a, _ in captures(mesh.database_url, order.id)] == [("captured", "24.25")]
    for product, left in ((first, 3), (second, 3)):
        stock = await stock_of(mesh, product)
        assert (stock.quantity, stock.reserved, stock.available) == (left, 0, left)
    assert list((await _get_cart(mesh, user)).items) == []

    events = order_events(mesh, order.id, want=2)
    created = [e for e in events if e.WhichOneof("payload") == "order_created"]
    changed = [e for e in events if e.WhichOneof("payload") == "order_status_changed"]
    assert len({e.event_id for e in created}) == 1 and created[0].version == 1
    assert created[0].order_created.user_id == user
    assert [line.product_id for line in created[0].order_created.lines] == [first, second]
    assert len({e.event_id for e in changed}) == 1 and changed[0].version == 2
    assert changed[0].order_status_changed.from_status == PENDING
    assert changed[0].order_status_changed.to_status == PAID


async def test_same_key_replays_the_original_response_and_another_body_is_rejected(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=3)
    await add(mesh, user, product, 1)
    key = new_key()
    stub = orders(mesh, user)

    first_call = stub.Checkout(checkout_request(key))
    first = await first_call
    again_call = stub.Checkout(checkout_request(key, request_id="another-correlation-id"))
    again = await again_call
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(deterministic=True)
    # replays say so in metadata (the gateway's Idempotent-Replayed header); first answers do not
    assert ("x-idempotent-replayed", "true") not in list(await first_call.initial_metadata() or [])
    assert ("x-idempotent-replayed", "true") in list(await again_call.initial_metadata() or [])

    other_body = checkout_request(key, notes="different")
    error = await _error(stub.Checkout(other_body))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "IDEMPOTENCY_KEY_REUSED"
    assert len(orders_for_key(mesh.database_url, user, key)) == 1

    # keys belong to their user: someone else's identical key is a new checkout of their own cart
    stranger = user_id()
    await add(mesh, stranger, product, 1)
    theirs = await checkout(mesh, stranger, key)
    assert theirs.id != first.order.id and theirs.user_id == stranger


async def test_stock_gone_fails_the_order_naming_the_line_and_changes_no_stock(mesh):
    await start_order_mesh(mesh)
    user, rival = user_id(), user_id()
    scarce = await new_product(mesh, stock=3)
    plenty = await new_product(mesh, stock=10)
    await add(mesh, user, scarce, 2)
    await add(mesh, user, plenty, 1)
    reservation_id = sql(
        mesh.database_url,
        "SELECT reservation_id FROM orders.cart_reservations WHERE user_id = %s AND product_id = %s",
        user,
        scarce,
    )[0][0]

    await _expire_reservations_of(mesh, user)
    # the inventory event reaches order_svc's consumer, which marks the cart line lapsed
    lapsed = await wait_for(
        lambda: _state(mesh, reservation_id, "lapsed"),
        timeout=20,
    )
    assert lapsed, "reservation_expired event was not applied to the cart"
    states = {i.product_id: i.reservation_state for i in (await _get_cart(mesh, user)).items}
    assert states == {scarce: EXPIRED, plenty: EXPIRED}

    await add(mesh, rival, scarce, 3)  # the rival takes what the user's lapsed line had
    before = await stock_of(mesh, scarce)

    error = await _error(orders(mesh, user).Checkout(checkout_request(new_key())))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "INSUFFICIENT_STOCK"
    assert metadata_of(error)["product_ids"] == str(scarce)
    order_id = metadata_of(error)["order_id"]
    failed = (await orders(mesh, user).GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert failed.status == FAILED and list(failed.failure.product_ids) == [scarce]
    after = await stock_of(mesh, scarce)
    assert (after.quantity, after.reserved) == (before.quantity, before.reserved) == (3, 3)
    assert captures(mesh.database_url, order_id) == []
    # the line that could be held again stays held for the user's cart
    states = {i.product_id: i.reservation_state for i in (await _get_cart(mesh, user)).items}
    assert states == {scarce: EXPIRED, plenty: ACTIVE}


async def _state(mesh, reservation_id, wanted: str) -> bool:
    rows = sql(
        mesh.database_url,
        "SELECT state FROM orders.cart_reservations WHERE reservation_id = %s",
        reservation_id,
    )
    return bool(rows) and rows[0][0] == wanted


async def test_expired_lines_are_reserved_again_when_stock_allows(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=4)
    await add(mesh, user, product, 3)
    await _expire_reservations_of(mesh, user)
    assert (await stock_of(mesh, product)).reserved == 0

    order = await checkout(mesh, user, new_key())

    assert order.status == PAID
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (1, 0, 1)
    assert list((await _get_cart(mesh, user)).items) == []


async def test_lines_past_their_expiry_but_not_yet_swept_are_held_again_from_their_own_units(mesh):
    """Every unit is in the cart: the commit refuses the lapsed reservations, inventory expires them
    on the spot, and the re-reserve gets those same units back (it would find none if they stayed
    held until the sweeper's next run)."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=3)
    await add(mesh, user, product, 3)
    await _expire_reservations_of(mesh, user, sweep=False)

    order = await checkout(mesh, user, new_key())

    assert order.status == PAID
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (0, 0, 0)
    [(expired, committed)] = sql(
        mesh.database_url,
        "SELECT count(*) FILTER (WHERE status = 'expired'), count(*) FILTER (WHERE status = 'committed')"
        " FROM inventory.reservations WHERE owner = %s",
        user,
    )
    assert (expired, committed) == (1, 1)


async def test_a_partial_release_the_cart_did_not_record_is_held_again_not_sold_short(mesh):
    """Lowering a line releases units in inventory first; when that answer is lost (the cart's
    transaction rolls back), the cart still records the reservation's old quantity. The checkout
    sold the reservation by id: 2 units left stock for an order of 5, and 3 stayed for sale."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=10)
    await add(mesh, user, product, 5)
    [(reservation_id, recorded)] = sql(
        mesh.database_url,
        "SELECT reservation_id::text, quantity FROM orders.cart_reservations WHERE user_id = %s",
        user,
    )
    assert recorded == 5
    await inventory(mesh).ReleaseReservation(
        inventory_pb2.ReleaseReservationRequest(reservation_id=reservation_id, quantity=3)
    )

    order = await checkout(mesh, user, new_key())

    assert order.status == PAID and [line.quantity for line in order.lines] == [5]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    [(sold,)] = sql(
        mesh.database_url,
        "SELECT sum(quantity) FROM inventory.reservations WHERE order_id = %s AND status = 'committed'",
        order.id,
    )
    assert sold == 5


async def test_the_final_move_records_committed_stock_and_the_payment_attempt(mesh):
    """No write of its own before the provider call: checkout_complete records both, in the
    statement that moves the order to PAID (so they carry its updated_at)."""
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 1)

    order = await checkout(mesh, user, new_key())

    assert order.status == PAID
    [(committed, attempted, updated)] = sql(
        mesh.database_url,
        "SELECT stock_committed_at, payment_attempted_at, updated_at FROM orders.orders WHERE id = %s",
        order.id,
    )
    assert committed is not None and committed == attempted == updated


async def test_titles_prices_and_expiries_reach_the_database_exactly_as_sent(mesh):
    """The stored functions get their arrays as literals built by order_svc: quotes, backslashes,
    commas, braces, NULL-like words and non-ASCII titles, cents, and microsecond expiries survive."""
    await start_order_mesh(mesh)
    user = user_id()
    titles = ['Quote " and \\ backslash, {braces}', "NULL", "Crème brûlée, 2 pièces 🍮"]
    products = [await new_product(mesh, price=f"{n}.07", title=t) for n, t in enumerate(titles, 1)]
    for product in products:
        await add(mesh, user, product, 2)
    held = sql(
        mesh.database_url,
        "SELECT c.expires_at = r.expires_at FROM orders.cart_reservations c"
        " JOIN inventory.reservations r ON r.id = c.reservation_id WHERE c.user_id = %s",
        user,
    )
    assert held == [(True,)] * 3

    order = await checkout(mesh, user, new_key())

    stored = (await orders(mesh, user).GetOrder(order_pb2.GetOrderRequest(order_id=order.id))).order
    assert [(line.title, line.unit_price.units, line.unit_price.nanos) for line in stored.lines] == [
        (t, n, 70_000_000) for n, t in enumerate(titles, 1)
    ]
    assert (stored.total.units, stored.total.nanos) == (12, 420_000_000)


async def test_payment_declined_fails_the_order_restocks_and_keeps_the_cart(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)

    error = await _error(orders(mesh, user).Checkout(checkout_request(new_key(), "tok_decline")))

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "PAYMENT_DECLINED"
    assert metadata_of(error)["decline_code"] == "card_declined"
    order_id = metadata_of(error)["order_id"]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    assert [s for s, _, _ in captures(mesh.database_url, order_id)] == ["declined"]
    order = (await orders(mesh, user).GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert order.status == FAILED and order.payment.status == order_pb2.PAYMENT_STATUS_DECLINED
    [(committed, attempted)] = sql(
        mesh.database_url,
        "SELECT stock_committed_at, payment_attempted_at FROM orders.orders WHERE id = %s",
        order_id,
    )
    assert committed is not None and attempted is not None  # recorded before the restock
    # the lines stay in the cart, no longer held; a new attempt with another card holds them again
    assert [(i.product_id, i.reservation_state) for i in (await _get_cart(mesh, user)).items] == [
        (product, EXPIRED)
    ]
    retried = await checkout(mesh, user, new_key(), "tok_approve")
    assert retried.status == PAID
    assert (await stock_of(mesh, product)).quantity == 3


async def test_payment_timeout_leaves_order_pending_until_recovery_restores_stock(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    await add(mesh, user, product, 2)
    key = new_key()

    error = await _error(orders(mesh, user).Checkout(checkout_request(key, "tok_timeout")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and reason_of(error) == "PAYMENT_UNAVAILABLE"
    order_id = metadata_of(error)["order_id"]
    pending = (await orders(mesh, user).GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert pending.status == PENDING
    assert (await stock_of(mesh, product)).quantity == 3  # held for the order while the outcome is open
    # while it is open the cart cannot be checked out again, not even with another key (and card)
    second = await _error(orders(mesh, user).Checkout(checkout_request(new_key(), "tok_approve")))
    assert (second.code(), reason_of(second)) == (grpc.StatusCode.ABORTED, "ABORTED"), second.details()

    admin = admin_orders(mesh)
    recovered = await admin_recover(mesh)
    assert order_id in recovered.compensated_order_ids
    # the pass reported how stale the oldest order it left unfinished is (other tests leave some)
    [(oldest,)] = sql(
        mesh.database_url,
        "SELECT coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 FROM orders.orders"
        " WHERE status = 'pending' OR transition_to IS NOT NULL",
    )
    reported = await metric(mesh.metrics_url("order_svc"), "orders_unfinished_oldest_seconds")
    assert abs(reported - oldest) < 10, (reported, oldest)

    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved, stock.available) == (5, 0, 5)
    assert [s for s, _, _ in captures(mesh.database_url, order_id)] == ["voided"]
    failed = (await admin.GetOrder(order_pb2.GetOrderRequest(order_id=order_id))).order
    assert failed.status == FAILED
    replay = await _error(orders(mesh, user).Checkout(checkout_request(key, "tok_timeout")))
    assert reason_of(replay) == "CHECKOUT_ABANDONED" and metadata_of(replay)["order_id"] == order_id
    # recovering again finds nothing more to do for it, and the stock stays restored once
    again = await admin_recover(mesh)
    assert order_id not in again.compensated_order_ids
    assert (await stock_of(mesh, product)).quantity == 5


async def admin_recover(mesh) -> order_pb2.RecoverOrdersResponse:
    return await admin_orders(mesh).RecoverOrders(
        order_pb2.RecoverOrdersRequest(min_age=duration_pb2.Duration(seconds=0))
    )


async def test_bad_input_gets_clear_errors_and_changes_nothing(mesh):
    await start_order_mesh(mesh)
    user = user_id()
    product = await new_product(mesh, stock=5)
    stub, cart = orders(mesh, user), carts(mesh, user)

    empty = await _error(stub.Checkout(checkout_request(new_key())))
    assert (empty.code(), reason_of(empty)) == (grpc.StatusCode.FAILED_PRECONDITION, "CART_EMPTY")

    for quantity in (0, -1, 101):
        error = await _error(
            cart.AddCartItem(cart_pb2.AddCartItemRequest(product_id=product, quantity=quantity))
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, quantity
    unknown = await _error(cart.AddCartItem(cart_pb2.AddCartItemRequest(product_id=987_654_321, quantity=1)))
    assert (unknown.code(), reason_of(unknown)) == (grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND")
    assert list((await _get_cart(mesh, user)).items) == []

    await add(mesh, user, product, 2)
    missing = await _error(stub.Checkout(checkout_request("")))
    assert (missing.code(), reason_of(missing)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "IDEMPOTENCY_KEY_MISSING",
    )
    too_long = await _error(stub.Checkout(checkout_request("k" * 256)))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_city = address_pb2.Address(name="A", line1="1 Road", postal_code="1000", country_code="BE")
    bad_address = await _error(
        stub.Checkout(order_pb2.CheckoutRequest(idempotency_key=new_key(), shipping_address=no_city))
    )
    assert bad_address.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shipping_address.city" in bad_address.details()
    no_address = await _error(stub.Checkout(order_pb2.CheckoutRequest(idempotency_key=new_key())))
    assert no_address.code() == grpc.StatusCode.INVALID_ARGUMENT

    # a product withdrawn from sale after it was added: named, and no order is created
    catalog = catalog_pb2_grpc.CatalogServiceStub(mesh.channel("catalog_svc", "ops-admin", ("admin",)))
    await catalog.DeleteProduct(catalog_pb2.DeleteProductRequest(product_id=product))
    inactive = await _error(stub.Checkout(checkout_request(new_key())))
    assert (inactive.code(), reason_of(inactive)) == (grpc.StatusCode.FAILED_PRECONDITION, "PRODUCT_INACTIVE")
    assert str(product) in metadata_of(inactive)["product_id"]

    assert sql(mesh.database_url, "SELECT count(*) FROM orders.orders WHERE user_id = %s", user) == [(0,)]
    stock = await stock_of(mesh, product)
    assert (stock.quantity, stock.reserved) == (5, 2)  # only the cart's own reservation
