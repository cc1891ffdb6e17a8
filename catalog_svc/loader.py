"""Bulk loading of products (demo catalog, JSON-lines import, benchmark catalogs).

Products are inserted a batch per transaction, each with its `product_upserted` outbox event (so
the index follows through Kafka as for any write), unless `with_events=False` (benchmarks), where
the caller reindexes afterwards. Stock comes from inventory's ReceiveStock RPC (the demo), which
makes inventory publish the stock events catalog consumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from decimal import Decimal

from psycopg_pool import AsyncConnectionPool

from catalog_svc import events, index_store, store
from catalog_svc.demo import DemoCategory, DemoProduct
from catalog_svc.model import Attribute, ProductDraft, slugify, validate_draft
from meshkit.db import transaction

STOCK_NAMESPACE = uuid.UUID("6f1c1f5e-0b1d-4d53-9a55-5f1c0ad2b7e1")


@dataclasses.dataclass(frozen=True)
class LoadItem:
    """A product to load: its fields, its category by names (root first) and seller by name."""

    title: str
    price: Decimal
    category: tuple[str, ...] = ()
    seller: str = "Shopmesh Retail"
    description: str = ""
    brand: str = ""
    rating: Decimal = Decimal("0")
    review_count: int = 0
    attributes: tuple[tuple[str, str], ...] = ()
    stock: tuple[int, ...] = ()  # units per warehouse (1, 2, ...) to receive


def item_of(p: DemoProduct) -> LoadItem:
    return LoadItem(
        title=p.title,
        price=p.price,
        category=p.category.names,
        seller=p.seller,
        description=p.description,
        brand=p.brand,
        rating=p.rating,
        review_count=p.review_count,
        attributes=p.attributes,
        stock=p.stock,
    )


async def ensure_categories(
    pool: AsyncConnectionPool, trees: Iterable[tuple[str, ...]]
) -> dict[tuple[str, ...], int]:
    """Create every category named (and its ancestors); returns names -> id."""
    ids: dict[tuple[str, ...], int] = {}
    async with transaction(pool) as conn:
        for names in trees:
            for depth in range(1, len(names) + 1):
                key = names[:depth]
                if key in ids:
                    continue
                category = await store.ensure_category(
                    conn, parent_id=ids.get(key[:-1]), name=key[-1], slug=DemoCategory(key).slugs[-1]
                )
                ids[key] = category.id
    return ids


async def ensure_sellers(pool: AsyncConnectionPool, names: Iterable[str]) -> dict[str, int]:
    async with transaction(pool) as conn:
        return {name: await store.ensure_seller(conn, name) for name in dict.fromkeys(names)}


async def load_products(
    pool: AsyncConnectionPool,
    items: Iterable[LoadItem],
    *,
    topic: str,
    with_events: bool = True,
    batch_size: int = 1000,
    progress: Callable[[int], None] = lambda _n: None,
) -> list[tuple[int, LoadItem]]:
    """Insert the items; returns (product id, item) in input order."""
    loaded: list[tuple[int, LoadItem]] = []
    batch: list[LoadItem] = []
    categories: dict[tuple[str, ...], int] = {}
    sellers: dict[str, int] = {}
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            loaded += await _load_batch(
                pool, batch, categories, sellers, topic=topic, with_events=with_events
            )
            progress(len(loaded))
            batch = []
    if batch:
        loaded += await _load_batch(pool, batch, categories, sellers, topic=topic, with_events=with_events)
        progress(len(loaded))
    return loaded


async def _load_batch(
    pool: AsyncConnectionPool,
    batch: Sequence[LoadItem],
    categories: dict[tuple[str, ...], int],
    sellers: dict[str, int],
    *,
    topic: str,
    with_events: bool,
) -> list[tuple[int, LoadItem]]:
    missing_categories = {i.category for i in batch if i.category and i.category not in categories}
    if missing_categories:
        categories.update(await ensure_categories(pool, sorted(missing_categories)))
    missing_sellers = {i.seller for i in batch if i.seller not in sellers}
    if missing_sellers:
        sellers.update(await ensure_sellers(pool, sorted(missing_sellers)))
    drafts = [
        validate_draft(
            ProductDraft(
                seller_id=sellers[i.seller],
                title=i.title,
                price=i.price,
                description=i.description,
                category_id=categories.get(i.category) if i.category else None,
                rating=i.rating,
                review_count=i.review_count,
                brand=i.brand,
                attributes=tuple(Attribute(n, v) for n, v in i.attributes),
            )
        )
        for i in batch
    ]
    ids: list[int | None] = [None] * len(batch)
    async with transaction(pool) as conn:
        pending = list(range(len(batch)))
        attempt = 0
        while pending:
            slugs: dict[str, int] = {}
            for pos in pending:
                base = slugify(drafts[pos].title)
                slug = base if attempt == 0 else f"{base}-{uuid.uuid4().hex[:6] if attempt > 1 else pos + 2}"
                while slug in slugs:
                    slug = f"{base}-{uuid.uuid4().hex[:6]}"
                slugs[slug] = pos
            inserted = await store.bulk_insert_products(
                conn, [drafts[p] for p in slugs.values()], list(slugs)
            )
            for slug, product_id in inserted.items():
                ids[slugs[slug]] = product_id
            pending = [p for p in pending if ids[p] is None]
            attempt += 1
        if with_events:
            products = await store.get_products(conn, [i for i in ids if i is not None])
            for product_id in ids:
                assert product_id is not None
                await events.product_changed(conn, topic=topic, product=products[product_id])
    return [(pid, item) for pid, item in zip(ids, batch, strict=True) if pid is not None]


async def set_stock_directly(pool: AsyncConnectionPool, loaded: Sequence[tuple[int, LoadItem]]) -> None:
    """Benchmark catalogs only: write catalog's stock knowledge without inventory."""
    for start in range(0, len(loaded), 5000):
        chunk = loaded[start : start + 5000]
        async with transaction(pool) as conn:
            await index_store.bulk_set_stock(conn, [(pid, sum(item.stock)) for pid, item in chunk])


ReceiveStock = Callable[[int, int, int, str], Awaitable[None]]  # product, warehouse, quantity, request id


async def receive_stock(
    loaded: Sequence[tuple[int, LoadItem]], receive: ReceiveStock, *, concurrency: int = 16
) -> int:
    """Receive each item's stock into its warehouses through inventory; returns RPCs made.
    Request ids derive from (product, warehouse), so running it twice receives once."""
    semaphore = asyncio.Semaphore(concurrency)
    calls = 0

    async def one(product_id: int, warehouse_id: int, quantity: int) -> None:
        async with semaphore:
            request_id = str(uuid.uuid5(STOCK_NAMESPACE, f"{product_id}:{warehouse_id}"))
            await receive(product_id, warehouse_id, quantity, request_id)

    tasks = []
    for product_id, item in loaded:
        for warehouse_id, quantity in enumerate(item.stock, start=1):
            if quantity > 0:
                tasks.append(one(product_id, warehouse_id, quantity))
                calls += 1
    for start in range(0, len(tasks), 1000):
        await asyncio.gather(*tasks[start : start + 1000])
    return calls
