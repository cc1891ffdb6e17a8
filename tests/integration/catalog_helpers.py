"""Helpers for catalog tests: stubs, a second catalog_svc instance with its own settings, a TCP proxy
that can cut OpenSearch off, a test catalog with known contents, and brute-force facets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from shop.catalog.v1 import catalog_pb2 as pb
from shop.catalog.v1 import catalog_pb2_grpc
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from catalog_svc import loader
from catalog_svc.search_model import PRICE_RANGES
from meshkit.auth import TokenMinter
from meshkit.clients import open_channel
from meshkit.context import Principal
from meshkit.db import open_pool
from meshkit.errors import error_info_of, status_of
from meshkit.kafka import build_producer
from meshkit.settings import CommonSettings, load_settings
from tests.harness import Mesh, ServiceProcess, free_port

OPENSEARCH = load_settings(CommonSettings).opensearch_url  # wherever infra runs it


def admin_stub(mesh: Mesh, addr: str | None = None) -> catalog_pb2_grpc.CatalogServiceStub:
    return stub(mesh, addr, roles=("admin",), subject="catalog-admin")


def stub(
    mesh: Mesh, addr: str | None = None, *, roles: tuple[str, ...] = (), subject: str = "shopper"
) -> catalog_pb2_grpc.CatalogServiceStub:
    minter = TokenMinter(mesh.internal_secret, Principal(subject, roles))
    channel = open_channel(
        addr or mesh.addr("catalog_svc"), token_provider=minter.token, default_timeout=15.0
    )
    client = catalog_pb2_grpc.CatalogServiceStub(channel)
    client.channel = channel  # a grpc.aio channel closes when collected: keep it as long as the stub
    return client


def inventory_stub(mesh: Mesh) -> inventory_pb2_grpc.InventoryServiceStub:
    channel = mesh.channel("inventory_svc", "catalog-tests", ("service",))
    client = inventory_pb2_grpc.InventoryServiceStub(channel)
    client.channel = channel
    return client


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info_of(error)
    return info.reason if info else ""


def bad_field_of(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2

    status = status_of(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return ""


def token() -> str:
    """A word both analyzers keep as one unstemmed token (letters then digits)."""
    return f"zq{secrets.token_hex(4)}"


async def eventually(check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Await `check()` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s; last value: {last!r}")


# -- a catalog with known contents ---------------------------------------------------------------------


@dataclasses.dataclass
class Item:
    product_id: int
    title: str
    path: str  # category path
    brand: str
    price: Decimal
    rating: Decimal
    review_count: int
    in_stock: bool


@dataclasses.dataclass
class World:
    root: str  # unique root category slug
    word: str  # a word in some titles
    items: list[Item]

    def by_id(self) -> dict[int, Item]:
        return {i.product_id: i for i in self.items}


async def build_world(mesh: Mesh, *, n: int = 48, seed: int = 7) -> World:
    """Products under a unique root category with varied brands/prices/ratings; ~1/4 out of stock.
    Loaded with catalog's own loader (outbox events included) and stocked through inventory."""
    rng = random.Random(seed)
    root = f"T{secrets.token_hex(3)}"
    word = token()
    leaves = [("Alpha", "One"), ("Alpha", "Two"), ("Beta", "Three"), ("Beta", "Four"), ("Gamma", "Five")]
    brands = ["Acme", "Bolt", "Crest", "Dyna", "Echo", "Flux"]
    prices = [
        "4.99",
        "24.99",
        "25.00",
        "49.99",
        "50.00",
        "75.50",
        "99.99",
        "100.00",
        "150.00",
        "199.99",
        "200.00",
        "999.00",
        # a 32-bit float cannot tell these neighbours apart (spacing 1/64 above $131,072, 2 above
        # $16.7M): a price filter must still separate them
        "150000.01",
        "150000.02",
        "20000000.00",
        "20000001.00",
    ]
    items = []
    for i in range(n):
        sub, leaf = leaves[i % len(leaves)]
        with_word = i % 3 != 0
        stock = (0, 0) if i % 4 == 3 else (rng.randint(0, 5), rng.randint(1, 5))
        rating = Decimal("0.0") if i % 11 == 0 else Decimal(str(round(rng.uniform(1, 5), 1)))
        items.append(
            loader.LoadItem(
                title=f"{'Super ' + word + ' ' if with_word else ''}Widget {i} {rng.choice(['red', 'blue'])}",
                price=Decimal(prices[i % len(prices)]),
                category=(root, sub, leaf) if i % 7 else (root, sub),
                seller="Test Seller",
                description=f"A fine widget number {i} for testing.",
                brand=brands[i % len(brands)] if i % 13 else "",
                rating=rating,
                review_count=0 if rating == 0 else rng.randint(0, 500),
                attributes=(("color", "red"),),
                stock=stock,
            )
        )
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    try:
        loaded = await loader.load_products(pool, items, topic=mesh.topics["SHOPMESH_TOPIC_CATALOG_EVENTS"])
    finally:
        await pool.close()
    inventory = inventory_stub(mesh)

    async def receive(product_id: int, warehouse_id: int, quantity: int, request_id: str) -> None:
        await inventory.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                product_id=product_id, warehouse_id=warehouse_id, quantity=quantity, request_id=request_id
            )
        )

    await loader.receive_stock(loaded, receive, concurrency=8)
    slug = root.lower()
    return World(
        root=slug,
        word=word,
        items=[
            Item(
                product_id=pid,
                title=item.title,
                path="/".join([slug, *(part.lower() for part in item.category[1:])]),
                brand=item.brand,
                price=item.price,
                rating=item.rating,
                review_count=item.review_count,
                in_stock=sum(item.stock) > 0,
            )
            for pid, item in loaded
        ],
    )


