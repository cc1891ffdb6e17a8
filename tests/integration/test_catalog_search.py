"""Faceted search on real OpenSearch and on the PostgreSQL fallback: facets and filters against a
brute-force computation, ranking boosts, bad input."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import httpx
import pytest
import pytest_asyncio
from shop.catalog.v1 import catalog_pb2 as pb
from shop.catalog.v1 import catalog_pb2_grpc as pb_grpc
from shop.common.v1 import money_pb2
from shop.inventory.v1 import inventory_pb2

from catalog_svc import jobs, search_os
from catalog_svc.index_client import SearchIndex, build_client
from catalog_svc.model import Product
from catalog_svc.search_model import business_factor
from meshkit.db import open_pool
from tests.integration.catalog_helpers import (
    OPENSEARCH,
    OwnCatalog,
    World,
    admin_stub,
    all_hits,
    bad_field_of,
    brute_force,
    build_world,
    catalog_sql,
    eventually,
    indexed_doc,
    inventory_stub,
    observed,
    own_catalog,
    reason_of,
    stub,
    token,
    wait_indexed,
)

FILTER_CASES = [
    {},
    {"has_word": True},
    {"category_path": "{root}/alpha"},
    {"category_path": "{root}/beta/four", "has_word": True},
    {"min_price": 25, "max_price": 100},
    {"min_price": 24.99, "max_price": 24.99},
    {"min_price": 200},
    {"brands": ["Acme", "Crest"]},
    {"brands": ["Bolt"], "has_word": True, "in_stock": True},
    {"min_rating": 3.5},
    {"in_stock": True, "min_price": 50, "category_path": "{root}/alpha"},
    {"brands": ["NoSuchBrand"]},
    {"min_price": 150000.02, "max_price": 20000000.00},
    {"min_price": 150000.01, "max_price": 150000.01},
    {"min_price": 20000001.00},
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(mesh) -> World:
    await mesh.start("inventory_svc")
    await mesh.start("catalog_svc")
    built = await build_world(mesh)
    await wait_indexed(mesh, built)
    return built


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fallback_catalog(mesh, world, tmp_path_factory) -> AsyncIterator[OwnCatalog]:
    """A catalog_svc whose OpenSearch address is a closed port: every search runs on PostgreSQL."""
    from tests.harness import free_port

    async with own_catalog(
        mesh, tmp_path_factory.mktemp("fallback"), opensearch_url=f"http://127.0.0.1:{free_port()}"
    ) as catalog:
        yield catalog


@pytest.fixture(params=["opensearch", "postgres"])
def engine(request, fallback_catalog) -> tuple[str, str | None]:
    """(engine name, catalog address): the shared catalog_svc, or the one without OpenSearch."""
    return request.param, (fallback_catalog.addr if request.param == "postgres" else None)


def _request(world: World, case: dict) -> tuple[pb.SearchProductsRequest, dict]:
    filters = {k: (v.format(root=world.root) if isinstance(v, str) else v) for k, v in case.items()}
    filters.setdefault("category_path", world.root)
    request = pb.SearchProductsRequest(
        q=world.word if filters.get("has_word") else "",
        category_path=filters["category_path"],
        brands=filters.get("brands", []),
        in_stock=filters.get("in_stock", False),
    )
    for name in ("min_price", "max_price", "min_rating"):
        if name in filters:
            setattr(request, name, filters[name])
    return request, filters


async def test_facets_and_filters_match_brute_force(mesh, world, engine):
    engine, addr = engine
    client = stub(mesh, addr)
    for case in FILTER_CASES:
        search, filters = _request(world, case)
        expected = brute_force(world, **filters)
        replies, ids = await all_hits(client, search)
        assert {r.fallback for r in replies} == {engine == "postgres"}, case
        got = observed(replies[0])
        assert got == {k: v for k, v in expected.items() if k != "ids"}, case
        assert sorted(ids) == sorted(expected["ids"]), case
        assert len(ids) == len(set(ids)), f"a product appeared on two pages: {case}"
        for reply in replies:
            assert reply.page_size == 20 and len(reply.results) <= 20
            for result in reply.results:
                assert result.product.category_path.startswith(world.root)
                assert result.in_stock == world.by_id()[result.product.id].in_stock


async def test_browse_scores_are_the_seeds_business_factor(mesh, world, engine):
    """With no text, relevance is 1: each score is 1 + 2*in_stock + sqrt(1.2*rating) + log10(1+1.1*reviews)
    and results come best first (ties: newest id first)."""
    engine, addr = engine
    replies, ids = await all_hits(stub(mesh, addr), pb.SearchProductsRequest(category_path=world.root))
    by_id = world.by_id()
    results = [r for reply in replies for r in reply.results]
    assert all(reply.fallback == (engine == "postgres") for reply in replies)
    for result in results:
        item = by_id[result.product.id]
        factor = business_factor(
            in_stock=item.in_stock, rating=float(item.rating), review_count=item.review_count
        )
        assert result.score == pytest.approx(factor, rel=1e-5), item
    expected = sorted(
        world.items,
        key=lambda i: (
            -round(
                business_factor(in_stock=i.in_stock, rating=float(i.rating), review_count=i.review_count), 5
            ),
            -i.product_id,
        ),
    )
    assert ids == [i.product_id for i in expected]


async def test_in_stock_and_rating_boost_equally_relevant_products(mesh, world, engine):
    """Three products with the same text: in stock + 4.5 stars > in stock + 1 star > out of stock + 4.5.
    (Uncategorised, so the shared test world keeps its contents.)"""
    word = token()
    admin = admin_stub(mesh)
    sellers = catalog_sql(mesh.database_url, "SELECT id FROM catalog.sellers ORDER BY id LIMIT 1")
    specs = {"best": (4.5, True), "low_rated": (1.0, True), "out_of_stock": (4.5, False)}
    ids = {}
    for name, (rating, _) in specs.items():
        created = await admin.CreateProduct(
            pb.CreateProductRequest(
                product=pb.Product(
                    seller_id=sellers[0][0],
                    title=f"Trio lamp {word}",
                    description="Identical description for every member of the trio.",
                    price=money_pb2.Money(currency_code="USD", units=30),
                    rating=rating,
                    review_count=40,
                    brand="Trio",
                )
            )
        )
        ids[name] = created.product.id
    inventory = inventory_stub(mesh)
    for name, (_, in_stock) in specs.items():
        if in_stock:
            await inventory.ReceiveStock(
                inventory_pb2.ReceiveStockRequest(product_id=ids[name], warehouse_id=1, quantity=3)
            )
    engine, addr = engine
    client = stub(mesh, addr)
    query = pb.SearchProductsRequest(q=word)

    async def ranked():
        reply = await client.SearchProducts(query)
        if reply.total_hits == 3 and reply.facets.in_stock_count == 2:
            return reply
        return None

    reply = await eventually(ranked, timeout=60)
    assert reply.fallback == (engine == "postgres")
    assert [r.product.id for r in reply.results] == [ids["best"], ids["low_rated"], ids["out_of_stock"]]
    assert [r.in_stock for r in reply.results] == [True, True, False]


async def test_text_query_ranks_title_matches_and_boosts(mesh, world):
    client = stub(mesh)
    reply = await client.SearchProducts(pb.SearchProductsRequest(q=world.word, category_path=world.root))
    assert not reply.fallback
    assert reply.total_hits == sum(1 for i in world.items if world.word in i.title)
    assert all(world.word in r.product.title for r in reply.results)


@pytest.mark.parametrize(
    ("fields", "bad_field", "reason"),
    [
        ({"q": "x" * 201}, "q", "INVALID_ARGUMENT"),
        ({"q": "shoes\x00"}, "q", "INVALID_ARGUMENT"),
        ({"min_price": -1}, "min_price", "INVALID_ARGUMENT"),
        ({"min_price": 50, "max_price": 10}, "max_price", "INVALID_ARGUMENT"),
        ({"min_rating": 6}, "min_rating", "INVALID_ARGUMENT"),
        ({"page": 50}, "page", "INVALID_ARGUMENT"),
        ({"page": -1}, "page", "INVALID_ARGUMENT"),
        ({"category_path": "no/such/category"}, "category_path", "CATEGORY_NOT_FOUND"),
        ({"brands": [" "]}, "brands", "INVALID_ARGUMENT"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(mesh, world, fields, bad_field, reason):
    client = stub(mesh)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.SearchProducts(pb.SearchProductsRequest(**fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field_of(caught.value) == bad_field
    assert reason_of(caught.value) == reason


async def test_a_category_created_just_after_an_unknown_one_was_asked_for_is_found(mesh, world):
    """An unknown path reloads the category paths; a category created right after that reload is
    not refused as unknown (it used to be, until a second had passed since the reload)."""
    import uuid

    from catalog_svc import loader
    from meshkit.db import open_pool

    client = stub(mesh)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.SearchProducts(pb.SearchProductsRequest(category_path="no/such/category"))
    assert reason_of(caught.value) == "CATEGORY_NOT_FOUND"
    name = f"Fresh {uuid.uuid4().hex[:8]}"
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=1)
    try:
        await loader.ensure_categories(pool, [(name,)])
    finally:
        await pool.close()
    rows = catalog_sql(mesh.database_url, "SELECT path FROM catalog.categories WHERE name = %s", (name,))
    (slug,) = rows[0]
    reply = await client.SearchProducts(pb.SearchProductsRequest(category_path=slug))
    assert reply.total_hits == 0


@pytest.mark.parametrize(
    "text",
    [
        '"; DROP TABLE products; --',
        "title:* OR 1=1",
        '{"match_all": {}}',
        "a & b | !c :* <-> (d)",
        "*",
        "   ",
        "\\u0000 ' \" ` ; -- /* */",
    ],
)
async def test_injection_looking_queries_are_plain_text(mesh, world, text, engine):
    engine, addr = engine
    client = stub(mesh, addr)
    reply = await client.SearchProducts(pb.SearchProductsRequest(q=text, category_path=world.root))
    assert reply.fallback == (engine == "postgres")
    if text.strip():
        assert reply.total_hits == 0  # no operator is interpreted: nothing in the world has these words
    else:
        assert reply.total_hits == len(world.items)  # blank means browse
    # and the table is still there
    after = await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root))
    assert after.total_hits == len(world.items)


async def test_search_is_logged(mesh, world):
    marker = f"{world.word} logged"
    client = stub(mesh)
    await client.SearchProducts(pb.SearchProductsRequest(q=marker, category_path=world.root, in_stock=True))

    async def logged():
        return catalog_sql(
            mesh.database_url,
            "SELECT result_count, engine, filters FROM catalog.search_log WHERE query = %s",
            (marker,),
        )

    rows = await eventually(logged, timeout=10)
    assert rows[0][0] == 0 and rows[0][1] == "opensearch"
    assert rows[0][2]["in_stock"] is True and rows[0][2]["category_path"] == world.root


async def test_search_log_retention_deletes_only_rows_past_90_days(mesh, world):
    from catalog_svc import jobs
    from meshkit.db import open_pool

    old, recent = f"{world.word} old", f"{world.word} recent"
    catalog_sql(
        mesh.database_url,
        "INSERT INTO catalog.search_log (query, filters, result_count, engine, took_ms, created_at) VALUES"
        " (%s, '{}', 0, 'opensearch', 1, now() - interval '91 days'),"
        " (%s, '{}', 0, 'opensearch', 1, now() - interval '89 days')",
        (old, recent),
    )
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=1)
    try:
        deleted = await jobs.purge_search_log(pool, retention_days=90, batch=1)
    finally:
        await pool.close()
    assert deleted >= 1
    left = catalog_sql(
        mesh.database_url, "SELECT query FROM catalog.search_log WHERE query = ANY(%s)", ([old, recent],)
    )
    assert left == [(recent,)]


async def test_every_hit_is_the_product_get_product_answers(mesh, world, engine):
    engine, addr = engine
    client = stub(mesh, addr)
    replies, ids = await all_hits(client, pb.SearchProductsRequest(category_path=world.root))
    assert len(ids) == len(world.items)
    shared = stub(mesh)
    for reply in replies:
        for result in reply.results:
            got = await shared.GetProduct(pb.GetProductRequest(product_id=result.product.id))
            assert result.product == got.product, engine


async def test_a_document_written_before_product_wire_is_answered_from_postgres(mesh, world):
    """Documents indexed by an older catalog_svc carry no product_wire until rewritten: such a hit's
    product is read from PostgreSQL, so the answer is the same."""
    alias = mesh.env["SHOPMESH_SEARCH_INDEX_ALIAS"]
    item = world.items[0]
    doc = indexed_doc(alias, item.product_id)
    assert doc is not None and doc.get("product_wire")
    legacy = {k: v for k, v in doc.items() if k != "product_wire"}
    params = {"version": search_os.document_version(doc), "version_type": "external_gte", "refresh": "true"}
    url = f"{OPENSEARCH}/{alias}/_doc/{item.product_id}"
    client = stub(mesh)
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.put(url, params=params, json=legacy)).raise_for_status()
        try:
            assert "product_wire" not in (indexed_doc(alias, item.product_id) or {})
            replies, ids = await all_hits(client, pb.SearchProductsRequest(category_path=world.root))
            assert sorted(ids) == sorted(i.product_id for i in world.items)
            (result,) = [r for reply in replies for r in reply.results if r.product.id == item.product_id]
            assert not replies[0].fallback and result.in_stock == item.in_stock
            got = await client.GetProduct(pb.GetProductRequest(product_id=item.product_id))
            assert result.product == got.product
        finally:
            (await http.put(url, params=params, json=doc)).raise_for_status()


async def test_an_index_with_documents_from_before_price_cents_filters_on_the_float_price_until_reconcile_rewrites_them(
    mesh, world, tmp_path
):
    """Documents indexed by an older catalog_svc carry no price_cents: price filters on it would
    not see them, so a catalog_svc that finds such documents filters on the float price (every
    document has it, exact below $131,072); reconcile rewrites them, and the next check goes back
    to whole cents. Seen through the one pair of prices the float cannot tell apart."""
    alias = mesh.env["SHOPMESH_SEARCH_INDEX_ALIAS"]
    priced = {
        p: sorted(i.product_id for i in world.items if i.price == Decimal(p))
        for p in ("150000.01", "150000.02")
    }
    old_one = priced["150000.02"][0]
    doc = indexed_doc(alias, old_one)
    assert doc is not None and doc["price_cents"] == 15000002
    legacy = {k: v for k, v in doc.items() if k != "price_cents"}
    params = {"version": search_os.document_version(doc), "version_type": "external_gte", "refresh": "true"}
    url = f"{OPENSEARCH}/{alias}/_doc/{old_one}"
    exact_search = pb.SearchProductsRequest(
        category_path=world.root, min_price=150000.02, max_price=150000.02
    )
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    index = SearchIndex(
        build_client(OPENSEARCH, timeout=30, connections=2),
        alias=alias, shards=1, replicas=0, refresh_interval="1s", timeout=30,
    )  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        (await http.put(url, params=params, json=legacy)).raise_for_status()
        try:
            async with own_catalog(mesh, tmp_path) as catalog:  # checks every 0.5 s (tests.harness)
                client = stub(mesh, catalog.addr)

                async def documents_without_price_cents() -> float | None:
                    return await catalog.metric("search_documents_without_price_cents", {}) or None

                assert await eventually(documents_without_price_cents) == 1
                _, ids = await all_hits(client, exact_search)
                # the float price: the old document is found, and so are its $0.01 neighbours
                assert sorted(ids) == sorted(priced["150000.01"] + priced["150000.02"])

                report = await jobs.reconcile(pool, index)
                assert report.stale >= 1, report
                await index.refresh()
                assert indexed_doc(alias, old_one)["price_cents"] == 15000002

                async def exact_hits(on: pb_grpc.CatalogServiceStub) -> list[int] | None:
                    _, ids = await all_hits(on, exact_search)
                    return sorted(ids) if sorted(ids) == priced["150000.02"] else None

                assert await eventually(lambda: exact_hits(client)) == priced["150000.02"]
                # the shared catalog_svc went through the same: the next tests need it exact again
                assert await eventually(lambda: exact_hits(stub(mesh)))
                assert await catalog.metric("search_documents_without_price_cents", {}) == 0
        finally:
            await index.client.close()
            await pool.close()
            if "price_cents" not in (indexed_doc(alias, old_one) or {}):
                (await http.put(url, params=params, json=doc)).raise_for_status()


async def test_ensure_alias_adds_new_mapping_fields_to_an_existing_index(mesh):
    """An index created before product_wire existed (strict mapping) gets the field, so the new
    documents are accepted instead of refused."""
    alias = f"products-mapping-{uuid.uuid4().hex[:8]}"
    old_mapping = {
        **search_os.MAPPING,
        "properties": {k: v for k, v in search_os.MAPPING["properties"].items() if k != "product_wire"},
    }
    index = SearchIndex(
        build_client(OPENSEARCH, timeout=30, connections=2),
        alias=alias,
        shards=1,
        replicas=0,
        refresh_interval="1s",
        timeout=30,
    )
    try:
        await index.client.indices.create(
            index=f"{alias}-old",
            body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": old_mapping,
                  "aliases": {alias: {}}},
        )  # fmt: skip
        assert await index.ensure_alias() == f"{alias}-old"
        mapping = await index.client.indices.get_mapping(index=f"{alias}-old")
        assert mapping[f"{alias}-old"]["mappings"]["properties"]["product_wire"] == {"type": "binary"}
        product = Product(
            1, 1, "Lamp", "lamp", "", None, "", Decimal("5.00"), Decimal("4.0"), 0, True, "", (), 1,
            dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC),
        )  # fmt: skip
        assert (
            await index.write_documents([search_os.document(product, in_stock=True, inventory_version=1)])
            == 1
        )
    finally:
        await index.client.indices.delete(index=f"{alias}-old", ignore_unavailable=True)
        await index.client.close()
