"""Inventory: the group-commit batcher against real PostgreSQL, the oversell detector, bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import time
import uuid

import grpc
import httpx
import psycopg
import pytest
from google.protobuf import duration_pb2
from shop.inventory.v1 import inventory_pb2 as pb

from inventory_svc import metrics as inventory_metrics
from inventory_svc.config import InventorySettings
from inventory_svc.jobs import check_invariants
from inventory_svc.model import InsufficientStock, ReserveRequest
from inventory_svc.service import InventoryService
from meshkit.db import open_pool
from meshkit.errors import FailedPrecondition
from tests.integration.inventory_helpers import (
    admin_stub,
    broken,
    invariant_violations,
    new_product_id,
    reason_of,
    service_stub,
    stock_product,
)


async def test_batch_gives_each_caller_its_own_outcome_and_isolates_a_failing_request(mesh):
    await mesh.start("inventory_svc")
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 5})
    pool = await open_pool(mesh.database_url, schema="inventory", min_size=1, max_size=4)
    try:
        settings = InventorySettings(database_url=mesh.database_url, reserve_batch_window_ms=20)
        service = InventoryService(pool=pool, settings=settings)
        ttl = dt.timedelta(minutes=5)

        def request(owner: str, quantity: int) -> ReserveRequest:
            return ReserveRequest(owner=owner, product_id=product, quantity=quantity, ttl=ttl)

        # the owner column holds 255 characters: this request makes its statement fail in the database
        requests = [request("a", 1), request("b", 3), request("c", 3), request("x" * 300, 1), request("d", 1)]
        outcomes = await asyncio.gather(
            *(service._batcher.submit(product, r) for r in requests), return_exceptions=True
        )
        assert service._batcher.batches < len(requests) + 4  # shared batches, plus the isolation retries
        assert sum(r.quantity for r in outcomes[0]) == 1
        assert sum(r.quantity for r in outcomes[1]) == 3
        assert isinstance(outcomes[2], InsufficientStock) and outcomes[2].available == 1
        assert isinstance(outcomes[3], psycopg.Error)  # only the bad request failed
        assert sum(r.quantity for r in outcomes[4]) == 1
    finally:
        await pool.close()
    assert broken(invariant_violations(mesh.database_url, [product])) == []


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_invariant_checker_counts_corrupted_reserved(mesh):
    await mesh.restart("inventory_svc", extra_env={"SHOPMESH_INVARIANT_CHECK_INTERVAL_SECONDS": "0.5"})
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 10})
    async with httpx.AsyncClient() as http:
        await asyncio.sleep(1.2)
        before = _metric((await http.get(mesh.metrics_url("inventory_svc"))).text, "inventory_oversell_total")
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            conn.execute("UPDATE inventory.stock SET reserved = 3 WHERE product_id = %s", (product,))
        try:
            deadline = time.monotonic() + 10
            after = before
            while time.monotonic() < deadline and after <= before:
                await asyncio.sleep(0.3)
                after = _metric(
                    (await http.get(mesh.metrics_url("inventory_svc"))).text, "inventory_oversell_total"
                )
            assert after > before
        finally:
            with psycopg.connect(mesh.database_url, autocommit=True) as conn:
                conn.execute("UPDATE inventory.stock SET reserved = 0 WHERE product_id = %s", (product,))
    await mesh.restart("inventory_svc")


async def test_ledger_drift_is_caught_after_the_checkpoint_folded_the_ledger(mesh):
    """The periodic check sums only the ledger above its checkpoint; a stock row that stops agreeing
    with its ledger is still counted once the ledger rows behind it live in the checkpoint."""
    await mesh.start("inventory_svc")
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 10})
    pool = await open_pool(mesh.database_url, schema="inventory", min_size=1, max_size=2)

    def sql(query: str, *args: object) -> tuple | None:
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchone() if cur.description else None

    def mine(violations: list[dict]) -> list[dict]:
        return [v for v in violations if v["product_id"] == product]

    try:
        (received_id,) = sql("SELECT max(id) FROM inventory.stock_ledger WHERE product_id = %s", product)
        # the first check names the candidate horizon, a later one folds it once nothing older is open
        through, deadline = 0, time.monotonic() + 60
        while through < received_id and time.monotonic() < deadline:
            assert mine(await check_invariants(pool)) == []
            (through,) = sql("SELECT through_id FROM inventory.ledger_checkpoint_horizon")
            await asyncio.sleep(0.2)
        assert through >= received_id
        assert sql(
            "SELECT quantity_sum, reserved_sum FROM inventory.ledger_checkpoint"
            " WHERE product_id = %s AND warehouse_id = 1",
            product,
        ) == (10, 0)

        # movements above the checkpoint are added to it: no false alarm
        await service_stub(mesh).ReserveStock(
            pb.ReserveStockRequest(owner="u", product_id=product, quantity=3)
        )
        assert mine(await check_invariants(pool)) == []

        before = inventory_metrics.inventory_oversell_total._value.get()
        sql("UPDATE inventory.stock SET quantity = quantity + 5 WHERE product_id = %s", product)
        try:
            drift = mine(await check_invariants(pool))
            assert [
                (d["quantity"], d["ledger_quantity"], d["reserved"], d["ledger_reserved"]) for d in drift
            ] == [(15, 10, 3, 3)]
            assert inventory_metrics.inventory_oversell_total._value.get() > before
        finally:
            sql("UPDATE inventory.stock SET quantity = quantity - 5 WHERE product_id = %s", product)
        assert mine(await check_invariants(pool)) == []
        assert mine(await check_invariants(pool, full=True)) == []
    finally:
        await pool.close()


async def test_checkpoint_waits_for_a_ledger_row_that_commits_after_a_higher_id(mesh):
    """Ledger ids commit out of order: a transaction holding a low id while higher ids commit must
    keep the checkpoint below its id until it ends, or its row would never be summed."""
    await mesh.start("inventory_svc")
    slow, other = new_product_id(), new_product_id()
    await stock_product(admin_stub(mesh), slow, {1: 10})
    pool = await open_pool(mesh.database_url, schema="inventory", min_size=1, max_size=2)

    def through_id() -> int:
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            return conn.execute("SELECT through_id FROM inventory.ledger_checkpoint_horizon").fetchone()[0]

    try:
        with psycopg.connect(mesh.database_url) as open_tx:  # a receive of 2 units, left uncommitted
            (low_id,) = open_tx.execute(
                "INSERT INTO inventory.stock_ledger (product_id, warehouse_id, movement, quantity_delta,"
                " reserved_delta, actor) VALUES (%s, 1, 'receive', 2, 0, 'test') RETURNING id",
                (slow,),
            ).fetchone()
            open_tx.execute(
                "UPDATE inventory.stock SET quantity = quantity + 2 WHERE product_id = %s AND warehouse_id = 1",
                (slow,),
            )
            await stock_product(admin_stub(mesh), other, {1: 5})  # higher ledger ids, committed
            for _ in range(5):
                await check_invariants(pool)
                await asyncio.sleep(0.1)
            assert through_id() < low_id
            open_tx.commit()
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            (last_id,) = conn.execute("SELECT max(id) FROM inventory.stock_ledger").fetchone()
        deadline = time.monotonic() + 60
        while through_id() < last_id and time.monotonic() < deadline:
            assert [v for v in await check_invariants(pool) if v["product_id"] in (slow, other)] == []
            await asyncio.sleep(0.2)
        assert through_id() >= last_id
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            folded = conn.execute(
                "SELECT quantity_sum FROM inventory.ledger_checkpoint WHERE product_id = %s AND warehouse_id = 1",
                (slow,),
            ).fetchone()
        assert folded == (12,)
    finally:
        await pool.close()


BAD_RESERVES = [
    (dict(owner="u", product_id=1, quantity=0), grpc.StatusCode.INVALID_ARGUMENT, "quantity"),
    (dict(owner="u", product_id=1, quantity=-3), grpc.StatusCode.INVALID_ARGUMENT, "quantity"),
    (dict(owner="u", product_id=1, quantity=10**6), grpc.StatusCode.INVALID_ARGUMENT, "quantity"),
    (dict(owner="", product_id=1, quantity=1), grpc.StatusCode.INVALID_ARGUMENT, "owner"),
    (dict(owner="u", product_id=0, quantity=1), grpc.StatusCode.INVALID_ARGUMENT, "product_id"),
    (
        dict(owner="u", product_id=1, quantity=1, ttl=duration_pb2.Duration(seconds=10**7)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ttl",
    ),
    (
        dict(owner="u", product_id=1, quantity=1, ttl=duration_pb2.Duration(nanos=5)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ttl",
    ),
]


@pytest.mark.parametrize(("fields", "code", "field"), BAD_RESERVES)
async def test_bad_reserve_input_is_rejected_naming_the_field(mesh, fields, code, field):
    await mesh.start("inventory_svc")
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 5})
    if fields["product_id"] == 1:
        fields = {**fields, "product_id": product}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service_stub(mesh).ReserveStock(pb.ReserveStockRequest(**fields))
    assert caught.value.code() == code
    assert caught.value.details().startswith(field)
    stock = (await service_stub(mesh).GetStock(pb.GetStockRequest(product_id=product))).stock
    assert stock.reserved == 0


async def test_unknown_things_are_not_found_and_change_nothing(mesh):
    await mesh.start("inventory_svc")
    admin, svc = admin_stub(mesh), service_stub(mesh)
    product = new_product_id()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "product_id" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=999, quantity=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "warehouse_id" in caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="not-a-uuid"))
    assert (
        caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reservation_id" in caught.value.details()
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.GetStock(pb.GetStockRequest(product_id=product))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_rejected_extend_or_expiry_call_changes_nothing(mesh):
    """ExtendReservations naming an unknown id answered NOT_FOUND after committing the extends (and
    the on-the-spot expiries) of the ids it did know; ExpireReservations with a negative limit read
    it as 0 and expired every due reservation."""
    await mesh.start("inventory_svc")
    admin, svc = admin_stub(mesh), service_stub(mesh)
    product = new_product_id()
    await stock_product(admin, product, {1: 5})
    ttl = duration_pb2.Duration(seconds=60)
    known = (
        await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=1, ttl=ttl))
    ).reservations[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await svc.ExtendReservations(
            pb.ExtendReservationsRequest(
                reservation_ids=[known.id, str(uuid.uuid4())], ttl=duration_pb2.Duration(seconds=3600)
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    [after] = (
        await svc.BatchGetReservations(pb.BatchGetReservationsRequest(reservation_ids=[known.id]))
    ).reservations
    assert after.expires_at == known.expires_at

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ExpireReservations(pb.ExpireReservationsRequest(limit=-1))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in caught.value.details()
    [after] = (
        await svc.BatchGetReservations(pb.BatchGetReservationsRequest(reservation_ids=[known.id]))
    ).reservations
    assert after.status == pb.RESERVATION_STATUS_ACTIVE


async def test_one_request_id_sent_for_two_products_at_once_reserves_only_once(mesh):
    """The same request id for two products in flight together, each stocked in another warehouse:
    the two batches (never serialized by a stock row) both missed the other's uncommitted row and
    the unique key (request_id, warehouse_id) let both in, so both callers held units under one id.
    Exactly one may reserve; the other is REQUEST_ID_REUSED."""
    await mesh.start("inventory_svc")
    admin, svc = admin_stub(mesh), service_stub(mesh)
    first, second = new_product_id(), new_product_id()
    await stock_product(admin, first, {1: 100})
    await stock_product(admin, second, {2: 100})

    async def reserve(product: int, request_id: str) -> str:
        try:
            await svc.ReserveStock(
                pb.ReserveStockRequest(owner="u", product_id=product, quantity=1, request_id=request_id)
            )
            return "reserved"
        except grpc.aio.AioRpcError as error:
            return reason_of(error)

    ids = [f"twice-{uuid.uuid4()}" for _ in range(30)]
    outcomes = await asyncio.gather(*(reserve(p, rid) for rid in ids for p in (first, second)))
    pairs = [sorted(outcomes[i : i + 2]) for i in range(0, len(outcomes), 2)]
    assert pairs == [["REQUEST_ID_REUSED", "reserved"]] * len(ids), pairs
    with psycopg.connect(mesh.database_url) as conn:
        spread = conn.execute(
            "SELECT request_id, count(DISTINCT product_id) FROM inventory.reservations"
            " WHERE request_id = ANY(%s) GROUP BY request_id",
            (ids,),
        ).fetchall()
    assert sorted(n for _, n in spread) == [1] * len(ids)


async def test_releasing_a_lapsed_reservation_expires_it_whatever_the_sweeper_did(mesh):
    """Past its expiry but not yet swept, a partial release answered ACTIVE with the rest (expired
    by the next sweep), a whole one recorded a release: the sweeper's timing decided. Like commit and
    extend, release now expires it on the spot: EXPIRED, its units back, an expire in the ledger."""
    await mesh.start("inventory_svc")
    admin, svc = admin_stub(mesh), service_stub(mesh)
    product = new_product_id()
    await stock_product(admin, product, {1: 5})
    held = (
        await svc.ReserveStock(pb.ReserveStockRequest(owner="u", product_id=product, quantity=3))
    ).reservations[0]
    with psycopg.connect(mesh.database_url) as conn:
        conn.execute(
            "UPDATE inventory.reservations SET expires_at = now() - interval '1 second' WHERE id = %s",
            (held.id,),
        )
    released = (
        await svc.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=held.id, quantity=1))
    ).reservation
    assert (released.status, released.quantity) == (pb.RESERVATION_STATUS_EXPIRED, 3)
    stock = (await svc.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, stock.reserved) == (5, 0)
    with psycopg.connect(mesh.database_url) as conn:
        movements = conn.execute(
            "SELECT movement FROM inventory.stock_ledger WHERE reservation_id = %s ORDER BY id", (held.id,)
        ).fetchall()
    assert [m for (m,) in movements] == ["reserve", "expire"]


async def test_access_rules_come_from_the_proto(mesh):
    await mesh.start("inventory_svc")
    from shop.inventory.v1 import inventory_pb2_grpc

    user = inventory_pb2_grpc.InventoryServiceStub(mesh.channel("inventory_svc", "mallory", ()))
    anonymous = inventory_pb2_grpc.InventoryServiceStub(
        mesh.channel("inventory_svc", "anonymous", ("anonymous",))
    )
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 1})
    assert (await anonymous.GetStock(pb.GetStockRequest(product_id=product))).stock.quantity == 1
    for call in (
        user.ReserveStock(pb.ReserveStockRequest(owner="mallory", product_id=product, quantity=1)),
        user.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=100)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # plain metadata claiming admin, with no signed token, gets nothing
    async with grpc.aio.insecure_channel(mesh.addr("inventory_svc")) as raw:
        stub = inventory_pb2_grpc.InventoryServiceStub(raw)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AdjustStock(
                pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=100),
                metadata=[("roles", "admin")],
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_owners_and_request_ids_reach_the_database_exactly_as_sent(mesh):
    """reserve_batch's arrays are sent as array literals built in store.py: quoting must hold for
    any string (quotes, backslashes, braces, commas, spaces, the word NULL, non-ASCII)."""
    await mesh.start("inventory_svc")
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 50})
    owners = ['a"b', "c\\d", "{e,f}", " g ", "NULL", 'h\\"i', "ü ß 日本", "j'k", ",", '\\"']
    replies = await asyncio.gather(
        *(
            service_stub(mesh).ReserveStock(
                pb.ReserveStockRequest(owner=o, product_id=product, quantity=1, request_id=f"{o}-{i}")
            )
            for i, o in enumerate(owners)
        )
    )
    with psycopg.connect(mesh.database_url) as conn:
        stored = dict(
            conn.execute(
                "SELECT id::TEXT, owner || '|' || request_id FROM inventory.reservations WHERE product_id = %s",
                (product,),
            ).fetchall()
        )
    # the service strips surrounding spaces from both before they are stored
    assert [stored[r.reservations[0].id] for r in replies] == [
        f"{o.strip()}|{f'{o}-{i}'.strip()}" for i, o in enumerate(owners)
    ]


async def test_a_reserve_request_id_answers_only_its_own_request_and_says_what_its_units_are_now(mesh):
    """A replay returns the first call's reservations as they are now; the id sent for another
    product, owner or quantity is REQUEST_ID_REUSED (it answered the first request's reservations as
    if they were this one's)."""
    await mesh.start("inventory_svc")
    stub = service_stub(mesh)
    product, other = new_product_id(), new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 5})
    await stock_product(admin_stub(mesh), other, {1: 5})
    request_id = str(uuid.uuid4())

    def reserve(product_id: int, owner: str = "cart-1", quantity: int = 2) -> pb.ReserveStockRequest:
        return pb.ReserveStockRequest(
            owner=owner, product_id=product_id, quantity=quantity, request_id=request_id
        )

    first = (await stub.ReserveStock(reserve(product))).reservations
    again = (await stub.ReserveStock(reserve(product))).reservations
    assert [r.id for r in again] == [r.id for r in first] and len(first) == 1
    assert again[0].status == pb.RESERVATION_STATUS_ACTIVE

    for reused in (reserve(other), reserve(product, owner="cart-2"), reserve(product, quantity=3)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ReserveStock(reused)
        assert (caught.value.code(), reason_of(caught.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "REQUEST_ID_REUSED",
        )
    assert (await stub.GetStock(pb.GetStockRequest(product_id=other))).stock.reserved == 0
    # a partial release lowers the reservation's quantity, not what its request asked for
    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=first[0].id, quantity=1))
    partly = (await stub.ReserveStock(reserve(product))).reservations
    assert [(r.id, r.quantity) for r in partly] == [(first[0].id, 1)]

    await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id=first[0].id))
    replayed = (await stub.ReserveStock(reserve(product))).reservations
    assert [(r.id, r.status) for r in replayed] == [(first[0].id, pb.RESERVATION_STATUS_RELEASED)]
    assert (await stub.GetStock(pb.GetStockRequest(product_id=product))).stock.reserved == 0
    assert broken(invariant_violations(mesh.database_url, [product, other])) == []


