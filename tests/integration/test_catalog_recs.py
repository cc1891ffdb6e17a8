"""Also-bought: order_created events on Kafka -> co-purchases -> the batch job -> GetAlsoBought, checked
against a brute-force count over the same events; cache then database; category fallback."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import Counter

import grpc
import pytest
import pytest_asyncio
import valkey.asyncio as valkey_asyncio
from google.protobuf import timestamp_pb2
from shop.catalog.v1 import catalog_pb2 as pb
from shop.common.v1 import money_pb2
from shop.events.v1 import events_pb2
from shop.order.v1 import order_pb2

from catalog_svc import recs
from catalog_svc.cache import GuardedValkey
from catalog_svc.config import CatalogSettings
from meshkit.circuit import CircuitBreaker
from meshkit.db import open_pool
from meshkit.settings import load_settings
from tests.integration.catalog_helpers import (
    World,
    admin_stub,
    build_world,
    catalog_sql,
    consumed,
    produce,
    stub,
    wait_indexed,
)

WINDOW = dt.timedelta(days=90)


def order_event(order_id: str, lines: dict[int, int], at: dt.datetime) -> bytes:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at)
    return events_pb2.OrderEvent(
        event_id=str(uuid.uuid4()),
        order_id=order_id,
        version=1,
        occurred_at=stamp,
        order_created=events_pb2.OrderCreated(
            user_id="u-recs",
            lines=[
                order_pb2.OrderLine(
                    product_id=pid,
                    title="x",
                    quantity=qty,
                    unit_price=money_pb2.Money(currency_code="USD", units=1),
                )
                for pid, qty in lines.items()
            ],
        ),
    ).SerializeToString()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def shop(mesh) -> tuple[World, list[tuple[str, dict[int, int], dt.datetime]]]:
    """A world and the orders placed in it (some outside the 90-day window), consumed by catalog."""
    await mesh.start("inventory_svc")
    await mesh.start("catalog_svc")
    world = await build_world(mesh, n=20, seed=5)
    await wait_indexed(mesh, world)
    rng = random.Random(99)
    now = dt.datetime.now(dt.UTC)
    buyable = [i.product_id for i in world.items[:-3]]  # the last three never sell
    orders = []
    for n in range(60):
        products = rng.sample(buyable, rng.randint(1, 4))
        at = now - (dt.timedelta(days=120) if n % 10 == 0 else dt.timedelta(hours=n))
        orders.append((f"order-{uuid.uuid4()}", {p: rng.randint(1, 3) for p in products}, at))
    ids = produce(
        mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"],
        mesh.topics["SHOPMESH_TOPIC_ORDER_EVENTS"],
        [(order_id, order_event(order_id, lines, at)) for order_id, lines, at in orders],
    )
    await consumed(mesh, ids, consumer="catalog-copurchases")
    return world, orders


def expected_also_bought(
    world: World, orders, product_id: int, *, sellable: set[int]
) -> list[tuple[int, float]]:
    """The seed's definition, by brute force: co-occurrence counts over the window, top 20, then only
    sellable products."""
    cutoff = dt.datetime.now(dt.UTC) - WINDOW
    recent = [lines for _, lines, at in orders if at > cutoff]
    with_product = [lines for lines in recent if product_id in lines]
    counts = Counter(other for lines in with_product for other in lines if other != product_id)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return [(pid, n / len(with_product)) for pid, n in top if pid in sellable]


async def run_job(mesh) -> dict[str, int]:
    settings = load_settings(CatalogSettings, environ=mesh.env)
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    client = valkey_asyncio.from_url(settings.valkey_url)
    kv = GuardedValkey(client, timeout=2, breaker=CircuitBreaker("valkey-test-recs"))
    try:
        return await recs.compute_all(
            pool,
            kv,
            config=recs.RecsConfig(key_prefix=settings.cache_key_prefix),
            topic=settings.topic_catalog_events,
        )
    finally:
        await client.aclose()
        await pool.close()


async def test_also_bought_matches_brute_force_from_cache_then_database(mesh, shop):
    world, orders = shop
    job_started = catalog_sql(mesh.database_url, "SELECT now()")[0][0]
    report = await run_job(mesh)
    assert report["products"] >= len(world.items) and report["with_recommendations"] > 0
    sellable = {i.product_id for i in world.items if i.in_stock}
    client = stub(mesh)
    checked = 0
    for item in world.items[:-3]:
        expected = expected_also_bought(world, orders, item.product_id, sellable=sellable)
        if not expected:
            continue
        reply = await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=item.product_id, limit=20))
        assert reply.source == pb.ALSO_BOUGHT_SOURCE_CACHE
        got = [(r.product.id, r.score) for r in reply.recommendations]
        assert [pid for pid, _ in got] == [pid for pid, _ in expected], item
        assert [s for _, s in got] == pytest.approx([s for _, s in expected])
        checked += 1
    assert checked >= 5

    # without the cache entry the stored list answers, the same
    item = next(
        i for i in world.items if expected_also_bought(world, orders, i.product_id, sellable=sellable)
    )
    settings = load_settings(CatalogSettings, environ=mesh.env)
    valkey = valkey_asyncio.from_url(settings.valkey_url)
    try:
        await valkey.delete(f"{settings.cache_key_prefix}recs:also_bought:{item.product_id}")
    finally:
        await valkey.aclose()
    reply = await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=item.product_id, limit=20))
    assert reply.source == pb.ALSO_BOUGHT_SOURCE_CO_PURCHASE
    expected = expected_also_bought(world, orders, item.product_id, sellable=sellable)
    assert [r.product.id for r in reply.recommendations] == [pid for pid, _ in expected]
    default = await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=item.product_id))
    assert [r.product.id for r in default.recommendations] == [pid for pid, _ in expected][:10]

    # each finished batch published recommendations_updated, naming the lists that changed
    rows = catalog_sql(
        mesh.database_url,
        "SELECT payload FROM catalog.outbox WHERE event_type = 'recommendations_updated' AND created_at > %s",
        (job_started,),
    )
    assert len(rows) == report["batches"]
    named = {
        pid
        for (payload,) in rows
        for pid in events_pb2.CatalogEvent.FromString(payload).recommendations_updated.product_ids
    }
    assert item.product_id in named


async def test_inactive_recommendations_are_filtered_out(mesh, shop):
    world, orders = shop
    sellable = {i.product_id for i in world.items if i.in_stock}
    item = next(
        i
        for i in world.items
        if len(expected_also_bought(world, orders, i.product_id, sellable=sellable)) >= 2
    )
    if not catalog_sql(
        mesh.database_url,
        "SELECT 1 FROM catalog.product_recommendations WHERE product_id = %s",
        (item.product_id,),
    ):
        await run_job(mesh)
    expected = expected_also_bought(world, orders, item.product_id, sellable=sellable)
    dropped = expected[0][0]
    admin = admin_stub(mesh)
    await admin.DeleteProduct(pb.DeleteProductRequest(product_id=dropped))
    client = stub(mesh)
    reply = await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=item.product_id, limit=20))
    assert [r.product.id for r in reply.recommendations] == [pid for pid, _ in expected if pid != dropped]
    # and the deleted product itself has none, as GetProduct does not find it (it answered them)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=dropped))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_no_co_purchases_falls_back_to_category_top_sellers(mesh, shop):
    world, orders = shop
    never_sold = world.items[-1]
    cutoff = dt.datetime.now(dt.UTC) - WINDOW
    sold: Counter[int] = Counter()
    for _, lines, at in orders:
        if at > cutoff:
            sold.update(lines)
    active = {r[0] for r in catalog_sql(mesh.database_url, "SELECT id FROM catalog.products WHERE is_active")}
    peers = [
        i
        for i in world.items
        if i.path == never_sold.path
        and i.product_id != never_sold.product_id
        and i.in_stock
        and i.product_id in active
    ]
    expected = sorted(peers, key=lambda i: (-sold[i.product_id], -i.review_count, i.product_id))[:10]
    client = stub(mesh)
    reply = await client.GetAlsoBought(pb.GetAlsoBoughtRequest(product_id=never_sold.product_id))
    assert reply.source == pb.ALSO_BOUGHT_SOURCE_CATEGORY_TOP_SELLERS
    assert [r.product.id for r in reply.recommendations] == [i.product_id for i in expected]
    assert [r.score for r in reply.recommendations] == [float(sold[i.product_id]) for i in expected]


async def test_a_reader_filling_the_cache_never_overwrites_what_the_nightly_batch_cached_meanwhile(
    mesh, shop, monkeypatch
):
    """A reader missed the cache and read the stored rows; the batch then committed and cached the
    new list; the reader's write put its old rows back for the cache's 24 hours. Fills are SET NX,
    and a product left without recommendations is cached as [] (a delete left the key free).
    `shop`: the orders the recommendations come from."""
    settings = load_settings(CatalogSettings, environ=mesh.env)
    config = recs.RecsConfig(key_prefix=settings.cache_key_prefix)
    if not catalog_sql(mesh.database_url, "SELECT 1 FROM catalog.product_recommendations LIMIT 1"):
        await run_job(mesh)
    product_id, old = catalog_sql(
        mesh.database_url,
        "SELECT r.product_id, count(*) FROM catalog.product_recommendations r"
        " JOIN catalog.products p ON p.id = r.product_id AND p.is_active"
        " GROUP BY r.product_id ORDER BY count(*) DESC, r.product_id LIMIT 1",
    )[0]
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    client = valkey_asyncio.from_url(settings.valkey_url)
    kv = GuardedValkey(client, timeout=2, breaker=CircuitBreaker("valkey-test-recs-race"))

    async def no_products(ids):
        return {}

    service = recs.AlsoBoughtService(pool=pool, kv=kv, config=config, load_products=no_products)
    read_rows = recs.recs_store.stored_recommendations
    try:
        for batch_list in ({product_id: [(product_id + 1, 0.5, 1)]}, {}):  # a new list, then none
            await client.delete(config.key(product_id))

            async def batch_commits_right_after_the_read(conn, pid, top_n, batch_list=batch_list):
                rows = await read_rows(conn, pid, top_n)
                await recs._cache_batch(kv, config, [product_id], batch_list)
                return rows

            monkeypatch.setattr(recs.recs_store, "stored_recommendations", batch_commits_right_after_the_read)
            await service.get(product_id)
            cached = json.loads(await client.get(config.key(product_id)))
            assert cached == [[r, s] for r, s, _ in batch_list.get(product_id, [])], (old, cached)
    finally:
        await client.delete(config.key(product_id))
        await client.aclose()
        await pool.close()


async def test_a_batch_valkey_refused_does_not_keep_yesterdays_list_cached(mesh, shop):
    """The new lists are committed but Valkey refused the batch's cache write: the old cached list
    (24 h TTL) must not outlive the run, or readers get yesterday's answer for a day.
    `shop`: the orders the recommendations come from."""
    settings = load_settings(CatalogSettings, environ=mesh.env)
    config = recs.RecsConfig(key_prefix=settings.cache_key_prefix, batch_size=5)
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    client = valkey_asyncio.from_url(settings.valkey_url)
    kv = GuardedValkey(client, timeout=2, breaker=CircuitBreaker("valkey-test-recs-refused"))
    first_batch = catalog_sql(
        mesh.database_url, "SELECT id FROM catalog.products WHERE is_active ORDER BY id LIMIT 5"
    )
    product_id = first_batch[0][0]
    yesterdays = json.dumps([[987654321, 1.0]])
    await client.setex(config.key(product_id), 86400, yesterdays)
    real_pipeline = client.pipeline
    refused = []

    def pipeline_refusing_the_first_batch(*args, **kwargs):
        if not refused:
            refused.append(True)
            raise valkey_asyncio.ConnectionError("injected: valkey went away for one batch")
        return real_pipeline(*args, **kwargs)

    client.pipeline = pipeline_refusing_the_first_batch
    try:
        report = await recs.compute_all(pool, kv, config=config, topic=settings.topic_catalog_events)
        assert refused and report["batches"] > 1 and report["cache_stale"] == 0
        cached = await client.get(config.key(product_id))
        assert cached != yesterdays.encode(), "the old list is still cached"
        service = recs.AlsoBoughtService(pool=pool, kv=kv, config=config, load_products=_no_products)
        assert all(pid != 987654321 for pid, _ in (await service._candidates(product_id))[0])
    finally:
        client.pipeline = real_pipeline
        await client.delete(config.key(product_id))
        await client.aclose()
        await pool.close()


async def _no_products(ids):
    return {}
