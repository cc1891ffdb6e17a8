"""checkout_create and checkout_complete (the stored functions of checkout steps 1 and 4) against real
PostgreSQL, every result they can give: what each writes, and that the refusing ones write nothing.

The usual path goes through them in every checkout test; these pin the rare branches (the key already
has an order, the cart changed, another open order holds a reservation or the cart, the audit chain
has a head)
and the exact rows, so the functions can be rewritten in fewer statements without changing them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from order_svc import convert, events, store
from order_svc.audit import first_status_change_records
from order_svc.model import (
    Address,
    CheckoutInput,
    Order,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    order_total,
)

ADDRESS = Address(name="Ada", line1="1 Road", city="London", postal_code="N1", country_code="GB")
LINES = [
    OrderLine(product_id=901, title="First", unit_price=Decimal("2.50"), quantity=2),
    OrderLine(product_id=902, title="Second", unit_price=Decimal("1.25"), quantity=1),
]


@pytest.fixture
async def conn(mesh):
    connection = await psycopg.AsyncConnection.connect(
        mesh.database_url, autocommit=True, row_factory=dict_row, options="-c search_path=orders,public"
    )
    try:
        yield connection
    finally:
        await connection.close()


async def _cart(conn, user: str, lines: list[tuple[int, int]]) -> list[uuid.UUID]:
    """A cart with these (product, quantity) lines, each held by one live reservation."""
    await conn.execute("INSERT INTO carts (user_id) VALUES (%s)", (user,))
    reservations = []
    for product, quantity in lines:
        reservation = uuid.uuid4()
        await conn.execute(
            "INSERT INTO cart_items (user_id, product_id, quantity) VALUES (%s, %s, %s)",
            (user, product, quantity),
        )
        await conn.execute(
            "INSERT INTO cart_reservations (reservation_id, user_id, product_id, quantity, expires_at)"
            " VALUES (%s, %s, %s, %s, now() + interval '1 hour')",
            (reservation, user, product, quantity),
        )
        reservations.append(reservation)
    return reservations


DRIVER = uuid.uuid4()  # the lease owner of the orders _create makes


async def _create(conn, user: str, key: str, lines: list[OrderLine] = LINES) -> tuple[uuid.UUID, dict]:
    order_id = uuid.uuid4()
    total = order_total(lines)
    row = await store.create_checkout(
        conn,
        order_id=order_id,
        request=CheckoutInput(
            user_id=user, idempotency_key=key, shipping=ADDRESS, billing=None, payment_token="", notes=""
        ),
        request_hash="h" * 64,
        lines=lines,
        total=total,
        provider="sandbox",
        lease_owner=DRIVER,
        lease_seconds=30.0,
        event=events.order_created_event(
            topic="order-events-test", order_id=order_id, user_id=user, lines=lines, total=total
        ),
    )
    return order_id, row


async def _count(conn, query: str, *params) -> int:
    cur = await conn.execute(query, params)
    return (await cur.fetchone())["n"]


async def _written_for(conn, order_id: uuid.UUID) -> tuple[int, int, int, int]:
    return (
        await _count(conn, "SELECT count(*) AS n FROM orders WHERE id = %s", order_id),
        await _count(conn, "SELECT count(*) AS n FROM order_lines WHERE order_id = %s", order_id),
        await _count(conn, "SELECT count(*) AS n FROM order_reservations WHERE order_id = %s", order_id),
        await _count(conn, "SELECT count(*) AS n FROM outbox WHERE key = %s", str(order_id)),
    )


async def test_create_writes_the_order_its_lines_its_reservations_and_one_event(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    held = await _cart(conn, user, [(901, 2), (902, 1)])

    order_id, row = await _create(conn, user, "key-1")

    assert row["result"] == "created" and row["order_created_at"] is not None
    assert sorted(row["res_ids"]) == sorted(held)
    assert list(row["res_products"]) == [901, 902] and list(row["res_quantities"]) == [2, 1]
    cur = await conn.execute(
        "SELECT position, product_id, title, unit_price, quantity FROM order_lines WHERE order_id = %s"
        " ORDER BY position",
        (order_id,),
    )
    assert [tuple(r.values()) for r in await cur.fetchall()] == [
        (0, 901, "First", Decimal("2.50"), 2),
        (1, 902, "Second", Decimal("1.25"), 1),
    ]
    cur = await conn.execute(
        "SELECT status, total, lease_owner IS NOT NULL AS leased FROM orders WHERE id = %s", (order_id,)
    )
    assert await cur.fetchone() == {"status": "pending", "total": Decimal("6.25"), "leased": True}
    assert await _written_for(conn, order_id) == (1, 2, 2, 1)


async def test_create_again_with_the_key_writes_nothing_and_answers_exists(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    first, _ = await _create(conn, user, "key-1")

    second, row = await _create(conn, user, "key-1")

    assert row["result"] == "exists"
    assert await _written_for(conn, second) == (0, 0, 0, 0)
    assert await _written_for(conn, first) == (1, 2, 2, 1)


async def test_create_of_a_cart_changed_since_it_was_priced_writes_nothing(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 3), (902, 1)])  # priced with 2 of 901

    order_id, row = await _create(conn, user, "key-1")

    assert row["result"] == "cart_changed"
    assert await _written_for(conn, order_id) == (0, 0, 0, 0)


async def test_create_when_an_open_order_holds_the_reservations_writes_nothing(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    first, _ = await _create(conn, user, "key-1")

    second, row = await _create(conn, user, "key-2")
    again, same_key = await _create(conn, user, "key-1")  # the key's own order still comes first

    assert row["result"] == "reservations_claimed"
    assert same_key["result"] == "exists"
    assert await _written_for(conn, second) == (0, 0, 0, 0)
    assert await _written_for(conn, again) == (0, 0, 0, 0)
    assert await _written_for(conn, first) == (1, 2, 2, 1)


async def test_a_second_checkout_of_a_cart_whose_reservations_all_lapsed_waits_for_the_open_one(conn):
    """The first order claims no reservation (none is live), so only the open order itself can tell
    the second checkout apart: both used to be created, and both reserved and charged in step 2."""
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    await conn.execute("UPDATE cart_reservations SET state = 'lapsed' WHERE user_id = %s", (user,))
    first, created = await _create(conn, user, "key-1")
    assert created["result"] == "created" and created["res_ids"] == []

    second, row = await _create(conn, user, "key-2")

    assert row["result"] == "reservations_claimed"
    assert await _written_for(conn, second) == (0, 0, 0, 0)
    # once the open order is no longer PENDING, the cart can be checked out again
    await conn.execute("UPDATE orders SET status = 'failed' WHERE id = %s", (first,))
    third, row = await _create(conn, user, "key-3")
    assert row["result"] == "created"
    assert await _written_for(conn, third) == (1, 2, 0, 1)


def _paid(order_id: uuid.UUID, user: str, lines: list[OrderLine]) -> Order:
    now = dt.datetime.now(dt.UTC)
    return Order(
        id=order_id,
        user_id=user,
        status=OrderStatus.PAID,
        lines=tuple(lines),
        total=order_total(lines),
        shipping=ADDRESS,
        shipping_anonymized=False,
        billing=None,
        notes="",
        payment_status=PaymentStatus.CAPTURED,
        payment_provider="sandbox",
        payment_reference="ch_test",
        decline_code="",
        tracking_number="",
        failure=None,
        version=2,
        created_at=now,
        updated_at=now,
    )


async def _complete(conn, paid: Order, lease_owner: uuid.UUID = DRIVER) -> bool:
    resource, records = first_status_change_records(paid, OrderStatus.PENDING, paid.updated_at)
    return await store.complete_checkout(
        conn,
        paid=paid,
        outcome=convert.encode_success(paid),
        event=events.status_changed_event(
            topic="order-events-test", order=paid, from_status=OrderStatus.PENDING
        ),
        audit_resource=resource,
        audit_records=records,
        lease_owner=lease_owner,
    )


async def _cart_state(conn, user: str) -> tuple[list[tuple], int, int]:
    cur = await conn.execute(
        "SELECT product_id, quantity FROM cart_items WHERE user_id = %s ORDER BY product_id", (user,)
    )
    items = [tuple(r.values()) for r in await cur.fetchall()]
    reservations = await _count(conn, "SELECT count(*) AS n FROM cart_reservations WHERE user_id = %s", user)
    version = await _count(conn, "SELECT version AS n FROM carts WHERE user_id = %s", user)
    return items, reservations, version


async def test_complete_moves_once_and_takes_the_bought_units_and_reservations_off_the_cart(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    order_id, _ = await _create(conn, user, "key-1")
    # meanwhile one more unit of 902 (with a reservation of its own) joined the cart
    await conn.execute("UPDATE cart_items SET quantity = 2 WHERE user_id = %s AND product_id = 902", (user,))
    await conn.execute(
        "INSERT INTO cart_reservations (reservation_id, user_id, product_id, quantity, expires_at)"
        " VALUES (%s, %s, 902, 1, now() + interval '1 hour')",
        (uuid.uuid4(), user),
    )
    _, _, version = await _cart_state(conn, user)
    paid = _paid(order_id, user, LINES)

    assert await _complete(conn, paid) is True

    # 901 bought whole: gone; 902 reduced to the unit the order did not take, still held
    assert await _cart_state(conn, user) == ([(902, 1)], 1, version + 1)
    cur = await conn.execute(
        "SELECT status, version, payment_status, payment_reference, checkout_outcome, lease_owner,"
        " stock_committed_at = updated_at AS committed FROM orders WHERE id = %s",
        (order_id,),
    )
    row = await cur.fetchone()
    assert (row["status"], row["version"], row["payment_status"], row["payment_reference"]) == (
        "paid",
        2,
        "captured",
        "ch_test",
    )
    assert bytes(row["checkout_outcome"]) == convert.encode_success(paid) and row["lease_owner"] is None
    assert row["committed"] is True
    resource = f"order/{order_id}"
    cur = await conn.execute(
        "SELECT action, chain_seq FROM audit_log WHERE resource = %s ORDER BY chain_seq", (resource,)
    )
    assert [tuple(r.values()) for r in await cur.fetchall()] == [("order.paid", 1), ("payment.capture", 2)]
    assert await _count(conn, "SELECT seq AS n FROM audit_chain_heads WHERE resource = %s", resource) == 2
    assert await _count(conn, "SELECT count(*) AS n FROM outbox WHERE key = %s", str(order_id)) == 2

    again = dataclasses.replace(paid, payment_reference="ch_other")
    assert await _complete(conn, again) is False  # no longer PENDING: nothing written
    assert await _cart_state(conn, user) == ([(902, 1)], 1, version + 1)
    assert await _count(conn, "SELECT count(*) AS n FROM outbox WHERE key = %s", str(order_id)) == 2
    assert await _count(conn, "SELECT count(*) AS n FROM audit_log WHERE resource = %s", resource) == 2


async def test_complete_by_a_driver_whose_lease_was_taken_over_writes_nothing(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    order_id, _ = await _create(conn, user, "key-1")
    canceller = uuid.uuid4()
    await conn.execute("UPDATE orders SET lease_owner = %s WHERE id = %s", (canceller, order_id))
    before = await _cart_state(conn, user)

    assert await _complete(conn, _paid(order_id, user, LINES)) is False

    assert await _cart_state(conn, user) == before
    cur = await conn.execute("SELECT status, version, lease_owner FROM orders WHERE id = %s", (order_id,))
    assert await cur.fetchone() == {"status": "pending", "version": 1, "lease_owner": canceller}
    assert await _count(conn, "SELECT count(*) AS n FROM outbox WHERE key = %s", str(order_id)) == 1
    assert (
        await _count(conn, "SELECT count(*) AS n FROM audit_log WHERE resource = %s", f"order/{order_id}")
        == 0
    )


async def test_complete_when_the_audit_chain_has_a_head_raises_and_writes_nothing(conn):
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2), (902, 1)])
    order_id, _ = await _create(conn, user, "key-1")
    await conn.execute(
        "INSERT INTO audit_chain_heads (resource, seq, hash) VALUES (%s, 1, 'x')", (f"order/{order_id}",)
    )
    before = await _cart_state(conn, user)

    with pytest.raises(psycopg.Error) as raised:
        await _complete(conn, _paid(order_id, user, LINES))

    assert raised.value.sqlstate == store.CHAIN_HAS_RECORDS
    assert await _cart_state(conn, user) == before
    cur = await conn.execute("SELECT status, version FROM orders WHERE id = %s", (order_id,))
    assert await cur.fetchone() == {"status": "pending", "version": 1}
    assert await _count(conn, "SELECT count(*) AS n FROM outbox WHERE key = %s", str(order_id)) == 1


async def test_a_retried_refund_can_turn_its_restock_on_but_never_off(conn):
    """A refund recorded without restock (say, the provider failed) and retried by an admin who now
    knows the goods came back kept the first answer: it ended REFUNDED, OK, and never restocked."""
    user = f"fn-{uuid.uuid4().hex[:8]}"
    await _cart(conn, user, [(901, 2)])
    order_id, _ = await _create(conn, user, "key-1", lines=[LINES[0]])
    await conn.execute("UPDATE orders SET status = 'delivered' WHERE id = %s", (order_id,))

    async def intent(restock: bool) -> bool:
        assert await store.begin_transition(
            conn,
            order_id,
            expected=[OrderStatus.DELIVERED],
            target=OrderStatus.REFUNDED,
            reason="",
            restock=restock,
        )
        cur = await conn.execute("SELECT transition_restock FROM orders WHERE id = %s", (order_id,))
        return (await cur.fetchone())["transition_restock"]

    assert await intent(False) is False
    assert await intent(True) is True  # the goods came back after all
    assert await intent(False) is True  # a restock may be under way: never taken back
