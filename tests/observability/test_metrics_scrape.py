"""Each service's /metrics serves the required series, and they move when the matching thing happens.

Real processes (tests.harness) on a private database (conftest.py), scraped over HTTP; each action is
a real RPC, a real expiry, a real broken row or a really unreachable Kafka.
"""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc

from tests.harness import Mesh
from tests.observability.scrape import scrape, wait_for

INVENTORY = "shop.inventory.v1.InventoryService"
# short job intervals so expiry and invariant checks happen within a test; a small pool so the
# saturation test can fill it
INVENTORY_ENV = {
    "SHOPMESH_EXPIRY_INTERVAL_SECONDS": "0.3",
    "SHOPMESH_INVARIANT_CHECK_INTERVAL_SECONDS": "0.3",
    "SHOPMESH_DB_POOL_MIN": "1",
    "SHOPMESH_DB_POOL_MAX": "3",
}
_next_product = int(time.time() * 1000) % 10_000_000 * 100


def new_product() -> int:
    global _next_product
    _next_product += 1
    return 900_000_000_000 + _next_product


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
async def inventory(obs_mesh: Mesh, private_database: str):
    env = {**INVENTORY_ENV, "SHOPMESH_DATABASE_URL": private_database}
    await obs_mesh.restart("inventory_svc", extra_env=env)
    yield InventoryUnderTest(obs_mesh, private_database, env)
    await obs_mesh.stop("inventory_svc")


class InventoryUnderTest:
    def __init__(self, mesh: Mesh, database_url: str, env: dict[str, str]) -> None:
        self.mesh = mesh
        self.database_url = database_url
        self.env = env
        self.url = mesh.metrics_url("inventory_svc")

    @property
    def stub(self) -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(
            self.mesh.channel("inventory_svc", "ops", ("admin", "service"))
        )

    async def stock(self, product_id: int, quantity: int) -> None:
        await self.stub.ReceiveStock(
            pb.ReceiveStockRequest(product_id=product_id, warehouse_id=1, quantity=quantity)
        )

    async def reserve(
        self, product_id: int, quantity: int, ttl_seconds: int = 600
    ) -> pb.ReserveStockResponse:
        return await self.stub.ReserveStock(
            pb.ReserveStockRequest(
                owner="obs-user",
                product_id=product_id,
                quantity=quantity,
                ttl=duration_pb2.Duration(seconds=ttl_seconds),
            )
        )

    async def restart(self, **overrides: str) -> None:
        await self.mesh.restart("inventory_svc", extra_env={**self.env, **overrides})


REQUIRED_AT_START = [
    ("outbox_backlog", {"service": "inventory_svc"}),
    ("outbox_oldest_age_seconds", {"service": "inventory_svc"}),
    ("outbox_relay_leader", {"service": "inventory_svc"}),
    ("db_pool_saturation", {"service": "inventory_svc"}),
    ("db_pool_waiting", {"service": "inventory_svc"}),
    ("reservation_sweeper_lag_seconds", {}),
    ("reservation_sweeper_last_run_timestamp_seconds", {}),
    ("inventory_oversell_total", {}),
    ("cart_abandonments_total", {}),
]


async def test_inventory_serves_the_required_series(inventory: InventoryUnderTest) -> None:
    samples = await wait_for(
        inventory.url, lambda s: all(s.get(name, **labels) is not None for name, labels in REQUIRED_AT_START)
    )
    missing = [f"{name}{labels}" for name, labels in REQUIRED_AT_START if samples.get(name, **labels) is None]
    assert missing == []
    assert samples.get("outbox_relay_leader", service="inventory_svc") == 1  # alone on its database
    assert samples.get("reservation_sweeper_last_run_timestamp_seconds") > time.time() - 30


async def test_reserve_outcomes_move_reservation_rpc_and_outbox_counters(
    inventory: InventoryUnderTest,
) -> None:
    product = new_product()
    await inventory.stock(product, 5)
    before = await scrape(inventory.url)
    await inventory.reserve(product, 2)
    with pytest.raises(grpc.aio.AioRpcError) as short:
        await inventory.reserve(product, 100)
    assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    published = before.value("outbox_published_total", service="inventory_svc")
    after = await wait_for(
        inventory.url, lambda s: s.value("outbox_published_total", service="inventory_svc") > published
    )

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("inventory_reservations_total", status="success") == 1
    assert delta("inventory_reservations_total", status="insufficient") == 1
    rpc = {"grpc_service": INVENTORY, "grpc_method": "ReserveStock"}
    assert delta("grpc_server_handled_total", **rpc, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **rpc, grpc_code="FAILED_PRECONDITION") == 1
    assert delta("grpc_server_handling_seconds_count", **rpc) == 2
    assert delta("grpc_server_handling_seconds_bucket", **rpc, le="+Inf") == 2
    assert delta("outbox_published_total", service="inventory_svc") >= 1


