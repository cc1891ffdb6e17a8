"""Audit trail against real PostgreSQL and real gRPC: one record per audited action, none for a
rejected one, tamper evidence, admin-only reads, retention cutoffs."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import psycopg
import pytest
from shop.audit.v1 import audit_pb2, audit_pb2_grpc
from shop.inventory.v1 import inventory_pb2 as pb

from shopctl.audit import retention_all, verify_all
from tests.integration.inventory_helpers import admin_stub, new_product_id


def audit_stub(mesh, subject: str, roles: tuple[str, ...]):
    return audit_pb2_grpc.AuditServiceStub(mesh.channel("inventory_svc", subject, roles))


async def test_each_audited_action_leaves_one_record_with_its_actor_and_a_rejected_one_none(mesh):
    await mesh.start("inventory_svc")
    product = new_product_id()
    admin = admin_stub(mesh)  # subject "ops-admin"
    await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=5))
    await admin.AdjustStock(
        pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=-2, reason="damaged")
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=-50))
    reply = await audit_stub(mesh, "ops-admin", ("admin",)).ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(resource=f"stock/{product}")
    )
    assert [r.action for r in reply.records] == ["stock.adjust", "stock.receive"]  # newest first
    assert {r.actor for r in reply.records} == {"ops-admin"}
    assert all("admin" in r.actor_roles for r in reply.records)
    adjust = reply.records[0]
    assert adjust.changes["quantity"]["before"] == 5 and adjust.changes["quantity"]["after"] == 3
    assert adjust.changes["reason"] == "damaged"
    by_actor = await audit_stub(mesh, "ops-admin", ("admin",)).ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(actor="ops-admin", page_size=1)
    )
    assert len(by_actor.records) == 1 and by_actor.next_page_token


async def test_non_admins_cannot_read_the_audit_log(mesh):
    await mesh.start("inventory_svc")
    for roles in ((), ("service",)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await audit_stub(mesh, "someone", roles).ListAuditRecords(audit_pb2.ListAuditRecordsRequest())
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_verify_detects_an_edited_row_and_a_deleted_newest_row(mesh):
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    edited_product, deleted_product = new_product_id(), new_product_id()
    for product in (edited_product, deleted_product):
        await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=5))
        await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=1))
    assert not [
        p
        for p in (await verify_all(mesh.database_url))["inventory"]
        if p.resource.endswith(str(edited_product))
    ]
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        edited_id = conn.execute(
            "UPDATE inventory.audit_log SET actor = 'mallory' WHERE resource = %s AND chain_seq = 1 RETURNING id",
            (f"stock/{edited_product}",),
        ).fetchone()[0]
        conn.execute(
            "DELETE FROM inventory.audit_log WHERE resource = %s AND chain_seq = 2",
            (f"stock/{deleted_product}",),
        )
    try:
        problems = (await verify_all(mesh.database_url))["inventory"]
        edited = [p for p in problems if p.resource == f"stock/{edited_product}"]
        deleted = [p for p in problems if p.resource == f"stock/{deleted_product}"]
        assert any(p.record_id == edited_id and "edited" in p.problem for p in edited)
        assert any("deleted" in p.problem for p in deleted)
    finally:  # leave the shared database verifiable for other tests
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            for product in (edited_product, deleted_product):
                conn.execute("DELETE FROM inventory.audit_log WHERE resource = %s", (f"stock/{product}",))
                conn.execute(
                    "DELETE FROM inventory.audit_chain_heads WHERE resource = %s", (f"stock/{product}",)
                )


async def test_retention_moves_and_purges_exactly_the_rows_past_each_cutoff(mesh):
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    product = new_product_id()
    await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=5))
    resource = f"stock/{product}"

    def counts() -> tuple[int, int]:
        with psycopg.connect(mesh.database_url) as conn:
            live = conn.execute(
                "SELECT count(*) FROM inventory.audit_log WHERE resource = %s", (resource,)
            ).fetchone()[0]
            archived = conn.execute(
                "SELECT count(*) FROM inventory.audit_log_archive WHERE resource = %s", (resource,)
            ).fetchone()[0]
        return live, archived

    now = dt.datetime.now(dt.UTC)
    await retention_all(now + dt.timedelta(days=300), database_url=mesh.database_url)
    assert counts() == (1, 0)  # younger than a year: stays hot
    await retention_all(now + dt.timedelta(days=400), batch_size=2, database_url=mesh.database_url)
    assert counts() == (0, 1)  # past one year: archived, still verifiable
    problems = (await verify_all(mesh.database_url))["inventory"]
    assert not [p for p in problems if p.resource == resource]
    await retention_all(now + dt.timedelta(days=3 * 365 + 1), database_url=mesh.database_url)
    assert counts() == (0, 0)  # past three years: purged, and the chain still verifies from its new base
    await admin.AdjustStock(pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=1))
    problems = (await verify_all(mesh.database_url))["inventory"]
    assert not [p for p in problems if p.resource == resource]


async def test_retention_never_purges_records_that_do_not_verify(mesh):
    """Backdating every record of a chain past the 3-year cutoff (hashes left as they were) and then
    running retention purged them and re-based the chain's head on them: verify found nothing wrong,
    the edit gone with its evidence. Edited records are kept now, and verify names them."""
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    product = new_product_id()
    resource = f"stock/{product}"
    for _ in range(2):
        await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=5))
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE inventory.audit_log SET occurred_at = occurred_at - interval '4 years' WHERE resource = %s",
            (resource,),
        )
    try:
        await retention_all(dt.datetime.now(dt.UTC), database_url=mesh.database_url)
        with psycopg.connect(mesh.database_url) as conn:
            kept = conn.execute(
                "SELECT chain_seq FROM inventory.audit_log_archive WHERE resource = %s ORDER BY chain_seq",
                (resource,),
            ).fetchall()
        assert kept == [(1,), (2,)]  # archived (past one year) but not purged
        problems = [p for p in (await verify_all(mesh.database_url))["inventory"] if p.resource == resource]
        assert any(p.chain_seq == 1 and "edited" in p.problem for p in problems)
    finally:  # leave the shared database verifiable for other tests
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            for table in ("audit_log", "audit_log_archive", "audit_chain_heads"):
                conn.execute(f"DELETE FROM inventory.{table} WHERE resource = %s", (resource,))


async def test_a_chain_that_does_not_verify_never_holds_up_the_purge_of_the_others(mesh):
    """The purge walked candidates in resource order, the first batch_size of them each time: an
    edited chain longer than a batch came first in every batch, purged nothing, and the loop stopped
    there for good; no chain sorted after it was purged again."""
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    edited, intact = sorted(f"stock/{new_product_id()}" for _ in range(2))
    for resource, records in ((edited, 3), (intact, 2)):
        product = int(resource.split("/")[1])
        for _ in range(records):
            await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=1))
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE inventory.audit_log SET actor = 'mallory' WHERE resource = %s AND chain_seq = 1",
            (edited,),
        )

    def archived(resource: str) -> int:
        with psycopg.connect(mesh.database_url) as conn:
            return conn.execute(
                "SELECT count(*) FROM inventory.audit_log_archive WHERE resource = %s", (resource,)
            ).fetchone()[0]

    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3 * 365 + 1)
        await retention_all(later, batch_size=2, database_url=mesh.database_url)
        assert (archived(edited), archived(intact)) == (3, 0)
    finally:  # leave the shared database verifiable for other tests
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            for table in ("audit_log", "audit_log_archive", "audit_chain_heads"):
                conn.execute(f"DELETE FROM inventory.{table} WHERE resource = %s", (edited,))


async def test_audit_record_carries_the_callers_trace_id(mesh):
    await mesh.start("inventory_svc")
    product = new_product_id()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await admin_stub(mesh).ReceiveStock(
        pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=1),
        metadata=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"), ("x-request-id", "req-audit-1")],
    )
    reply = await audit_stub(mesh, "ops-admin", ("admin",)).ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(resource=f"stock/{product}")
    )
    assert reply.records[0].trace_id == trace_id
    assert reply.records[0].request_id == "req-audit-1"


async def test_verify_reports_nothing_while_audited_writes_go_on(mesh):
    """verify read the heads and then the records: a write committed between the two reads looked
    like tampering on a live system. It reads both in one snapshot now."""
    await mesh.start("inventory_svc")
    admin = admin_stub(mesh)
    product = new_product_id()
    resource = f"stock/{product}"
    await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=1))
    stop = asyncio.Event()

    async def keep_writing() -> int:
        writes = 0
        while not stop.is_set():
            await admin.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=1))
            writes += 1
        return writes

    writer = asyncio.ensure_future(keep_writing())
    try:
        false_alarms = []
        for _ in range(25):
            problems = (await verify_all(mesh.database_url))["inventory"]
            false_alarms += [p for p in problems if p.resource == resource]
    finally:
        stop.set()
        writes = await writer
    assert writes > 25, "the writer did not run alongside the checks"
    assert false_alarms == []
