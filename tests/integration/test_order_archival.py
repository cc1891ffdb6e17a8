"""Archival and retention with an injected clock: exactly the old, finished orders are archived and
anonymized, in resumable batches; the cold tier is read back; the purge drops only what is past 7 years.

Orders are made through the real services, then backdated to 2001-2004; the jobs run at `now` in
2005 and 2008, so orders of other tests (created today) can never qualify.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys

import grpc
import pytest
from shop.common.v1 import address_pb2
from shop.order.v1 import order_pb2

from meshkit.db import open_pool
from order_svc import archival, metrics
from tests.integration.order_helpers import (
    add,
    admin_orders,
    checkout_request,
    new_key,
    new_product,
    orders,
    sql,
    start_order_mesh,
    user_id,
)

S = order_pb2
BILLING = address_pb2.Address(
    name="Acme Ltd", line1="1 Billing Way", city="Leeds", postal_code="LS1", country_code="GB"
)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


async def _order(mesh, product: int, end: str, created: str) -> str:
    """An order driven to `end` through the services, then backdated to `created`."""
    user = user_id()
    await add(mesh, user, product, 1)
    token = "tok_decline" if end == "failed" else ""
    request = checkout_request(new_key(), token, billing_address=BILLING, notes=f"note for {end}")
    try:
        order_id = (await orders(mesh, user).Checkout(request)).order.id
    except grpc.aio.AioRpcError as error:
        assert end == "failed", error.details()
        order_id = sql(mesh.database_url, "SELECT id FROM orders.orders WHERE user_id = %s", user)[0][0]
    admin = admin_orders(mesh)
    if end in ("shipped", "delivered", "refunded"):
        await admin.ShipOrder(S.ShipOrderRequest(order_id=str(order_id), tracking_number="TRK"))
    if end in ("delivered", "refunded"):
        await admin.DeliverOrder(S.DeliverOrderRequest(order_id=str(order_id)))
    if end == "refunded":
        await admin.RefundOrder(S.RefundOrderRequest(order_id=str(order_id)))
    if end == "cancelled":
        await orders(mesh, user).CancelOrder(S.CancelOrderRequest(order_id=str(order_id)))
    sql(mesh.database_url, "UPDATE orders.orders SET created_at = %s WHERE id = %s", _at(created), order_id)
    return str(order_id)


def _live(mesh, order_id: str) -> tuple:
    return sql(
        mesh.database_url,
        "SELECT status, shipping_address, billing_address, notes, archive_status, archived_at IS NOT NULL,"
        " checkout_outcome IS NULL FROM orders.orders WHERE id = %s",
        order_id,
    )[0]


def _archived_ids(mesh, ids: list[str]) -> set[str]:
    rows = sql(
        mesh.database_url,
        "SELECT order_id::TEXT FROM orders.orders_archive WHERE order_id::TEXT = ANY(%s)",
        ids,
    )
    return {r[0] for r in rows}


async def test_archive_export_and_purge_move_exactly_the_right_orders(mesh, tmp_path):
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=50)
    archivable = {
        "delivered": await _order(mesh, product, "delivered", "2001-03-01T10:00:00"),
        "cancelled": await _order(mesh, product, "cancelled", "2001-03-02T10:00:00"),
        "refunded": await _order(mesh, product, "refunded", "2001-03-03T10:00:00"),
        "failed": await _order(mesh, product, "failed", "2001-03-04T10:00:00"),
        "refunded-2002": await _order(mesh, product, "refunded", "2002-01-01T10:00:00"),
    }
    kept = {
        "paid": await _order(mesh, product, "paid", "2001-03-01T09:00:00"),
        "shipped": await _order(mesh, product, "shipped", "2001-03-01T09:00:00"),
        "recent-failed": await _order(mesh, product, "failed", "2004-09-01T10:00:00"),
        "recent-delivered": await _order(mesh, product, "delivered", "2004-09-01T10:00:00"),
    }
    mine = [*archivable.values(), *kept.values()]
    before = {order_id: _live(mesh, order_id) for order_id in mine}
    now = _at("2005-06-01T00:00:00")
    counted = metrics.orders_archived_total._value.get()

    pool = await open_pool(mesh.database_url, schema="orders", min_size=1, max_size=2)
    try:
        # one batch of two, as if the job stopped there
        assert await archival.archive_orders(pool, now=now, batch_size=2, max_batches=1) == 2
        assert _archived_ids(mesh, mine) == {archivable["delivered"], archivable["cancelled"]}
        assert metrics.orders_archived_total._value.get() == counted + 2
        first_files = await archival.export_archives(pool, directory=tmp_path, now=now)

        # the operator command resumes where the job stopped
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "shopctl", "orders", "archive", "--now", now.isoformat()],
            env={**os.environ, **mesh.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["archived"] == 3
        assert _archived_ids(mesh, mine) == set(archivable.values())
        second_files = await archival.export_archives(pool, directory=tmp_path, now=now)
        assert await archival.export_archives(pool, directory=tmp_path, now=now) == []  # nothing left

        for name, order_id in archivable.items():
            status, shipping, billing, notes, archive_status, archived, outcome_cleared = _live(
                mesh, order_id
            )
            assert (shipping, billing, notes) == ({"anonymized": True}, None, None), name
            assert (archive_status, archived, outcome_cleared) == ("archived", True, True), name
            assert status == before[order_id][0]
            data = sql(
                mesh.database_url,
                "SELECT archive_data FROM orders.orders_archive WHERE order_id = %s",
                order_id,
            )[0][0]
            assert (
                data["shipping_address"] == before[order_id][1]
                and data["shipping_address"]["city"] == "London"
            )
            assert data["billing_address"]["city"] == "Leeds" and data["notes"].startswith("note for")
            assert [(i["product_id"], i["quantity"]) for i in data["items"]] == [(product, 1)]
        for name, order_id in kept.items():
            assert _live(mesh, order_id) == before[order_id], name
        shown = (await admin_orders(mesh).GetOrder(S.GetOrderRequest(order_id=archivable["delivered"]))).order
        assert shown.shipping_address.name == "anonymized" and not shown.HasField("billing_address")

        # the cold tier reads back what the warm tier held
        exported = archival.read_exports(tmp_path)
        assert set(exported) == set(archivable.values())
        for order_id, record in exported.items():
            warm = sql(
                mesh.database_url,
                "SELECT archive_data FROM orders.orders_archive WHERE order_id = %s",
                order_id,
            )[0][0]
            assert record["archive_data"] == warm

        # 2008-06-01: past 7 years are the 2001 orders; the 2002 one stays, as does its file
        purged, removed = await archival.purge_archives(
            pool, now=_at("2008-06-01T00:00:00"), directory=tmp_path
        )
        assert purged == 4
        assert _archived_ids(mesh, mine) == {archivable["refunded-2002"]}
        assert removed == first_files and all(p.exists() for p in second_files)
    finally:
        await pool.close()


async def test_an_archived_order_stays_as_archived_and_a_half_done_refund_is_not_archived(mesh):
    """The archive (and the cold-tier file) is the order's final record: refunding an archived
    delivered order would leave it saying delivered/captured for good, and so would archiving an
    order whose refund was recorded but not finished (transition_to set)."""
    await start_order_mesh(mesh)
    product = await new_product(mesh, stock=10)
    archived = await _order(mesh, product, "delivered", "2001-05-01T10:00:00")
    refunding = await _order(mesh, product, "delivered", "2001-05-02T10:00:00")
    sql(  # a refund recorded, its refund and restock still to come (recovery finishes it)
        mesh.database_url,
        "UPDATE orders.orders SET transition_to = 'refunded', transition_reason = 'test' WHERE id = %s",
        refunding,
    )
    pool = await open_pool(mesh.database_url, schema="orders", min_size=1, max_size=2)
    try:
        await archival.archive_orders(pool, now=_at("2005-06-01T00:00:00"))
    finally:
        await pool.close()
    assert _archived_ids(mesh, [archived, refunding]) == {archived}

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_orders(mesh).RefundOrder(S.RefundOrderRequest(order_id=archived))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "archived" in caught.value.details()
    assert _live(mesh, archived)[0] == "delivered"
    payment = sql(mesh.database_url, "SELECT payment_status FROM orders.orders WHERE id = %s", archived)
    assert payment == [("captured",)]


def test_the_archive_command_refuses_a_batch_size_that_would_never_end(mesh):
    for size in ("0", "-5"):
        result = subprocess.run(
            [sys.executable, "-m", "shopctl", "orders", "archive", "--batch-size", size],
            env={**os.environ, **mesh.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "batch-size" in result.stderr, result.stderr


@pytest.mark.parametrize(("now", "cutoff"), [("2024-02-29T12:00:00", "2022-02-28T12:00:00")])
def test_two_years_before_a_leap_day_is_the_28th(now, cutoff):
    assert archival.years_before(_at(now), 2) == _at(cutoff)
