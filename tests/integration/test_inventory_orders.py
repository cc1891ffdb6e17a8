"""Inventory's stored functions (commit_order_v3, restock_order, extend_reservations_v2, reserve_batch's
event) against real PostgreSQL over real gRPC: outcomes, refusals that change nothing, a restock
racing a commit, and the protobuf events the functions write."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2 as pb

from tests.integration.inventory_helpers import (
    admin_stub,
    broken,
    invariant_violations,
    new_product_id,
    reason_of,
    service_stub,
    stock_product,
)


def _python_event(event_id, product_id, version, at, quantity, reserved, movement, warehouse_id):
    available = quantity - reserved
    event = events_pb2.InventoryEvent(
        event_id=str(event_id),
        product_id=product_id,
        version=version,
        stock_level_changed=events_pb2.StockLevelChanged(
            available=available,
            in_stock=available > 0,
            quantity=quantity,
            reserved=reserved,
            movement=movement,
            warehouse_id=warehouse_id,
        ),
    )
    event.occurred_at.FromDatetime(at)
    return event.SerializeToString()


async def test_sql_event_encoding_is_byte_for_byte_the_python_serialization(inventory):
    at = dt.datetime(2026, 12, 2, 4, 50, 41, 123456, tzinfo=dt.UTC)
    cases = [
        (1, 1, 10, 3, 6, 1),
        (10_000_123, 0, 0, 0, 7, 0),  # zero fields are left out, the oneof is still set
        (2**40 + 5, 2**62, 2**31 - 1, 2**31 - 1, 3, 2),  # multi-byte varints, in_stock false
        (5, 300, 127, 128, 4, 16_383),  # 7-bit boundaries
        (6, 7, 0, 5, 6, 16_384),  # negative available: a ten-byte varint, as int32 -5 encodes
    ]
    with psycopg.connect(inventory.database_url) as conn:
        for product_id, version, quantity, reserved, movement, warehouse_id in cases:
            event_id = uuid.uuid4()
            (encoded,) = conn.execute(
                "SELECT inventory.stock_level_changed_event(%s, %s, %s, %s, %s, %s, %s, %s)",
                (event_id, product_id, version, at, quantity, reserved, movement, warehouse_id),
            ).fetchone()
            expected = _python_event(
                event_id, product_id, version, at, quantity, reserved, movement, warehouse_id
            )
            assert bytes(encoded) == expected, (product_id, version, quantity, reserved)
        (negative,) = conn.execute("SELECT inventory.pb_varint(-1)").fetchone()
        assert bytes(negative) == b"\xff" * 9 + b"\x01"


async def _reserve(svc, product: int, quantity: int, owner: str = "buyer") -> list[pb.Reservation]:
    reply = await svc.ReserveStock(pb.ReserveStockRequest(owner=owner, product_id=product, quantity=quantity))
    return list(reply.reservations)


def _outbox(database_url: str, product: int) -> list[dict]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT event_id, payload, payload_json, headers FROM inventory.outbox WHERE key = %s ORDER BY id",
            (str(product),),
        ).fetchall()


def _order_record(database_url: str, order_id: str):
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT restocked_at, restocked_quantity FROM inventory.order_commits WHERE order_id = %s",
            (order_id,),
        ).fetchone()


async def test_commit_writes_protobuf_events_per_product_with_totals_and_request_id(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    first, second = new_product_id(), new_product_id()
    await stock_product(admin, first, {1: 2, 2: 5})
    await stock_product(admin, second, {2: 4})
    held = await _reserve(svc, first, 4) + await _reserve(svc, second, 1)
    order_id = f"order-{first}"
    reply = await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[r.id for r in held]),
        metadata=(("x-request-id", f"req-{first}"),),
    )
    assert not reply.already_committed
    assert [(r.product_id, r.warehouse_id, r.quantity) for r in reply.reservations] == [
        (first, 1, 2),
        (first, 2, 2),
        (second, 2, 1),
    ]
    assert all(
        r.status == pb.RESERVATION_STATUS_COMMITTED and r.order_id == order_id for r in reply.reservations
    )
    for product, (quantity, reserved) in ((first, (3, 0)), (second, (3, 0))):
        rows = _outbox(inventory.database_url, product)
        last = rows[-1]
        assert last["payload_json"] is None
        event = events_pb2.InventoryEvent.FromString(bytes(last["payload"]))
        assert event.event_id == str(last["event_id"]) == last["headers"]["event-id"]
        assert last["headers"]["event-type"] == "inventory.stock_level_changed"
        assert last["headers"]["request-id"] == f"req-{first}"
        assert event.product_id == product and event.version == len(rows)  # every version has its event
        change = event.stock_level_changed
        assert (change.quantity, change.reserved, change.available) == (quantity, reserved, quantity)
        assert change.movement == events_pb2.STOCK_MOVEMENT_COMMIT and change.in_stock
        age = dt.datetime.now(dt.UTC) - event.occurred_at.ToDatetime(tzinfo=dt.UTC)
        assert abs(age.total_seconds()) < 60
    assert broken(invariant_violations(inventory.database_url, [first, second])) == []


async def test_a_refused_commit_changes_nothing_and_the_order_can_commit_later(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 10})
    held = await _reserve(svc, product, 3)
    order_id = f"order-{product}"
    unknown = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.CommitReservations(
            pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[held[0].id, unknown])
        )
    assert (
        caught.value.code() == grpc.StatusCode.NOT_FOUND
        and reason_of(caught.value) == "RESERVATION_NOT_FOUND"
    )
    assert unknown in caught.value.details() and held[0].id not in caught.value.details()
    assert _order_record(inventory.database_url, order_id) is None

    released = await _reserve(svc, product, 1)
    await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=released[0].id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.CommitReservations(
            pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[held[0].id, released[0].id])
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "RESERVATION_EXPIRED" and released[0].id in caught.value.details()
    assert _order_record(inventory.database_url, order_id) is None
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (10, 3)

    reply = await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[held[0].id])
    )
    assert not reply.already_committed and [r.quantity for r in reply.reservations] == [3]
    again = await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[held[0].id])
    )
    assert again.already_committed and [r.id for r in again.reservations] == [held[0].id]
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (7, 0)
    assert broken(invariant_violations(inventory.database_url, [product])) == []


async def test_a_commit_whose_reservations_hold_other_units_than_expected_commits_nothing(inventory):
    """The caller's record of a reservation can be behind inventory's (a partial release whose answer
    was lost): a commit told the units it must sell refuses to sell fewer or more, and changes nothing."""
    admin, svc = admin_stub(inventory), service_stub(inventory)
    first, second = new_product_id(), new_product_id()
    await stock_product(admin, first, {1: 10})
    await stock_product(admin, second, {1: 10})
    held = await _reserve(svc, first, 5) + await _reserve(svc, second, 1)
    await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=held[0].id, quantity=3))
    order_id = f"order-{first}"
    ids = [r.id for r in held]
    for expected in ({first: 5, second: 1}, {first: 2}, {first: 2, second: 1, new_product_id(): 1}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await svc.CommitReservations(
                pb.CommitReservationsRequest(order_id=order_id, reservation_ids=ids, expected_units=expected)
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
        assert reason_of(caught.value) == "RESERVATION_QUANTITY_MISMATCH", caught.value.details()
        assert f"{first}:2" in caught.value.details()
        assert _order_record(inventory.database_url, order_id) is None
    for product, reserved in ((first, 2), (second, 1)):
        stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
        assert (stock.quantity, stock.reserved) == (10, reserved)

    for bad in ({first: 0}, {-first: 2}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await svc.CommitReservations(
                pb.CommitReservationsRequest(order_id=order_id, reservation_ids=ids, expected_units=bad)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expected_units" in caught.value.details()

    reply = await svc.CommitReservations(
        pb.CommitReservationsRequest(
            order_id=order_id, reservation_ids=ids, expected_units={first: 2, second: 1}
        )
    )
    assert not reply.already_committed and sum(r.quantity for r in reply.reservations) == 3
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=first))).stock
    assert (stock.quantity, stock.reserved) == (8, 0)
    assert broken(invariant_violations(inventory.database_url, [first, second])) == []


async def test_a_repeated_commit_naming_other_reservations_is_refused_not_answered_as_done(inventory):
    """The repeat of a commit answered "already committed" whatever ids it named: a caller that sent
    another reservation believed its units sold while they stayed reserved."""
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 10})
    first, later = await _reserve(svc, product, 2), await _reserve(svc, product, 1)
    order_id = f"order-{product}"
    await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[first[0].id])
    )

    for other in ([later[0].id], [first[0].id, later[0].id]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await svc.CommitReservations(
                pb.CommitReservationsRequest(order_id=order_id, reservation_ids=other)
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()

    got = await svc.BatchGetReservations(pb.BatchGetReservationsRequest(reservation_ids=[later[0].id]))
    assert [r.status for r in got.reservations] == [pb.RESERVATION_STATUS_ACTIVE]
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (8, 1)


async def test_a_restock_racing_a_commit_restocks_what_the_commit_sold(inventory):
    """The restock finds no commit record yet, waits on the commit's insert of it, then restocks
    the committed units instead of answering "nothing was committed" while the sale lands."""
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 10})
    held = await _reserve(svc, product, 4)
    order_id = f"order-{product}"
    async with await psycopg.AsyncConnection.connect(inventory.database_url) as commit_tx:
        await commit_tx.execute(
            "SELECT * FROM inventory.commit_order_v3(%s, %s, 'test', 'unused-topic', '{}', NULL, NULL)",
            (order_id, [uuid.UUID(r.id) for r in held]),
        )
        restock = asyncio.ensure_future(
            svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id, reason="cancelled"))
        )
        await asyncio.sleep(0.5)
        assert not restock.done()  # waiting on the commit's record
        await commit_tx.commit()
    reply = await restock
    assert (reply.quantity_restocked, reply.already_restocked) == (4, False)
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (10, 0)
    again = await svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id))
    assert (again.quantity_restocked, again.already_restocked) == (4, True)
    assert _order_record(inventory.database_url, order_id)[1] == 4
    assert broken(invariant_violations(inventory.database_url, [product])) == []


async def test_restock_without_commit_is_recorded_and_refuses_a_late_commit(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 5})
    held = await _reserve(svc, product, 2)
    order_id = f"order-{product}"
    replies = await asyncio.gather(
        *(svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id)) for _ in range(5))
    )
    assert all(r.quantity_restocked == 0 for r in replies)
    assert sum(1 for r in replies if not r.already_restocked) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.CommitReservations(
            pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[r.id for r in held])
        )
    assert reason_of(caught.value) == "ORDER_RESTOCKED"
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (5, 2)  # still held, not sold


async def test_extend_lengthens_active_reservations_only_and_answers_all(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 5})
    short = (
        await svc.ReserveStock(
            pb.ReserveStockRequest(
                owner="u", product_id=product, quantity=1, ttl=duration_pb2.Duration(seconds=60)
            )
        )
    ).reservations[0]
    sold = (await _reserve(svc, product, 1))[0]
    await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=f"o-{product}", reservation_ids=[sold.id])
    )
    reply = await svc.ExtendReservations(
        pb.ExtendReservationsRequest(
            reservation_ids=[short.id, sold.id], ttl=duration_pb2.Duration(seconds=3600)
        )
    )
    by_id = {r.id: r for r in reply.reservations}
    assert [r.id for r in reply.reservations] == [short.id, sold.id]
    assert by_id[short.id].expires_at.ToSeconds() >= short.expires_at.ToSeconds() + 3000
    assert by_id[sold.id].expires_at == sold.expires_at
    assert by_id[sold.id].status == pb.RESERVATION_STATUS_COMMITTED
    # never shortened
    again = await svc.ExtendReservations(
        pb.ExtendReservationsRequest(reservation_ids=[short.id], ttl=duration_pb2.Duration(seconds=60))
    )
    assert again.reservations[0].expires_at == by_id[short.id].expires_at
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.ExtendReservations(pb.ExtendReservationsRequest(reservation_ids=[str(uuid.uuid4())]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _lapse(database_url: str, reservation_ids: list[str]) -> None:
    """Put these reservations past their expiry, as if the sweeper had not reached them yet."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE inventory.reservations SET expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
            ([uuid.UUID(r) for r in reservation_ids],),
        )


