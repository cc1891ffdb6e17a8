"""Inventory under concurrency, over real gRPC against real PostgreSQL: it never oversells."""

from __future__ import annotations

import asyncio
import random

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2
from psycopg.rows import dict_row
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2 as pb

from meshkit.outbox import _payload_bytes
from tests.integration.inventory_helpers import (
    admin_stub,
    broken,
    invariant_violations,
    new_product_id,
    reason_of,
    service_stub,
    stock_product,
)


async def test_500_concurrent_reserves_on_7_units_reserve_exactly_7(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 3, 2: 4})

    async def reserve(i: int):
        try:
            reply = await svc.ReserveStock(
                pb.ReserveStockRequest(owner=f"user-{i}", product_id=product, quantity=1)
            )
            return sum(r.quantity for r in reply.reservations)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            return reason_of(error)

    outcomes = await asyncio.gather(*(reserve(i) for i in range(500)))
    reserved = [o for o in outcomes if isinstance(o, int)]
    assert sum(reserved) == 7
    assert len(reserved) == 7
    assert [o for o in outcomes if not isinstance(o, int)] == ["INSUFFICIENT_STOCK"] * 493
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved, stock.available) == (7, 7, 0)
    rows = invariant_violations(inventory.database_url, [product])
    assert len(rows) == 2 and broken(rows) == []


async def test_insufficient_stock_carries_available_quantity(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 2, 2: 1})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=4))
    from meshkit.errors import error_info_of

    info = error_info_of(caught.value)
    assert info.reason == "INSUFFICIENT_STOCK" and info.metadata["available"] == "3"
    # a request that needs both warehouses is split in priority order
    reply = await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=3))
    assert [(r.warehouse_id, r.quantity) for r in reply.reservations] == [(1, 2), (2, 1)]


async def test_mixed_reserve_release_expire_commit_traffic_keeps_invariants(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    products = [new_product_id() for _ in range(3)]
    for product in products:
        await stock_product(admin, product, {1: 20, 2: 15})
    rng = random.Random(7)
    held: list[pb.Reservation] = []
    lock = asyncio.Lock()

    async def worker(worker_id: int):
        for step in range(25):
            action = rng.choice(["reserve", "reserve", "release", "commit", "short"])
            try:
                if action in ("reserve", "short"):
                    ttl = duration_pb2.Duration(seconds=1 if action == "short" else 600)
                    reply = await svc.ReserveStock(
                        pb.ReserveStockRequest(
                            owner=f"w{worker_id}",
                            product_id=rng.choice(products),
                            quantity=rng.randint(1, 4),
                            ttl=ttl,
                        )
                    )
                    async with lock:
                        held.extend(reply.reservations)
                    continue
                async with lock:
                    if not held:
                        continue
                    victim = held.pop(rng.randrange(len(held)))
                if action == "release":
                    await svc.ReleaseReservation(
                        pb.ReleaseReservationRequest(reservation_id=victim.id, quantity=rng.choice([0, 1]))
                    )
                else:
                    await svc.CommitReservations(
                        pb.CommitReservationsRequest(
                            order_id=f"o-{worker_id}-{step}", reservation_ids=[victim.id]
                        )
                    )
            except grpc.aio.AioRpcError as error:
                assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION,), error.details()

    await asyncio.gather(
        *(worker(i) for i in range(16)), admin.ExpireReservations(pb.ExpireReservationsRequest())
    )
    await asyncio.sleep(1.2)
    await asyncio.gather(*(admin.ExpireReservations(pb.ExpireReservationsRequest()) for _ in range(3)))
    rows = invariant_violations(inventory.database_url, products)
    assert len(rows) == 6 and broken(rows) == []


async def test_expiry_releases_due_reservations_once_with_two_sweepers(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 50})
    short = duration_pb2.Duration(seconds=1)
    ids = []
    for i in range(30):
        reply = await svc.ReserveStock(
            pb.ReserveStockRequest(owner=f"cart-{i}", product_id=product, quantity=1, ttl=short)
        )
        ids += [r.id for r in reply.reservations]
    keep = await svc.ReserveStock(pb.ReserveStockRequest(owner="keeper", product_id=product, quantity=5))
    await asyncio.sleep(1.5)
    # two sweepers at once (plus the in-service background sweeper)
    results = await asyncio.gather(
        *(admin.ExpireReservations(pb.ExpireReservationsRequest()) for _ in range(2))
    )
    states = await svc.BatchGetReservations(pb.BatchGetReservationsRequest(reservation_ids=ids))
    assert {r.status for r in states.reservations} == {pb.RESERVATION_STATUS_EXPIRED}
    assert sum(r.expired_count for r in results) <= 30
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (50, 5)
    assert keep.reservations[0].status == pb.RESERVATION_STATUS_ACTIVE
    with psycopg.connect(inventory.database_url) as conn:
        expire_rows = conn.execute(
            "SELECT reservation_id, count(*) FROM inventory.stock_ledger WHERE product_id = %s AND movement = 'expire'"
            " GROUP BY reservation_id",
            (product,),
        ).fetchall()
    assert len(expire_rows) == 30 and all(n == 1 for _, n in expire_rows)
    assert broken(invariant_violations(inventory.database_url, [product])) == []
    # every event of the product (reserves, the 30 expiries, stock changes) has its own version,
    # increasing in the order the relay publishes them (outbox id)
    with psycopg.connect(inventory.database_url, row_factory=dict_row) as conn:
        outbox = conn.execute(
            "SELECT payload, payload_json, message_type FROM inventory.outbox WHERE key = %s ORDER BY id",
            (str(product),),
        ).fetchall()
    events = [events_pb2.InventoryEvent.FromString(_payload_bytes(row)) for row in outbox]
    versions = [e.version for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert sum(e.HasField("reservation_expired") for e in events) == 30


async def test_commit_and_restock_are_idempotent_under_concurrency(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 10, 2: 10})
    reply = await svc.ReserveStock(pb.ReserveStockRequest(owner="buyer", product_id=product, quantity=12))
    ids = [r.id for r in reply.reservations]
    order_id = f"order-{product}"
    commits = await asyncio.gather(
        *(
            svc.CommitReservations(pb.CommitReservationsRequest(order_id=order_id, reservation_ids=ids))
            for _ in range(10)
        )
    )
    assert sum(1 for c in commits if not c.already_committed) == 1
    assert all(sum(r.quantity for r in c.reservations) == 12 for c in commits)
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (8, 0)
    restocks = await asyncio.gather(
        *(svc.RestockOrder(pb.RestockOrderRequest(order_id=order_id, reason="cancelled")) for _ in range(10))
    )
    assert sum(1 for r in restocks if not r.already_restocked) == 1
    assert all(r.quantity_restocked == 12 for r in restocks)
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (20, 0)
    # a commit arriving after the restock is refused, never re-sells
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.CommitReservations(pb.CommitReservationsRequest(order_id=order_id, reservation_ids=ids))
    assert reason_of(caught.value) == "ORDER_RESTOCKED"
    assert broken(invariant_violations(inventory.database_url, [product])) == []


async def test_partial_and_whole_release(inventory):
    admin, svc = admin_stub(inventory), service_stub(inventory)
    product = new_product_id()
    await stock_product(admin, product, {1: 10})
    reservation = (
        await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=5))
    ).reservations[0]
    partial = await svc.ReleaseReservation(
        pb.ReleaseReservationRequest(reservation_id=reservation.id, quantity=2)
    )
    assert (partial.reservation.quantity, partial.reservation.status) == (3, pb.RESERVATION_STATUS_ACTIVE)
    whole = await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=reservation.id))
    assert whole.reservation.status == pb.RESERVATION_STATUS_RELEASED
    again = await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=reservation.id))
    assert again.reservation.status == pb.RESERVATION_STATUS_RELEASED
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (10, 0)
    assert broken(invariant_violations(inventory.database_url, [product])) == []


async def test_extends_meeting_lapsed_reservations_race_commits_without_deadlock(inventory):
    """An extend whose set holds lapsed reservations expires them on the spot, which updates their
    stock rows, and then extends the rest; commits of those same reservations lock them, then the
    stock rows. The extend locked the stock rows first and the reservations after, the reverse
    order, so the two could deadlock (PostgreSQL aborts one after its deadlock timeout; with the
    extend's lock-by-id step removed, 3 of 3 runs had a call run out its deadline meanwhile).
    It now locks the reservations by id first. Many such pairs race here; every call must succeed or
    be FAILED_PRECONDITION, and the invariants hold afterwards."""
    admin, svc = admin_stub(inventory), service_stub(inventory)
    products = [new_product_id() for _ in range(2)]
    for product in products:
        await stock_product(admin, product, {1: 2000, 2: 2000})
    short, long = duration_pb2.Duration(seconds=1), duration_pb2.Duration(seconds=600)

    async def reserve(owner: str, product: int, ttl) -> list[str]:
        reply = await svc.ReserveStock(
            pb.ReserveStockRequest(owner=owner, product_id=product, quantity=1, ttl=ttl)
        )
        return [r.id for r in reply.reservations]

    lapsing = [
        rid
        for ids in await asyncio.gather(*(reserve(f"lapse-{i}", products[i % 2], short) for i in range(240)))
        for rid in ids
    ]
    live = [
        [rid for product in products for rid in await reserve(f"live-{i}", product, long)] for i in range(80)
    ]
    await asyncio.sleep(1.2)  # the short ones lapse; the sweeper's interval is far longer
    codes: dict[str, int] = {}

    async def call(rpc) -> None:
        try:
            await rpc
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.aio.AioRpcError as error:
            codes[error.code().name] = codes.get(error.code().name, 0) + 1
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details(), codes)

    async def checkout(n: int) -> None:
        ids = live[n]
        extend = pb.ExtendReservationsRequest(
            reservation_ids=lapsing[n * 3 : n * 3 + 3] + ids[::-1], ttl=long
        )
        commit = pb.CommitReservationsRequest(order_id=f"race-{products[0]}-{n}", reservation_ids=ids)
        await asyncio.gather(call(svc.ExtendReservations(extend)), call(svc.CommitReservations(commit)))

    await asyncio.gather(*(checkout(n) for n in range(80)))
    assert codes.get("OK", 0) >= 80, codes
    assert broken(invariant_violations(inventory.database_url, products)) == [], codes
