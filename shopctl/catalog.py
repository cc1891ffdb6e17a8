"""Catalog operations: demo catalog, product import, search reindex/reconcile, also-bought compute.

They run catalog_svc's own job functions against its schema, with the same settings (SHOPMESH_*)
as the service. Registered in shopctl/__main__.py as `catalog`, `search` and `recs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import typer
import valkey.asyncio as valkey_asyncio
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from catalog_svc import demo, jobs, loader, recs
from catalog_svc.bootstrap import Components, build_components, inventory_availability
from catalog_svc.config import CatalogSettings
from meshkit.auth import TokenMinter
from meshkit.clients import open_channel
from meshkit.context import Principal
from meshkit.db import connection, open_pool
from meshkit.settings import load_settings

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Catalog: demo data, imports, search index.")
search_app = typer.Typer(no_args_is_help=True, help="Search index: reindex with alias swap, reconcile.")
recs_app = typer.Typer(no_args_is_help=True, help="Also-bought recommendations.")


@contextlib.asynccontextmanager
async def _components() -> AsyncIterator[Components]:
    settings = load_settings(CatalogSettings)
    pool = await open_pool(
        settings.database_url, schema="catalog", min_size=1, max_size=8, name="shopctl-catalog"
    )
    client = valkey_asyncio.from_url(settings.valkey_url, socket_timeout=2, socket_connect_timeout=2)
    parts = build_components(settings, pool=pool, valkey=client)
    try:
        yield parts
    finally:
        await parts.close()
        await client.aclose()
        await pool.close()


def _run(job: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(job())


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _receiver(settings: CatalogSettings) -> tuple[loader.ReceiveStock, Callable[[], Awaitable[None]]]:
    minter = TokenMinter(settings.internal_token_secret, Principal("shopctl", ("service",)))
    channel = open_channel(settings.inventory_addr, token_provider=minter.token, default_timeout=10.0)
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    async def receive(product_id: int, warehouse_id: int, quantity: int, request_id: str) -> None:
        await stub.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                product_id=product_id,
                warehouse_id=warehouse_id,
                quantity=quantity,
                reference="demo catalog",
                request_id=request_id,
            )
        )

    return receive, channel.close


async def _load(items: list[loader.LoadItem], *, with_stock: bool, quiet: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    async with _components() as parts:
        settings = parts.settings
        loaded = await loader.load_products(
            parts.pool,
            items,
            topic=settings.topic_catalog_events,
            progress=(lambda n: None) if quiet else (lambda n: typer.echo(f"  {n} products", err=True)),
        )
        report: dict[str, Any] = {
            "products": len(loaded),
            "load_seconds": round(time.perf_counter() - started, 2),
        }
        if with_stock:
            receive, close = _receiver(settings)
            try:
                report["stock_receipts"] = await loader.receive_stock(loaded, receive)
            finally:
                await close()
        report["seconds"] = round(time.perf_counter() - started, 2)
        return report


@app.command("demo-load")
def demo_load(
    products: int = typer.Option(3000, help="How many products the demo catalog should have."),
    seed: int = typer.Option(42, help="Generator seed: the same seed gives the same catalog."),
    stock: bool = typer.Option(True, help="Receive stock through inventory_svc (it must be running)."),
) -> None:
    """Load the demo catalog (categories, sellers, products, stock). Skips if already loaded."""

    async def current_count() -> int:
        async with _components() as parts, connection(parts.pool) as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM products")
            row = await cur.fetchone()
            return int(row["n"]) if row else 0

    existing = _run(current_count)
    if existing >= products:
        typer.echo(f"catalog already has {existing} products; nothing to do")
        return
    items = [loader.item_of(p) for p in demo.generate(products - existing, seed, start=existing)]
    _print(_run(lambda: _load(items, with_stock=stock)))


def _item_from_json(line: str, number: int) -> loader.LoadItem:
    try:
        data = json.loads(line)
        category = data.get("category") or ()
        if isinstance(category, str):
            category = tuple(part.strip() for part in category.split(">") if part.strip())
        attributes = data.get("attributes") or {}
        if isinstance(attributes, dict):
            attributes = tuple((str(k), str(v)) for k, v in attributes.items())
        else:
            attributes = tuple((str(a["name"]), str(a["value"])) for a in attributes)
        return loader.LoadItem(
            title=str(data["title"]),
            price=Decimal(str(data["price"])),
            category=tuple(category),
            seller=str(data.get("seller") or "Shopmesh Retail"),
            description=str(data.get("description") or ""),
            brand=str(data.get("brand") or ""),
            rating=Decimal(str(data.get("rating") or 0)),
            review_count=int(data.get("review_count") or 0),
            attributes=attributes,
            stock=tuple(int(q) for q in data.get("stock") or ()),
        )
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        raise typer.BadParameter(f"line {number}: {exc}") from exc


@app.command("import-products")
def import_products(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON lines, one product per line."),
    stock: bool = typer.Option(True, help="Receive each line's `stock` (units per warehouse) via inventory."),
) -> None:
    """Import products: {"title", "price", "category": "A > B", "brand", "description", "rating",
    "review_count", "attributes": {"color": "red"}, "seller", "stock": [east, west]} per line."""
    items = [
        _item_from_json(line, n)
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip()
    ]
    _print(_run(lambda: _load(items, with_stock=stock)))


async def _reindex() -> dict[str, Any]:
    async with _components() as parts:
        return await jobs.reindex(parts.pool, parts.index, batch_size=parts.settings.reindex_batch_size)


@app.command("reindex")
def catalog_reindex() -> None:
    """Same as `shopctl search reindex`."""
    _print(_run(_reindex))


@search_app.command("reindex")
def search_reindex() -> None:
    """Build a new versioned index from PostgreSQL and swap the alias to it (no downtime)."""
    _print(_run(_reindex))


@search_app.command("reconcile")
def search_reconcile(
    inventory: bool = typer.Option(
        True, help="Also check in_stock against inventory's BatchGetAvailability."
    ),
) -> None:
    """Compare PostgreSQL with the index and repair drift. Exit code 1 when drift was found."""

    async def job() -> jobs.ReconcileReport:
        async with _components() as parts:
            await parts.index.ensure_alias()
            availability, close = inventory_availability(parts.settings)
            try:
                return await jobs.reconcile(
                    parts.pool, parts.index, availability=availability if inventory else None
                )
            finally:
                await close()

    report = _run(job)
    _print({**dataclasses.asdict(report), "drift": report.drift})
    if report.drift:
        sys.exit(1)


@search_app.command("purge-log")
def purge_search_log() -> None:
    """Delete search log rows past the retention (SHOPMESH_SEARCH_LOG_RETENTION_DAYS, 90)."""

    async def job() -> int:
        async with _components() as parts:
            return await jobs.purge_search_log(
                parts.pool, retention_days=parts.settings.search_log_retention_days
            )

    _print({"deleted": _run(job)})


@recs_app.command("compute")
def recs_compute() -> None:
    """Recompute also-bought for every active product (the nightly job), 100 per batch."""

    async def job() -> dict[str, int]:
        async with _components() as parts:
            return await recs.compute_all(
                parts.pool, parts.kv, config=parts.recs_config, topic=parts.settings.topic_catalog_events
            )

    _print(_run(job))