async def test_a_reservation_past_its_expiry_is_neither_revived_nor_sold_before_the_sweeper_runs(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 3})
    late, live = (await _reserve(svc, product, 2))[0], (await _reserve(svc, product, 1))[0]
    _lapse(inventory.database_url, [late.id])
    reply = await svc.ExtendReservations(
        pb.ExtendReservationsRequest(
            reservation_ids=[late.id, live.id], ttl=duration_pb2.Duration(seconds=600)
        )
    )
    assert [r.status for r in reply.reservations] == [
        pb.RESERVATION_STATUS_EXPIRED,
        pb.RESERVATION_STATUS_ACTIVE,
    ]
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (3, 1)  # its 2 units are back on sale at once

    # a commit meeting a lapsed reservation sells nothing, and its units are free for a re-reserve
    again = (await _reserve(svc, product, 2))[0]
    _lapse(inventory.database_url, [again.id])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.CommitReservations(
            pb.CommitReservationsRequest(order_id=f"late-{product}", reservation_ids=[again.id, live.id])
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "RESERVATION_EXPIRED" and again.id in caught.value.details()
    states = await svc.BatchGetReservations(
        pb.BatchGetReservationsRequest(reservation_ids=[again.id, live.id])
    )
    assert [r.status for r in states.reservations] == [
        pb.RESERVATION_STATUS_EXPIRED,
        pb.RESERVATION_STATUS_ACTIVE,
    ]
    assert len(await _reserve(svc, product, 2)) == 1
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (3, 3)
    # the order was not claimed by the refused commit: it commits with live reservations
    await svc.CommitReservations(
        pb.CommitReservationsRequest(order_id=f"late-{product}", reservation_ids=[live.id])
    )
    with psycopg.connect(inventory.database_url) as conn:
        expiries = conn.execute(
            "SELECT count(*) FROM inventory.stock_ledger WHERE product_id = %s AND movement = 'expire'",
            (product,),
        ).fetchone()[0]
    assert expiries == 2
    events = [
        events_pb2.InventoryEvent.FromString(bytes(r["payload"]))
        for r in _outbox(inventory.database_url, product)
    ]
    assert sorted(
        e.reservation_expired.reservation_id for e in events if e.HasField("reservation_expired")
    ) == sorted([late.id, again.id])
    assert broken(invariant_violations(inventory.database_url, [product])) == []


async def test_a_reserve_batch_writes_its_event_as_protobuf_with_the_batch_totals(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 3, 2: 4})
    await asyncio.gather(*(_reserve(svc, product, 2, owner=f"u{i}") for i in range(3)))
    rows = _outbox(inventory.database_url, product)[2:]  # after the two receives
    events = [events_pb2.InventoryEvent.FromString(bytes(r["payload"])) for r in rows]
    assert all(r["payload_json"] is None for r in rows)
    assert [e.version for e in events] == list(range(3, 3 + len(events)))
    assert all(e.event_id == str(r["event_id"]) for e, r in zip(events, rows, strict=True))
    last = events[-1].stock_level_changed
    assert (last.quantity, last.reserved, last.available, last.in_stock) == (7, 6, 1, True)
    assert {e.stock_level_changed.movement for e in events} == {events_pb2.STOCK_MOVEMENT_RESERVE}


async def test_a_restock_past_the_int32_total_changes_nothing_and_can_be_retried(inventory):
    """A restock after receipts brought the product near 2^31-1: from one warehouse row it was an
    INTERNAL 'integer out of range' (the cancel retried for ever); spread over two rows it went past
    the total, and every GetStock of the product failed after."""
    admin, svc = admin_stub(inventory), service_stub(inventory)
    limit = 2**31 - 1
    for rows in ({1: 10}, {1: 5, 2: 5}):  # the row's own INT, then the product's total
        product = new_product_id()
        await stock_product(admin, product, rows)
        held = await _reserve(svc, product, 10)
        order_id = f"order-{product}"
        await svc.CommitReservations(
            pb.CommitReservationsRequest(order_id=order_id, reservation_ids=[r.id for r in held])
        )
        with psycopg.connect(inventory.database_url, autocommit=True) as conn:  # near the limit cheaply
            conn.execute(
                "UPDATE inventory.stock SET quantity = %s WHERE product_id = %s AND warehouse_id = 1",
                (limit - 5 if len(rows) == 1 else limit - 7, product),
            )
        before = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id, reason="cancelled"))
        assert (caught.value.code(), reason_of(caught.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "STOCK_LIMIT_EXCEEDED",
        ), caught.value.details()
        assert (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock == before
        assert _order_record(inventory.database_url, order_id) == (None, None)  # not marked restocked
        await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=-100))
        reply = await svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id, reason="cancelled"))
        assert (reply.quantity_restocked, reply.already_restocked) == (10, False)
