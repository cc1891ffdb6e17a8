"""Index sync through Kafka: stock events flip in_stock, product writes reach the index, stale events
(older per-product versions) are ignored, reindex swaps the alias under live searches, reconcile
repairs drift."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from shop.catalog.v1 import catalog_pb2 as pb
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from catalog_svc import jobs, search_os
from catalog_svc.config import CatalogSettings
from catalog_svc.index_client import BulkError, SearchIndex, build_client
from meshkit.db import open_pool
from meshkit.settings import load_settings
from tests.integration.catalog_helpers import (
    OPENSEARCH,
    World,
    admin_stub,
    build_world,
    catalog_sql,
    consumed,
    eventually,
    indexed_doc,
    inventory_stub,
    produce,
    stock_event,
    stub,
    token,
    wait_indexed,
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(mesh) -> World:
    await mesh.start("inventory_svc")
    await mesh.start("catalog_svc")  # without its scheduled reconcile (tests/harness.py says why)
    built = await build_world(mesh, n=24, seed=11)
    await wait_indexed(mesh, built)
    return built


@pytest_asyncio.fixture(loop_scope="session")
async def index_and_pool(mesh) -> AsyncIterator[tuple[SearchIndex, object, CatalogSettings]]:
    settings = load_settings(CatalogSettings, environ=mesh.env)
    index = SearchIndex(
        build_client(settings.opensearch_url, timeout=5, connections=4),
        alias=settings.search_index_alias,
        shards=1,
        replicas=0,
        refresh_interval="1s",
        timeout=5,
    )
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=4)
    try:
        yield index, pool, settings
    finally:
        await pool.close()
        await index.client.close()


def alias_of(mesh) -> str:
    return mesh.env["SHOPMESH_SEARCH_INDEX_ALIAS"]


async def test_stock_change_through_inventory_flips_in_stock_in_the_index(mesh, world):
    item = next(i for i in world.items if i.in_stock)
    alias = alias_of(mesh)
    inventory = inventory_stub(mesh)
    admin_inventory = inventory_pb2_grpc.InventoryServiceStub(
        mesh.channel("inventory_svc", "ops", ("admin",))
    )
    stock = (await inventory.GetStock(inventory_pb2.GetStockRequest(product_id=item.product_id))).stock
    for row in stock.warehouses:
        if row.available:
            await admin_inventory.AdjustStock(
                inventory_pb2.AdjustStockRequest(
                    product_id=item.product_id,
                    warehouse_id=row.warehouse_id,
                    delta=-row.available,
                    reason="test",
                )
            )

    client = stub(mesh)
    in_stock_query = pb.SearchProductsRequest(category_path=world.root, in_stock=True)

    async def out_of_stock():
        doc = indexed_doc(alias, item.product_id)
        reply = await client.SearchProducts(in_stock_query)
        visible = item.product_id in {r.product.id for r in reply.results}
        return doc is not None and doc["in_stock"] is False and not visible and not reply.fallback

    await eventually(out_of_stock)
    reply = await client.SearchProducts(in_stock_query)
    assert reply.total_hits == sum(1 for i in world.items if i.in_stock) - 1

    await inventory.ReceiveStock(
        inventory_pb2.ReceiveStockRequest(product_id=item.product_id, warehouse_id=2, quantity=4)
    )

    async def back_in_stock():
        doc = indexed_doc(alias, item.product_id)
        return doc is not None and doc["in_stock"] is True

    await eventually(back_in_stock)


async def test_stale_stock_events_are_ignored(mesh, world):
    """Events for one product are applied by version, not by arrival: an older one changes nothing.
    The document is rewritten only when in_stock changes; its inventory_version is the version of
    that change, so a sale that leaves the product in stock costs no OpenSearch write."""
    item = world.items[-1]  # only this test sends hand-made inventory events for it
    alias = alias_of(mesh)
    topic = mesh.topics["SHOPMESH_TOPIC_INVENTORY_EVENTS"]
    bootstrap = mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"]
    key = str(item.product_id)
    base = 1_000_000

    def stock_row():
        return catalog_sql(
            mesh.database_url,
            "SELECT in_stock, available, version, in_stock_version FROM catalog.stock_status"
            " WHERE product_id = %s",
            (item.product_id,),
        )

    ids = produce(bootstrap, topic, [(key, stock_event(item.product_id, version=base, available=0))])
    await consumed(mesh, ids)
    [(in_stock, available, version, out_since)] = stock_row()
    assert (in_stock, available, version) == (False, 0, base)
    # out of stock since `base`, or since an earlier event if it already was
    assert out_since <= base
    await eventually(
        lambda: _doc_matches(alias, item.product_id, in_stock=False, inventory_version=out_since)
    )

    stale = produce(bootstrap, topic, [(key, stock_event(item.product_id, version=base - 1, available=9))])
    await consumed(mesh, stale)
    assert stock_row() == [(False, 0, base, out_since)]
    await asyncio.sleep(1.5)  # a wrongly applied event would be indexed within the sync interval
    assert await _doc_matches(alias, item.product_id, in_stock=False, inventory_version=out_since)

    newer = produce(bootstrap, topic, [(key, stock_event(item.product_id, version=base + 1, available=2))])
    await consumed(mesh, newer)
    await eventually(lambda: _doc_matches(alias, item.product_id, in_stock=True, inventory_version=base + 1))

    # still in stock, only the count moves: recorded, the document is left alone (a rewrite, even
    # of identical content, would take a new sequence number)
    written = _seq_no(alias, item.product_id)
    sale = produce(bootstrap, topic, [(key, stock_event(item.product_id, version=base + 2, available=7))])
    await consumed(mesh, sale)
    assert stock_row() == [(True, 7, base + 2, base + 1)]
    await asyncio.sleep(1.5)
    assert _seq_no(alias, item.product_id) == written
    assert await _doc_matches(alias, item.product_id, in_stock=True, inventory_version=base + 1)


def _seq_no(alias: str, product_id: int) -> int:
    return (
        httpx.get(f"{OPENSEARCH}/{alias}/_doc/{product_id}", timeout=5).raise_for_status().json()["_seq_no"]
    )


async def _doc_matches(alias: str, product_id: int, **fields) -> bool:
    doc = indexed_doc(alias, product_id)
    return doc is not None and all(doc.get(k) == v for k, v in fields.items())


async def test_product_writes_reach_the_index_and_stale_catalog_events_do_not(mesh, world):
    admin = admin_stub(mesh)
    alias = alias_of(mesh)
    item = world.items[1]
    word = token()
    updated = await admin.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=item.product_id,
            product=pb.Product(title=f"Renamed {word} widget"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    client = stub(mesh)

    async def findable():
        reply = await client.SearchProducts(pb.SearchProductsRequest(q=word))
        return [r.product.id for r in reply.results] == [item.product_id] and not reply.fallback

    await eventually(findable)
    version_after_update = indexed_doc(alias, item.product_id)["catalog_version"]

    # an old catalog event (lower version) arriving late changes nothing
    stale = events_pb2.CatalogEvent(product_id=item.product_id, version=1)
    stale.product_upserted.product.CopyFrom(updated.product)
    ids = produce(
        mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"],
        mesh.topics["SHOPMESH_TOPIC_CATALOG_EVENTS"],
        [(str(item.product_id), stale.SerializeToString())],
    )
    await consumed(mesh, ids)
    assert catalog_sql(
        mesh.database_url,
        "SELECT catalog_version FROM catalog.index_versions WHERE product_id = %s",
        (item.product_id,),
    ) == [(version_after_update,)]

    await admin.DeleteProduct(pb.DeleteProductRequest(product_id=item.product_id))

    async def gone():
        reply = await client.SearchProducts(pb.SearchProductsRequest(q=word))
        return reply.total_hits == 0 and not reply.fallback

    await eventually(gone)
    assert indexed_doc(alias, item.product_id)["is_active"] is False


async def test_reindex_swaps_the_alias_while_searches_keep_answering(mesh, world, index_and_pool):
    index, pool, _settings = index_and_pool
    client = stub(mesh)
    before = await index.alias_indexes()
    expected = (await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root))).total_hits
    answers: list[pb.SearchProductsResponse] = []
    stop = asyncio.Event()

    async def keep_searching() -> None:
        while not stop.is_set():
            answers.append(await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root)))

    searcher = asyncio.ensure_future(keep_searching())
    try:
        await asyncio.sleep(0.3)
        report = await jobs.reindex(pool, index, batch_size=7)  # small batches: a longer window
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await searcher
    after = await index.alias_indexes()
    assert after == [report["index"]] and report["index"] not in before
    assert report["replaced"] == before
    async with httpx.AsyncClient() as http:
        for name in before:
            assert (await http.head(f"{OPENSEARCH}/{name}")).status_code == 404, "old index must be dropped"
    assert report["documents"] >= len(world.items)
    assert len(answers) >= 5
    assert all(not a.fallback and a.total_hits == expected for a in answers), [
        (a.fallback, a.total_hits) for a in answers if a.fallback or a.total_hits != expected
    ]
    # writes keep flowing into the new index
    word = token()
    admin = admin_stub(mesh)
    await admin.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=world.items[2].product_id,
            product=pb.Product(description=f"now with {word}"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    )

    async def findable():
        reply = await client.SearchProducts(pb.SearchProductsRequest(q=word))
        return reply.total_hits == 1 and not reply.fallback

    await eventually(findable)


async def _exists(name: str) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.head(f"{OPENSEARCH}/{name}")).status_code == 200


async def test_reindex_whose_old_index_cannot_be_dropped_keeps_the_new_one_live(
    mesh, world, index_and_pool, monkeypatch
):
    """The swap is done when dropping the old index fails: that failure must not make the job
    clean up the index now serving every search (it did: the alias was left on nothing)."""
    index, pool, _settings = index_and_pool
    client = stub(mesh)
    before = await index.alias_indexes()
    real_delete = index.client.indices.delete

    async def refuse_old(*, index: str, **kwargs):
        if any(name in before for name in index.split(",")):
            raise ConnectionError("injected: connection reset while dropping the old index")
        return await real_delete(index=index, **kwargs)

    monkeypatch.setattr(index.client.indices, "delete", refuse_old)
    report = await jobs.reindex(pool, index, batch_size=50)
    monkeypatch.undo()
    try:
        assert await index.alias_indexes() == [report["index"]]
        assert await _exists(report["index"]), "the live index was deleted"
        assert report["replaced"] == before and report["left_behind"] == before
        reply = await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root))
        assert not reply.fallback and reply.total_hits > 0
    finally:
        await real_delete(index=",".join(before), ignore_unavailable=True)


async def test_reindex_whose_swap_raises_after_taking_effect_keeps_the_new_index(
    mesh, world, index_and_pool, monkeypatch
):
    """An alias update OpenSearch applied but whose answer was lost (a timeout) raises in the job;
    the new index then holds the alias and must survive the job's clean-up."""
    index, pool, _settings = index_and_pool
    client = stub(mesh)
    before = await index.alias_indexes()
    real_update = index.client.indices.update_aliases

    async def applied_then_lost(**kwargs):
        await real_update(**kwargs)
        raise TimeoutError("injected: the answer to update_aliases was lost")

    monkeypatch.setattr(index.client.indices, "update_aliases", applied_then_lost)
    with pytest.raises(TimeoutError):
        await jobs.reindex(pool, index, batch_size=50)
    monkeypatch.undo()
    after = await index.alias_indexes()
    try:
        assert len(after) == 1 and after != before
        assert await _exists(after[0]), "the index holding the alias was deleted"
        reply = await client.SearchProducts(pb.SearchProductsRequest(category_path=world.root))
        assert not reply.fallback and reply.total_hits > 0
    finally:
        await index.client.indices.delete(index=",".join(before), ignore_unavailable=True)