async def wait_indexed(mesh: Mesh, world: World, addr: str | None = None) -> None:
    """Until OpenSearch (not the fallback) shows every product of the world with its stock."""
    client = stub(mesh, addr)
    expected_in_stock = sum(1 for i in world.items if i.in_stock)

    async def ready() -> bool:
        reply = await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root))
        return (
            not reply.fallback
            and reply.total_hits == len(world.items)
            and reply.facets.in_stock_count == expected_in_stock
        )

    await eventually(ready, timeout=60)


def brute_force(world: World, *, has_word: bool = False, **filters: Any) -> dict[str, Any]:
    """What SearchProducts must answer for these filters, computed over the world in Python."""
    hits = []
    for item in world.items:
        if has_word and world.word not in item.title:
            continue
        path = filters.get("category_path")
        if path and not (item.path == path or item.path.startswith(path + "/")):
            continue
        if "min_price" in filters and item.price < Decimal(str(filters["min_price"])):
            continue
        if "max_price" in filters and item.price > Decimal(str(filters["max_price"])):
            continue
        if filters.get("brands") and item.brand not in filters["brands"]:
            continue
        if "min_rating" in filters and item.rating < Decimal(str(filters["min_rating"])):
            continue
        if filters.get("in_stock") and not item.in_stock:
            continue
        hits.append(item)
    categories: dict[str, int] = {}
    for item in hits:
        parts = item.path.split("/")
        for depth in range(1, len(parts) + 1):
            key = "/".join(parts[:depth])
            categories[key] = categories.get(key, 0) + 1
    brands: dict[str, int] = {}
    for item in hits:
        if item.brand:
            brands[item.brand] = brands.get(item.brand, 0) + 1

    def top(counts: dict[str, int], size: int) -> list[tuple[str, int]]:
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:size]

    return {
        "ids": {i.product_id for i in hits},
        "total": len(hits),
        "categories": top(categories, 20),
        "brands": top(brands, 50),
        "price_ranges": [(r.key, sum(1 for i in hits if r.contains(i.price))) for r in PRICE_RANGES],
        "in_stock_count": sum(1 for i in hits if i.in_stock),
    }


def observed(reply: pb.SearchProductsResponse) -> dict[str, Any]:
    f = reply.facets
    return {
        "total": reply.total_hits,
        "categories": [(b.value, b.count) for b in f.categories],
        "brands": [(b.value, b.count) for b in f.brands],
        "price_ranges": [(b.key, b.count) for b in f.price_ranges],
        "in_stock_count": f.in_stock_count,
    }


async def all_hits(
    client: catalog_pb2_grpc.CatalogServiceStub, request: pb.SearchProductsRequest
) -> tuple[list[pb.SearchProductsResponse], list[int]]:
    """Every page of a search; returns the replies and the product ids in order."""
    replies, ids = [], []
    page = 0
    while True:
        request.page = page
        reply = await client.SearchProducts(request)
        replies.append(reply)
        ids += [r.product.id for r in reply.results]
        if (page + 1) * reply.page_size >= reply.total_hits:
            return replies, ids
        page += 1