async def test_two_copies_of_a_request_id_in_one_batch_reserve_once(mesh):
    """Neither copy is committed when the batch runs, so the database saw both as new: with 1 unit left
    in EAST the first took it and the second took one of WEST, two units held under one request id."""
    await mesh.start("inventory_svc")
    product = new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 2, 2: 10})
    pool = await open_pool(mesh.database_url, schema="inventory", min_size=1, max_size=4)
    try:
        settings = InventorySettings(database_url=mesh.database_url, reserve_batch_window_ms=20)
        service = InventoryService(pool=pool, settings=settings)
        ttl = dt.timedelta(minutes=5)

        async def behind_a_lone_request(*requests: ReserveRequest) -> list:
            """The first request flies alone; these queue behind it and share the next batch."""
            lone = ReserveRequest(owner="cart-0", product_id=product, quantity=1, ttl=ttl)
            batches = service._batcher.batches
            flying = asyncio.ensure_future(service._batcher.submit(product, lone))
            await asyncio.sleep(0)
            outcomes = await asyncio.gather(
                *(service._batcher.submit(product, r) for r in requests), return_exceptions=True
            )
            await flying
            assert service._batcher.batches == batches + 2  # the lone one's and theirs
            return outcomes

        copy = ReserveRequest(
            owner="cart-1", product_id=product, quantity=1, ttl=ttl, request_id=str(uuid.uuid4())
        )
        twice = await behind_a_lone_request(copy, copy)
        assert [r.id for r in twice[0]] == [r.id for r in twice[1]] and len(twice[0]) == 1
        other = dataclasses.replace(copy, request_id=str(uuid.uuid4()))
        mixed = await behind_a_lone_request(other, dataclasses.replace(other, quantity=3))
    finally:
        await pool.close()
    assert sum(r.quantity for r in mixed[0]) == 1
    assert isinstance(mixed[1], FailedPrecondition) and mixed[1].reason == "REQUEST_ID_REUSED"
    held = await service_stub(mesh).GetStock(pb.GetStockRequest(product_id=product))
    assert held.stock.reserved == 4  # the two lone requests' units and one per request id
    assert broken(invariant_violations(mesh.database_url, [product])) == []


async def test_stock_past_the_int32_total_is_a_clear_invalid_argument(mesh):
    """ProductStock and the events carry a product's total in int32: a receive or adjustment taking
    it past 2^31-1 units was an INTERNAL 'integer out of range'; it is INVALID_ARGUMENT naming the field."""
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    product = new_product_id()
    await stock_product(admin, product, {1: 10, 2: 10})
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:  # near the limit without 2148 calls
        conn.execute(
            "UPDATE inventory.stock SET quantity = %s WHERE product_id = %s AND warehouse_id = 1",
            (2**31 - 1 - 15, product),
        )
    for call in (
        lambda: admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=2, quantity=6)),
        # into the nearly full warehouse itself: its own INT row overflowed first (an INTERNAL)
        lambda: admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=16)),
        lambda: admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=2, delta=6)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "delta" in caught.value.details()
    stock = (await admin.GetStock(pb.GetStockRequest(product_id=product))).stock
    assert (stock.quantity, [w.quantity for w in stock.warehouses]) == (2**31 - 1 - 5, [2**31 - 1 - 15, 10])
    received = await admin.ReceiveStock(
        pb.ReceiveStockRequest(product_id=product, warehouse_id=2, quantity=5)
    )
    assert received.stock.quantity == 2**31 - 1  # up to the limit itself is fine