def _doc(product_id: int, catalog_version: int, title: str) -> dict:
    return {"id": product_id, "title": title, "catalog_version": catalog_version, "inventory_version": 0}


async def _segments(name: str) -> list[dict]:
    async with httpx.AsyncClient() as http:
        reply = (await http.get(f"{OPENSEARCH}/{name}/_segments")).json()
    return [seg for shard in reply["indices"][name]["shards"]["0"] for seg in shard["segments"].values()]


async def test_only_newer_writes_skip_a_document_already_at_that_version(index_and_pool):
    index, _pool, _settings = index_and_pool
    name = index.new_index_name()
    await index.create_index(name)
    try:
        assert await index.write_documents([_doc(1, 3, "first")], index=name, refresh=True) == 1
        async with httpx.AsyncClient() as http:
            seq_no = (await http.get(f"{OPENSEARCH}/{name}/_doc/1")).json()["_seq_no"]
            # the same version: skipped, the stored document is not rewritten
            assert await index.write_documents([_doc(1, 3, "again")], index=name, only_newer=True) == 0
            # an older one: skipped either way
            assert await index.write_documents([_doc(1, 2, "older")], index=name, only_newer=True) == 0
            # a newer one is written
            assert await index.write_documents([_doc(1, 4, "newer")], index=name, only_newer=True) == 1
            await index.client.indices.refresh(index=name)
            stored = (await http.get(f"{OPENSEARCH}/{name}/_doc/1")).json()
        assert stored["_source"]["title"] == "newer" and stored["_version"] == 4
        assert stored["_seq_no"] == seq_no + 1  # exactly one write after the first
        # without only_newer, the same version is rewritten (what the sync loop and reconcile rely on)
        assert await index.write_documents([_doc(1, 4, "rewritten")], index=name) == 1
    finally:
        await index.client.indices.delete(index=name, ignore_unavailable=True)


async def test_a_rejected_document_is_named_and_the_rest_of_the_bulk_is_written(index_and_pool):
    """A document OpenSearch refuses for what it is (here an unknown field under the strict mapping,
    as after a rollout with a changed document) failed the whole sync batch again and again, and its
    mark sat at the head of every batch: the sync loop now drops such marks, told apart by
    BulkError.rejected / retryable from failures worth a retry."""
    index, _pool, _settings = index_and_pool
    name = index.new_index_name()
    await index.create_index(name)
    try:
        bad = {**_doc(2, 1, "bad"), "not_in_the_mapping": "x"}
        with pytest.raises(BulkError) as failed:
            await index.write_documents([_doc(1, 1, "good"), bad], index=name, refresh=True)
        assert set(failed.value.rejected) == {2} and "strict_dynamic_mapping" in failed.value.rejected[2]
        assert not failed.value.retryable and failed.value.written == 1
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{OPENSEARCH}/{name}/_doc/1")).json()["found"] is True
    finally:
        await index.client.indices.delete(index=name, ignore_unavailable=True)


async def test_compact_merges_an_index_into_one_segment(index_and_pool):
    index, _pool, _settings = index_and_pool
    name = index.new_index_name()
    await index.create_index(name)
    try:
        for batch in range(4):  # each refreshed bulk write leaves a segment of its own
            docs = [_doc(batch * 10 + n, 1, f"doc {batch} {n}") for n in range(10)]
            assert await index.write_documents(docs, index=name, refresh=True) == 10
        assert len(await _segments(name)) > 1
        serving = await index.alias_indexes()
        await index.compact(name)
        segments = await _segments(name)
        assert len(segments) == 1 and segments[0]["num_docs"] == 40
        assert await index.alias_indexes() == serving  # compact never moves the alias
        assert await index.count() >= 0  # and the alias still answers
    finally:
        await index.client.indices.delete(index=name, ignore_unavailable=True)


async def test_reconcile_repairs_missing_stale_and_extra_documents(mesh, world, index_and_pool):
    index, pool, _settings = index_and_pool
    alias = alias_of(mesh)
    missing, altered = world.items[3], world.items[4]
    async with httpx.AsyncClient() as http:
        # lost document: removed at its own version (as if it had never been written)
        lost = (await http.get(f"{OPENSEARCH}/{alias}/_doc/{missing.product_id}")).json()["_source"]
        await http.delete(
            f"{OPENSEARCH}/{alias}/_doc/{missing.product_id}",
            params={
                "version": search_os.document_version(lost),
                "version_type": "external_gte",
                "refresh": "true",
            },
        )
        doc = (await http.get(f"{OPENSEARCH}/{alias}/_doc/{altered.product_id}")).json()["_source"]
        tampered = {**doc, "in_stock": not doc["in_stock"], "title": "tampered"}
        await http.put(
            f"{OPENSEARCH}/{alias}/_doc/{altered.product_id}",
            params={
                "version": search_os.document_version(doc),
                "version_type": "external_gte",
                "refresh": "true",
            },
            json=tampered,
        )
        ghost = {**doc, "id": 987654321, "title": "ghost"}
        await http.put(
            f"{OPENSEARCH}/{alias}/_doc/987654321",
            params={"version": 1, "version_type": "external_gte", "refresh": "true"},
            json=ghost,
        )
    report = await jobs.reconcile(pool, index)
    assert report.missing >= 1 and report.stale >= 1 and report.extra >= 1 and report.ahead == 0, report
    await index.refresh()
    assert indexed_doc(alias, missing.product_id) is not None
    repaired = indexed_doc(alias, altered.product_id)
    assert repaired["in_stock"] == doc["in_stock"] and repaired["title"] != "tampered"
    assert indexed_doc(alias, 987654321) is None


