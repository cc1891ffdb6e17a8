"""The OpenSearch circuit breaker in a real catalog_svc: OpenSearch cut off (through a TCP proxy this
test controls, so the shared OpenSearch keeps serving everyone else) -> PostgreSQL answers and the
breaker opens; after 10 s one probe at a time goes through; a failed probe reopens; two good probes
close it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest_asyncio
from shop.catalog.v1 import catalog_pb2 as pb

from tests.integration.catalog_helpers import (
    OwnCatalog,
    Proxy,
    World,
    build_world,
    own_catalog,
    stub,
    wait_indexed,
)

CLOSED, HALF_OPEN, OPEN = 0.0, 1.0, 2.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_world(mesh) -> World:
    await mesh.start("inventory_svc")
    await mesh.start("catalog_svc")
    world = await build_world(mesh, n=12, seed=3)
    await wait_indexed(mesh, world)
    return world


@pytest_asyncio.fixture(loop_scope="session")
async def proxied(mesh, small_world, tmp_path) -> AsyncIterator[tuple[OwnCatalog, Proxy]]:
    proxy = Proxy()
    await proxy.up()
    try:
        # the proxy counts what reaches OpenSearch: no price_cents count in between (one at start)
        async with own_catalog(
            mesh, tmp_path, opensearch_url=f"http://127.0.0.1:{proxy.port}", price_cents_check_seconds="3600"
        ) as catalog:
            yield catalog, proxy
    finally:
        await proxy.down()


async def test_breaker_opens_falls_back_probes_one_at_a_time_and_closes(mesh, small_world, proxied):
    catalog, proxy = proxied
    client = stub(mesh, catalog.addr)
    request = pb.SearchProductsRequest(category_path=small_world.root)
    expected_total = len(small_world.items)

    async def state() -> float | None:
        return await catalog.metric("circuit_breaker_state", {"service": "opensearch"})

    async def fallbacks(reason: str) -> float:
        return await catalog.metric("search_fallbacks_total", {"reason": reason}) or 0.0

    reply = await client.SearchProducts(request)
    assert not reply.fallback and reply.total_hits == expected_total
    assert await state() == CLOSED

    # OpenSearch unreachable: each failure is answered by PostgreSQL; the third opens the breaker
    await proxy.down()
    errors_before = await fallbacks("error")
    for attempt in range(3):
        reply = await client.SearchProducts(request)
        assert reply.fallback and reply.total_hits == expected_total, attempt
        assert reply.facets.in_stock_count == sum(1 for i in small_world.items if i.in_stock)
    opened_at = time.monotonic()
    assert await fallbacks("error") == errors_before + 3
    assert await state() == OPEN
    open_before = await fallbacks("breaker_open")
    reply = await client.SearchProducts(request)
    assert reply.fallback
    assert await fallbacks("breaker_open") == open_before + 1  # not even tried
    assert await fallbacks("error") == errors_before + 3

    # 10 s later, still unreachable: the single probe fails and reopens the breaker
    await asyncio.sleep(max(0.0, opened_at + 10.3 - time.monotonic()))
    reply = await client.SearchProducts(request)
    assert reply.fallback
    assert await fallbacks("error") == errors_before + 4
    assert await state() == OPEN
    reopened_at = time.monotonic()

    # OpenSearch back but slow: after 10 s exactly one request at a time is let through
    proxy.delay = 1.0
    await proxy.up()
    await asyncio.sleep(max(0.0, reopened_at + 10.3 - time.monotonic()))
    forwarded_before = proxy.forwarded
    probe = asyncio.ensure_future(client.SearchProducts(request))
    await asyncio.sleep(0.3)
    others_started = time.monotonic()
    others = await asyncio.gather(*(client.SearchProducts(request) for _ in range(4)))
    assert all(r.fallback for r in others), "while a probe is in flight the rest must use the fallback"
    assert time.monotonic() - others_started < 1.0, "the others must not wait for OpenSearch"
    assert not probe.done()
    first_probe = await probe
    assert not first_probe.fallback and first_probe.total_hits == expected_total
    assert proxy.forwarded - forwarded_before == 1
    assert await state() == HALF_OPEN  # one success is not enough

    # the second consecutive successful probe closes it; then everything goes to OpenSearch again
    proxy.delay = 0.0
    second_probe = await client.SearchProducts(request)
    assert not second_probe.fallback
    assert await state() == CLOSED
    replies = await asyncio.gather(*(client.SearchProducts(request) for _ in range(5)))
    assert not any(r.fallback for r in replies)
    assert {r.total_hits for r in replies} == {expected_total}