def test_the_previous_versions_reserve_function_keeps_its_result_type_for_a_rollout(mesh):
    """During a rollout the previous version's pods keep serving with their prepared
    `SELECT * FROM reserve_batch(...)`: a changed result type would fail every one of their reserves
    ('cached plan must not change result type'), so the replay checks came as reserve_batch_v2."""
    with psycopg.connect(mesh.database_url) as conn:
        columns = {
            name: [
                c
                for (c,) in conn.execute(
                    "SELECT unnest(proargnames[pronargs + 1:]) FROM pg_proc p JOIN pg_namespace n"
                    " ON n.oid = p.pronamespace WHERE n.nspname = 'inventory' AND p.proname = %s",
                    (name,),
                ).fetchall()
            ]
            for name in ("reserve_batch", "reserve_batch_v2")
        }
    previous = ["idx", "reservation_id", "warehouse_id", "quantity", "expires_at", "outcome", "available"]
    assert columns == {"reserve_batch": previous, "reserve_batch_v2": [*previous, "status"]}


async def test_a_request_id_committed_by_another_transaction_mid_batch_fails_only_its_own_request(mesh):
    """The batch checks request ids, then inserts: an id committed in between by another transaction
    (the same id sent for another product, or through another replica) made the insert a unique
    violation, which rolled the whole batch back and answered everyone in it with an INTERNAL."""
    await mesh.start("inventory_svc")
    stub = service_stub(mesh)
    product, other = new_product_id(), new_product_id()
    await stock_product(admin_stub(mesh), product, {1: 5})
    await stock_product(admin_stub(mesh), other, {1: 5})
    request_id = str(uuid.uuid4())
    async with await psycopg.AsyncConnection.connect(mesh.database_url) as rival:
        # the other product's reservation under the same id, inserted but not committed yet
        await rival.execute(
            "INSERT INTO inventory.reservations (id, owner, product_id, warehouse_id, quantity, status,"
            " expires_at, request_id, requested_quantity) VALUES (%s, 'cart-9', %s, 1, 1, 'released', now(), %s, 1)",
            (uuid.uuid4(), other, request_id),
        )
        calls = [
            asyncio.ensure_future(
                stub.ReserveStock(
                    pb.ReserveStockRequest(
                        owner="cart-1", product_id=product, quantity=2, request_id=request_id
                    )
                )
            ),
            asyncio.ensure_future(
                stub.ReserveStock(pb.ReserveStockRequest(owner="cart-2", product_id=product, quantity=1))
            ),
        ]
        async with await psycopg.AsyncConnection.connect(mesh.database_url, autocommit=True) as watcher:
            for _ in range(200):  # until the batch's insert waits on the uncommitted row
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%%reserve_batch_v2%%'"
                )
                if (await cur.fetchone())[0]:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the reserve batch never waited on the uncommitted request id")
        await rival.commit()
        mine, bystander = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(mine, grpc.aio.AioRpcError), mine
    assert (mine.code(), reason_of(mine)) == (grpc.StatusCode.FAILED_PRECONDITION, "REQUEST_ID_REUSED")
    assert not isinstance(bystander, Exception), bystander
    assert sum(r.quantity for r in bystander.reservations) == 1
    assert (await stub.GetStock(pb.GetStockRequest(product_id=product))).stock.reserved == 1
    assert broken(invariant_violations(mesh.database_url, [product, other])) == []