async def test_reconcile_does_not_call_ordinary_lag_ahead(mesh, world, index_and_pool, monkeypatch):
    """The product changes after reconcile read it and the sync loop indexes the change first:
    reconcile's rewrite is refused (older version), which it counted as a document ahead of
    PostgreSQL and logged 'run shopctl search reindex'. A document really ahead is still counted."""
    from catalog_svc import index_store

    index, pool, _settings = index_and_pool
    lagged, restored = world.items[5].product_id, world.items[6].product_id
    fetch_states = index.fetch_states
    calls = []

    async def changed_and_indexed_meanwhile(ids):
        if not calls and lagged in ids:
            async with pool.connection() as conn:
                await conn.execute("UPDATE products SET version = version + 1 WHERE id = %s", (lagged,))
                rows = await index_store.index_rows(conn, [lagged])
            assert await index.write_documents(jobs._docs(rows)) == 1  # the sync loop, first
        calls.append(ids)
        return await fetch_states(ids)

    monkeypatch.setattr(index, "fetch_states", changed_and_indexed_meanwhile)
    lag = await jobs.reconcile(pool, index)
    assert (lag.stale, lag.ahead) == (1, 0), lag
    monkeypatch.undo()

    # a database restored from an older backup: the index holds a later version than it
    catalog_sql(
        mesh.database_url, "UPDATE catalog.products SET version = version - 1 WHERE id = %s", (restored,)
    )
    try:
        behind = await jobs.reconcile(pool, index)
        assert behind.ahead == 1, behind
    finally:
        catalog_sql(
            mesh.database_url, "UPDATE catalog.products SET version = version + 1 WHERE id = %s", (restored,)
        )


async def test_reconcile_repairs_in_stock_from_inventory_but_never_over_a_newer_event(
    mesh, world, index_and_pool
):
    """Reconcile checks catalog's in_stock against inventory's answer. A stock event applied after that
    answer is newer than it: the repair used to overwrite it (in_stock wrong until the next flip or
    reconcile, 10 min later); it now leaves it, and still repairs a row no event touched since."""
    from catalog_svc import index_store

    index, pool, _settings = index_and_pool
    item = next(i for i in world.items if i.in_stock)

    def in_stock_now() -> tuple[bool, int]:
        (row,) = catalog_sql(
            mesh.database_url,
            "SELECT in_stock, version FROM catalog.stock_status WHERE product_id = %s",
            (item.product_id,),
        )
        return row

    async def answer_then_a_restock_event(ids):
        answer = {item.product_id: (0, False)}  # inventory says sold out...
        async with pool.connection() as conn:  # ...then the indexer applies a newer restock event
            await index_store.apply_stock_level(
                conn, product_id=item.product_id, in_stock=True, available=7, version=in_stock_now()[1] + 1
            )
        return answer

    async def sold_out(ids):
        return {item.product_id: (0, False)}

    async def restocked(ids):
        return {item.product_id: (7, True)}

    raced = await jobs.reconcile(pool, index, availability=answer_then_a_restock_event)
    assert raced.stock_repaired == 0 and in_stock_now()[0] is True

    repaired = await jobs.reconcile(pool, index, availability=sold_out)
    assert repaired.stock_repaired == 1 and in_stock_now()[0] is False
    await index.refresh()
    assert indexed_doc(alias_of(mesh), item.product_id)["in_stock"] is False

    back = await jobs.reconcile(pool, index, availability=restocked)  # as the world had it
    assert back.stock_repaired == 1 and in_stock_now()[0] is True