# -- a second catalog_svc with its own settings -----------------------------------------------------


@dataclasses.dataclass
class OwnCatalog:
    proc: ServiceProcess
    addr: str
    metrics_url: str

    async def metric(self, name: str, labels: dict[str, str]) -> float | None:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(self.metrics_url)).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None


@contextlib.asynccontextmanager
async def own_catalog(mesh: Mesh, workdir: Path, **settings: str) -> AsyncIterator[OwnCatalog]:
    """catalog_svc on its own ports and consumer groups, with SHOPMESH_<KEY> overrides."""
    port, metrics_port = free_port(), free_port()
    tag = uuid.uuid4().hex[:8]
    env = mesh.env_for(
        "catalog_svc",
        {
            "SHOPMESH_GRPC_PORT": str(port),
            "SHOPMESH_METRICS_PORT": str(metrics_port),
            "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-{tag}",
            "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-{tag}",
            **{f"SHOPMESH_{k.upper()}": v for k, v in settings.items()},
        },
    )
    proc = ServiceProcess("catalog_svc", env, workdir / f"catalog_svc-{tag}.log")
    proc.spawn()
    addr = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if not proc.running:
                pytest.fail(f"own catalog_svc exited:\n{proc.log_tail()}")
            async with grpc.aio.insecure_channel(addr) as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"own catalog_svc not healthy:\n{proc.log_tail()}")
            await asyncio.sleep(0.2)
        yield OwnCatalog(proc, addr, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        proc.signal(15)
        if await proc.wait_exit(15) is None:
            proc.signal(9)
            await proc.wait_exit(5)


# -- a TCP proxy in front of OpenSearch ---------------------------------------------------------------


class Proxy:
    """Forwards 127.0.0.1:<port> to OpenSearch. `down()` closes every connection and refuses new ones
    (OpenSearch unreachable); `delay` holds each request that long before forwarding it."""

    def __init__(self, target_port: int = int(OPENSEARCH.rsplit(":", 1)[1].rstrip("/"))) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.delay = 0.0
        self.forwarded = 0

    async def up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns):
            writer.close()
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._conns.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, requests: bool) -> None:
            try:
                while data := await src.read(65536):
                    if requests and data.startswith((b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ")):
                        self.forwarded += 1  # an HTTP request starts here (bodies may follow in other chunks)
                        if self.delay:
                            await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, requests=True), pipe(up_reader, writer, requests=False))
        self._conns.difference_update({writer, up_writer})


# -- events straight onto Kafka ------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]]) -> list[str]:
    """Publish (key, value) records the way the outbox relay does (event id in the headers);
    returns the event ids."""
    producer = build_producer(bootstrap, client_id="catalog-tests")
    ids = []
    try:
        for key, value in records:
            event_id = str(uuid.uuid4())
            ids.append(event_id)
            producer.send(topic, key=key.encode(), value=value, headers=[("event-id", event_id.encode())])
        producer.flush(10)
    finally:
        producer.close(5)
    return ids


def stock_event(product_id: int, *, version: int, available: int) -> bytes:
    return events_pb2.InventoryEvent(
        event_id=str(uuid.uuid4()),
        product_id=product_id,
        version=version,
        stock_level_changed=events_pb2.StockLevelChanged(
            available=available, in_stock=available > 0, quantity=available, reserved=0
        ),
    ).SerializeToString()


def indexed_doc(alias: str, product_id: int) -> dict[str, Any] | None:
    reply = httpx.get(f"{OPENSEARCH}/{alias}/_doc/{product_id}", timeout=5)
    if reply.status_code == 404:
        return None
    return reply.raise_for_status().json()["_source"]


async def consumed(mesh: Mesh, event_ids: Iterable[str], consumer: str = "catalog-indexer") -> None:
    """Until catalog's consumer has processed these events (applied or skipped as stale)."""
    wanted = set(event_ids)

    async def done() -> bool:
        rows = catalog_sql(
            mesh.database_url,
            "SELECT event_id::text FROM catalog.processed_events WHERE consumer = %s AND event_id::text = ANY(%s)",
            (consumer, list(wanted)),
        )
        return {r[0] for r in rows} == wanted

    await eventually(done, timeout=30)


def catalog_sql(database_url: str, query: str, params: tuple = ()) -> list[tuple]:
    """Read (or, to set up a case, write) catalog's tables directly: test code only."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []
