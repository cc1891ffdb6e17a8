"""Shared helpers for inventory tests: stubs with principals, invariant checks scoped to products."""

from __future__ import annotations

import itertools
import os
import secrets

import grpc
import psycopg
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc

from meshkit.errors import error_info_of

_ids = itertools.count(int.from_bytes(secrets.token_bytes(3), "big") * 1000 + os.getpid() % 1000)


def new_product_id() -> int:
    return 10_000_000 + next(_ids)


def service_stub(mesh) -> inventory_pb2_grpc.InventoryServiceStub:
    return inventory_pb2_grpc.InventoryServiceStub(mesh.channel("inventory_svc", "order_svc", ("service",)))


def admin_stub(mesh) -> inventory_pb2_grpc.InventoryServiceStub:
    return inventory_pb2_grpc.InventoryServiceStub(mesh.channel("inventory_svc", "ops-admin", ("admin",)))


async def stock_product(stub, product_id: int, per_warehouse: dict[int, int]) -> None:
    for warehouse_id, quantity in per_warehouse.items():
        await stub.ReceiveStock(
            pb.ReceiveStockRequest(product_id=product_id, warehouse_id=warehouse_id, quantity=quantity)
        )


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(error)
    return info.reason if info else ""


def invariant_violations(database_url: str, product_ids: list[int]) -> list[tuple]:
    """Rows of these products breaking: reserved == active sum, 0<=reserved<=quantity, ledger == stock."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            """
            SELECT s.product_id, s.warehouse_id, s.quantity, s.reserved,
                   (SELECT coalesce(sum(quantity), 0) FROM inventory.reservations r
                     WHERE r.product_id = s.product_id AND r.warehouse_id = s.warehouse_id
                       AND r.status = 'active') AS held,
                   (SELECT coalesce(sum(quantity_delta), 0) FROM inventory.stock_ledger l
                     WHERE l.product_id = s.product_id AND l.warehouse_id = s.warehouse_id) AS lq,
                   (SELECT coalesce(sum(reserved_delta), 0) FROM inventory.stock_ledger l
                     WHERE l.product_id = s.product_id AND l.warehouse_id = s.warehouse_id) AS lr
              FROM inventory.stock s WHERE s.product_id = ANY(%s)
            """,
            (product_ids,),
        ).fetchall()


def broken(rows: list[tuple]) -> list[tuple]:
    return [r for r in rows if not (0 <= r[3] <= r[2] and r[3] == r[4] and r[2] == r[5] and r[3] == r[6])]