async def test_expiry_moves_sweeper_lag_then_abandonments(inventory: InventoryUnderTest) -> None:
    """A due reservation the sweeper cannot take (row locked by this test) shows up as sweeper lag;
    once unlocked the sweeper releases it, counts an abandonment and the lag falls back."""
    product = new_product()
    await inventory.stock(product, 3)
    before = await scrape(inventory.url)
    reservation = (await inventory.reserve(product, 1, ttl_seconds=1)).reservations[0]
    async with await psycopg.AsyncConnection.connect(inventory.database_url) as conn:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM inventory.reservations WHERE id = %s FOR UPDATE", (reservation.id,)
            )
            lagging = await wait_for(inventory.url, lambda s: s.value("reservation_sweeper_lag_seconds") >= 2)
            assert lagging.value("reservation_sweeper_lag_seconds") >= 2
            assert lagging.value("cart_abandonments_total") == before.value("cart_abandonments_total")
            assert lagging.value("reservation_sweeper_last_run_timestamp_seconds") > before.value(
                "reservation_sweeper_last_run_timestamp_seconds"
            )  # runs go on: the sweeper skips the locked row, it is not stuck
    released = await wait_for(
        inventory.url,
        lambda s: (
            s.value("cart_abandonments_total") > before.value("cart_abandonments_total")
            and s.value("reservation_sweeper_lag_seconds") < 1
        ),
    )
    assert released.value("cart_abandonments_total") - before.value("cart_abandonments_total") == 1
    assert released.value("reservation_sweeper_lag_seconds") < 1


async def test_broken_invariant_moves_the_oversell_counter(inventory: InventoryUnderTest) -> None:
    product = new_product()
    await inventory.stock(product, 4)
    before = await scrape(inventory.url)
    with psycopg.connect(inventory.database_url, autocommit=True) as conn:
        conn.execute("UPDATE inventory.stock SET reserved = 1 WHERE product_id = %s", (product,))
    try:
        after = await wait_for(
            inventory.url,
            lambda s: s.value("inventory_oversell_total") > before.value("inventory_oversell_total"),
        )
        assert after.value("inventory_oversell_total") > before.value("inventory_oversell_total")
    finally:
        with psycopg.connect(inventory.database_url, autocommit=True) as conn:
            conn.execute("UPDATE inventory.stock SET reserved = 0 WHERE product_id = %s", (product,))


async def test_pool_saturation_and_waiters_move_when_connections_are_held(
    inventory: InventoryUnderTest,
) -> None:
    """Reserves of products whose stock rows this test locks each hold a pool connection while they
    wait; with SHOPMESH_DB_POOL_MAX=3 the pool fills and later requests queue."""
    products = [new_product() for _ in range(5)]
    for product in products:
        await inventory.stock(product, 2)
    idle = await wait_for(inventory.url, lambda s: s.value("db_pool_saturation", service="inventory_svc") < 1)
    assert idle.value("db_pool_waiting", service="inventory_svc") == 0
    async with await psycopg.AsyncConnection.connect(inventory.database_url) as conn:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM inventory.stock WHERE product_id = ANY(%s) FOR UPDATE", (products,)
            )
            calls = [asyncio.create_task(inventory.reserve(p, 1)) for p in products]
            full = await wait_for(
                inventory.url,
                lambda s: (
                    s.value("db_pool_saturation", service="inventory_svc") == 1
                    and s.value("db_pool_waiting", service="inventory_svc") >= 1
                ),
            )
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert full.value("db_pool_saturation", service="inventory_svc") == 1
    assert full.value("db_pool_waiting", service="inventory_svc") >= 1
    assert [r for r in results if isinstance(r, BaseException)] == []
    drained = await wait_for(
        inventory.url, lambda s: s.value("db_pool_waiting", service="inventory_svc") == 0
    )
    assert drained.value("db_pool_waiting", service="inventory_svc") == 0


async def test_outbox_backlog_and_age_grow_while_kafka_is_unreachable_and_drain_after(
    inventory: InventoryUnderTest,
) -> None:
    await inventory.restart(SHOPMESH_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed_port()}")
    try:
        await inventory.stock(new_product(), 1)  # one stock event into the outbox
        stuck = await wait_for(
            inventory.url,
            lambda s: (
                s.value("outbox_oldest_age_seconds", service="inventory_svc") >= 3
                and s.value("outbox_backlog", service="inventory_svc") >= 1
                and s.value("outbox_publish_failures_total", service="inventory_svc") >= 1
            ),
            timeout=30,
        )
        assert stuck.value("outbox_publish_failures_total", service="inventory_svc") >= 1
        assert stuck.value("outbox_backlog", service="inventory_svc") >= 1
        assert stuck.value("outbox_oldest_age_seconds", service="inventory_svc") >= 3
        assert stuck.value("outbox_published_total", service="inventory_svc") == 0
    finally:
        await inventory.restart()
    drained = await wait_for(
        inventory.url,
        lambda s: (
            s.get("outbox_backlog", service="inventory_svc") == 0
            and s.value("outbox_published_total", service="inventory_svc") >= 1
        ),
        timeout=30,
    )
    assert drained.value("outbox_published_total", service="inventory_svc") >= 1
    assert drained.get("outbox_backlog", service="inventory_svc") == 0
    assert drained.get("outbox_oldest_age_seconds", service="inventory_svc") == 0
