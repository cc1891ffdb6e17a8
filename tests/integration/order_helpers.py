"""Helpers for order_svc tests: the three real services, products with stock, stubs, probes.

order_svc runs with its own Valkey database (7), so tests may flush it without touching other
tests' keys, a short idempotency lease (crash tests retry within seconds) and a short payment
timeout (tok_timeout answers quickly).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from decimal import Decimal

import grpc
import psycopg
import valkey.asyncio as valkey_asyncio
from kafka import KafkaConsumer, TopicPartition
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.common.v1 import address_pb2, money_pb2
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from meshkit.errors import error_info_of
from meshkit.settings import CommonSettings, load_settings

# the local Valkey (whatever port infra runs it on), database 7: order tests flush it freely
ORDER_VALKEY_URL = load_settings(CommonSettings).valkey_url.rsplit("/", 1)[0] + "/7"
ORDER_ENV = {
    "SHOPMESH_VALKEY_URL": ORDER_VALKEY_URL,
    "SHOPMESH_IDEMPOTENCY_LEASE_SECONDS": "3",
    "SHOPMESH_PAYMENT_TIMEOUT_SECONDS": "0.5",
    "SHOPMESH_RECOVERY_INTERVAL_SECONDS": "5",
    "SHOPMESH_DB_POOL_MAX": "30",
}
ADDRESS = address_pb2.Address(
    name="Ada Lovelace", line1="12 St James's Sq", city="London", postal_code="SW1Y 4JH", country_code="GB"
)


async def start_order_mesh(mesh, extra_env: dict[str, str] | None = None) -> None:
    """inventory_svc, catalog_svc and order_svc running; order_svc with ORDER_ENV (+ extra_env) exactly."""
    await mesh.start("inventory_svc")
    await mesh.start("catalog_svc")
    wanted = {**ORDER_ENV, **(extra_env or {})}
    proc = mesh.procs.get("order_svc")
    if proc is not None and proc.running:
        same = all(proc.env.get(k) == v for k, v in wanted.items())
        extra_keys = {k for k in proc.env if k.startswith("SHOPMESH_FAILPOINTS")} - set(wanted)
        if same and not extra_keys:
            return
        await mesh.stop("order_svc")
    mesh.procs.pop("order_svc", None)
    await mesh.start("order_svc", extra_env=wanted)


def user_id() -> str:
    return f"u-{secrets.token_hex(6)}"


def carts(mesh, user: str) -> cart_pb2_grpc.CartServiceStub:
    return cart_pb2_grpc.CartServiceStub(mesh.channel("order_svc", user))


def orders(mesh, user: str) -> order_pb2_grpc.OrderServiceStub:
    return order_pb2_grpc.OrderServiceStub(mesh.channel("order_svc", user))


def admin_orders(mesh) -> order_pb2_grpc.OrderServiceStub:
    return order_pb2_grpc.OrderServiceStub(mesh.channel("order_svc", "ops-admin", ("admin",)))


def inventory(mesh) -> inventory_pb2_grpc.InventoryServiceStub:
    return inventory_pb2_grpc.InventoryServiceStub(mesh.channel("inventory_svc", "ops-admin", ("admin",)))


def _seller(database_url: str) -> int:
    # catalog has no seller API (sellers are loaded with the catalog); tests add one directly
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO catalog.sellers (name) VALUES ('order-tests') ON CONFLICT (name)"
            " DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ).fetchone()
    return int(row[0])


async def new_product(mesh, *, price: str = "19.99", stock: int = 10, title: str = "") -> int:
    """A catalog product with `stock` units in warehouse 1."""
    amount = Decimal(price)
    units = int(amount)
    product = catalog_pb2.Product(
        seller_id=_seller(mesh.database_url),
        title=title or f"Order test item {secrets.token_hex(4)}",
        price=money_pb2.Money(currency_code="USD", units=units, nanos=int((amount - units) * 10**9)),
    )
    stub = catalog_pb2_grpc.CatalogServiceStub(mesh.channel("catalog_svc", "ops-admin", ("admin",)))
    created = await stub.CreateProduct(catalog_pb2.CreateProductRequest(product=product))
    if stock:
        await inventory(mesh).ReceiveStock(
            inventory_pb2.ReceiveStockRequest(product_id=created.product.id, warehouse_id=1, quantity=stock)
        )
    return created.product.id


async def stock_of(mesh, product_id: int) -> inventory_pb2.ProductStock:
    return (await inventory(mesh).GetStock(inventory_pb2.GetStockRequest(product_id=product_id))).stock


async def add(mesh, user: str, product_id: int, quantity: int = 1) -> cart_pb2.CartItem:
    response = await carts(mesh, user).AddCartItem(
        cart_pb2.AddCartItemRequest(product_id=product_id, quantity=quantity)
    )
    return response.item


def checkout_request(key: str, token: str = "", **fields) -> order_pb2.CheckoutRequest:
    return order_pb2.CheckoutRequest(
        idempotency_key=key, shipping_address=ADDRESS, payment_token=token, **fields
    )


async def checkout(mesh, user: str, key: str, token: str = "", **fields) -> order_pb2.Order:
    response = await orders(mesh, user).Checkout(checkout_request(key, token, **fields))
    return response.order


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(error)
    return info.reason if info else ""


def metadata_of(error: grpc.aio.AioRpcError) -> dict[str, str]:
    info = error_info_of(error)
    return dict(info.metadata) if info else {}


def sql(database_url: str, query: str, *params) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def captures(database_url: str, order_id: str) -> list[tuple]:
    """Charges the sandbox provider holds for the order (at most one can exist per key)."""
    return sql(
        database_url,
        "SELECT status, amount, attempts FROM orders.sandbox_charges WHERE idempotency_key = %s",
        f"order:{order_id}",
    )


def orders_for_key(database_url: str, user: str, key: str) -> list[tuple]:
    return sql(
        database_url,
        "SELECT id, status FROM orders.orders WHERE user_id = %s AND idempotency_key = %s",
        user,
        key,
    )


async def flush_order_valkey() -> None:
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def order_events(mesh, order_id: str, *, want: int, timeout: float = 20.0) -> list[events_pb2.OrderEvent]:
    """Read the test session's order-events topic from the start until `want` events of the order arrive
    (then drain briefly for duplicates). Returns (event, headers) parsed events for that order."""
    topic = mesh.topics["SHOPMESH_TOPIC_ORDER_EVENTS"]
    consumer = KafkaConsumer(
        bootstrap_servers=mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"].split(","),
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=500,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list[events_pb2.OrderEvent] = []
        deadline = time.monotonic() + timeout
        drain_until = None
        while time.monotonic() < deadline:
            for record in consumer:
                if record.key and record.key.decode() == order_id:
                    event = events_pb2.OrderEvent.FromString(record.value)
                    headers = dict(record.headers or [])
                    assert headers.get("event-id", b"").decode() == event.event_id
                    found.append(event)
            if len(found) >= want and drain_until is None:
                drain_until = time.monotonic() + 1.0
            if drain_until is not None and time.monotonic() >= drain_until:
                break
        return found
    finally:
        consumer.close()


async def wait_for(predicate, *, timeout: float = 15.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


def new_key() -> str:
    return f"key-{uuid.uuid4()}"
