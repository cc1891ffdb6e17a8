"""Product RPCs against a real catalog_svc: create/get/update/delete, slugs, idempotent creates,
admin-only writes, listing with page tokens, categories, the Valkey cache (and reads without it)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
import time
import uuid
from decimal import Decimal

import grpc
import pytest
import pytest_asyncio
import valkey.asyncio as valkey_asyncio
from google.protobuf import field_mask_pb2
from shop.catalog.v1 import catalog_pb2 as pb
from shop.common.v1 import money_pb2

from catalog_svc import loader
from catalog_svc.cache import GuardedValkey, ProductCache
from catalog_svc.config import CatalogSettings
from catalog_svc.model import Product
from meshkit.circuit import CircuitBreaker
from meshkit.db import open_pool
from meshkit.settings import load_settings
from tests.harness import free_port
from tests.integration.catalog_helpers import (
    admin_stub,
    bad_field_of,
    catalog_sql,
    own_catalog,
    reason_of,
    stub,
)


@dataclasses.dataclass
class Refs:
    seller_id: int
    category_id: int
    category_path: str
    other_category_id: int


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def refs(mesh) -> Refs:
    await mesh.start("catalog_svc")
    root = f"P{secrets.token_hex(3)}"
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    try:
        categories = await loader.ensure_categories(pool, [(root, "Lamps"), (root, "Rugs")])
        sellers = await loader.ensure_sellers(pool, ["Products Test Seller"])
    finally:
        await pool.close()
    return Refs(
        seller_id=sellers["Products Test Seller"],
        category_id=categories[(root, "Lamps")],
        category_path=f"{root.lower()}/lamps",
        other_category_id=categories[(root, "Rugs")],
    )


def money(units: int, cents: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", units=units, nanos=cents * 10_000_000)


def new_product(refs: Refs, title: str, **fields) -> pb.Product:
    return pb.Product(
        seller_id=refs.seller_id,
        title=title,
        category_id=refs.category_id,
        price=money(19, 99),
        **fields,
    )


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_create_then_get_round_trips_every_field(mesh, refs):
    admin = admin_stub(mesh)
    created = (
        await admin.CreateProduct(
            pb.CreateProductRequest(
                product=new_product(
                    refs,
                    "Café Lamp — Brass, 2-Pack!",
                    description="Warm light.",
                    rating=4.3,
                    review_count=12,
                    brand="Lumen",
                    attributes=[pb.ProductAttribute(name="color", value="brass")],
                )
            )
        )
    ).product
    assert created.id > 0 and created.is_active
    assert created.slug == "cafe-lamp-brass-2-pack"
    assert created.category_path == refs.category_path
    assert (created.price.units, created.price.nanos, created.price.currency_code) == (19, 990_000_000, "USD")
    anonymous = stub(mesh, subject="anonymous")
    got = (await anonymous.GetProduct(pb.GetProductRequest(product_id=created.id))).product
    assert got == created
    assert got.rating == pytest.approx(4.3) and got.review_count == 12
    assert [(a.name, a.value) for a in got.attributes] == [("color", "brass")]


async def test_slugs_are_unique_even_under_concurrent_creates(mesh, refs):
    admin = admin_stub(mesh)
    title = f"Slug Lamp {secrets.token_hex(3)}"
    replies = await asyncio.gather(
        *(admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, title))) for _ in range(6))
    )
    slugs = sorted(r.product.slug for r in replies)
    base = title.lower().replace(" ", "-")
    assert slugs == sorted([base, *(f"{base}-{n}" for n in range(2, 7))])
    error = await expect_error(
        admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Other", slug=base))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert reason_of(error) == "SLUG_ALREADY_EXISTS"


async def test_slugs_stay_unique_under_concurrent_updates_that_derive_them(mesh, refs):
    """An update with `slug` in the mask and no slug derives one from the title, like a create: when
    a concurrent write takes the derived slug it tries the next one (it answered ALREADY_EXISTS)."""
    admin = admin_stub(mesh)
    title = f"Renamed Lamp {secrets.token_hex(3)}"
    created = [
        (await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, f"Lamp {n}")))).product
        for n in range(6)
    ]
    replies = await asyncio.gather(
        *(
            admin.UpdateProduct(
                pb.UpdateProductRequest(
                    product_id=p.id,
                    product=pb.Product(title=title),
                    update_mask=field_mask_pb2.FieldMask(paths=["title", "slug"]),
                )
            )
            for p in created
        )
    )
    base = title.lower().replace(" ", "-")
    assert sorted(r.product.slug for r in replies) == sorted([base, *(f"{base}-{n}" for n in range(2, 7))])


async def test_create_with_a_request_id_is_applied_once(mesh, refs):
    admin = admin_stub(mesh)
    request = pb.CreateProductRequest(
        product=new_product(refs, f"Retry Lamp {secrets.token_hex(3)}"), request_id=str(uuid.uuid4())
    )
    replies = await asyncio.gather(*(admin.CreateProduct(request) for _ in range(4)))
    again = await admin.CreateProduct(request)
    assert {r.product.id for r in replies} == {again.product.id}


async def test_concurrent_retries_with_an_explicit_slug_all_answer_the_one_product(mesh, refs):
    """The retries race on the slug's unique index as much as on the request id's: the losers must
    answer the winner's product, not ALREADY_EXISTS for their own slug."""
    admin = admin_stub(mesh)
    for _ in range(8):
        slug = f"retry-slug-{secrets.token_hex(4)}"
        product = new_product(refs, f"Retry Slug Lamp {secrets.token_hex(3)}")
        product.slug = slug
        request = pb.CreateProductRequest(product=product, request_id=str(uuid.uuid4()))
        replies = await asyncio.gather(
            *(admin.CreateProduct(request) for _ in range(6)), return_exceptions=True
        )
        errors = [r for r in replies if isinstance(r, BaseException)]
        assert not errors, [(e.code(), e.details()) for e in errors if isinstance(e, grpc.aio.AioRpcError)]
        assert len({r.product.id for r in replies}) == 1 and replies[0].product.slug == slug


async def test_writes_are_admin_only(mesh, refs):
    user = stub(mesh, subject="u-1", roles=())
    error = await expect_error(
        user.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Nope"))),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert reason_of(error) == "ADMIN_REQUIRED"
    await expect_error(
        user.DeleteProduct(pb.DeleteProductRequest(product_id=1)), grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize(
    ("product", "field"),
    [
        ({"title": "   "}, "product.title"),
        ({"title": "x" * 501}, "product.title"),
        ({"price": money_pb2.Money(currency_code="USD", units=1, nanos=5)}, "product.price"),
        ({"price": money_pb2.Money(currency_code="EUR", units=1)}, "product.price"),
        ({"rating": 7.0}, "product.rating"),
        ({"seller_id": 0}, "product.seller_id"),
        ({"seller_id": 999_999_999}, "product.seller_id"),
        ({"slug": "Not A Slug"}, "product.slug"),
        ({"category_id": 999_999_999}, "product.category_id"),
    ],
)
async def test_invalid_products_are_rejected_naming_the_field(mesh, refs, product, field):
    admin = admin_stub(mesh)
    message = new_product(refs, "Valid title")
    for name, value in product.items():
        if isinstance(value, money_pb2.Money):
            message.price.CopyFrom(value)
        else:
            setattr(message, name, value)
    error = await expect_error(
        admin.CreateProduct(pb.CreateProductRequest(product=message)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_field_of(error) == field


async def test_update_changes_only_masked_fields_and_reads_see_it_at_once(mesh, refs):
    admin = admin_stub(mesh)
    created = (
        await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Mask Lamp")))
    ).product
    reader = stub(mesh)
    await reader.GetProduct(pb.GetProductRequest(product_id=created.id))  # now cached
    updated = (
        await admin.UpdateProduct(
            pb.UpdateProductRequest(
                product_id=created.id,
                product=pb.Product(title="ignored", price=money(25)),
                update_mask=field_mask_pb2.FieldMask(paths=["price"]),
            )
        )
    ).product
    assert updated.title == "Mask Lamp" and updated.price.units == 25 and updated.price.nanos == 0
    got = (await reader.GetProduct(pb.GetProductRequest(product_id=created.id))).product
    assert got.price.units == 25, "the cache must not serve the old price after a write"
    moved = (
        await admin.UpdateProduct(
            pb.UpdateProductRequest(
                product_id=created.id,
                product=pb.Product(category_id=refs.other_category_id),
                update_mask=field_mask_pb2.FieldMask(paths=["category_id"]),
            )
        )
    ).product
    assert moved.category_path.endswith("/rugs")
    for paths, expected in (
        (["id"], "update_mask"),
        (["is_active"], "update_mask"),
        (["nope"], "update_mask"),
    ):
        error = await expect_error(
            admin.UpdateProduct(
                pb.UpdateProductRequest(
                    product_id=created.id,
                    product=pb.Product(),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_field_of(error) == expected
    error = await expect_error(
        admin.UpdateProduct(
            pb.UpdateProductRequest(
                product_id=987_654_321,
                product=pb.Product(),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert reason_of(error) == "PRODUCT_NOT_FOUND"


async def test_soft_delete_hides_from_shoppers_not_from_admins_or_batch_get(mesh, refs):
    admin = admin_stub(mesh)
    created = (
        await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Gone Lamp")))
    ).product
    shopper = stub(mesh, subject="anonymous")
    await shopper.GetProduct(pb.GetProductRequest(product_id=created.id))
    deleted = (await admin.DeleteProduct(pb.DeleteProductRequest(product_id=created.id))).product
    assert not deleted.is_active
    again = (await admin.DeleteProduct(pb.DeleteProductRequest(product_id=created.id))).product
    assert again == deleted  # idempotent, unchanged
    error = await expect_error(
        shopper.GetProduct(pb.GetProductRequest(product_id=created.id)), grpc.StatusCode.NOT_FOUND
    )
    assert reason_of(error) == "PRODUCT_NOT_FOUND"
    assert not (await admin.GetProduct(pb.GetProductRequest(product_id=created.id))).product.is_active
    service = stub(mesh, subject="order_svc", roles=("service",))
    batch = await service.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=[created.id]))
    assert [p.id for p in batch.products] == [created.id] and not batch.products[0].is_active
    listed = await shopper.ListProducts(pb.ListProductsRequest(category_id=refs.category_id, page_size=100))
    assert created.id not in {p.id for p in listed.products}


async def test_batch_get_keeps_first_mention_order_and_names_unknown_ids(mesh, refs):
    admin = admin_stub(mesh)
    a = (await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Batch A")))).product
    b = (await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Batch B")))).product
    service = stub(mesh, subject="order_svc", roles=("service",))
    reply = await service.BatchGetProducts(
        pb.BatchGetProductsRequest(product_ids=[b.id, 987_654_320, a.id, b.id])
    )
    assert [p.id for p in reply.products] == [b.id, a.id]
    assert list(reply.not_found_product_ids) == [987_654_320]
    shopper = stub(mesh)
    await expect_error(
        shopper.BatchGetProducts(pb.BatchGetProductsRequest(product_ids=[a.id])),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_list_products_pages_with_opaque_tokens_newest_first(mesh, refs):
    admin = admin_stub(mesh)
    pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=2)
    try:
        root = f"L{secrets.token_hex(3)}"
        categories = await loader.ensure_categories(pool, [(root, "Sub")])
    finally:
        await pool.close()
    parent, child = categories[(root,)], categories[(root, "Sub")]
    ids = []
    for n in range(7):
        message = new_product(refs, f"Listed {n}")
        message.category_id = child if n % 2 else parent
        ids.append((await admin.CreateProduct(pb.CreateProductRequest(product=message))).product.id)
    shopper = stub(mesh)
    seen, token, pages = [], "", 0
    while True:
        reply = await shopper.ListProducts(
            pb.ListProductsRequest(category_id=parent, page_size=3, page_token=token)
        )
        seen += [p.id for p in reply.products]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == sorted(ids, reverse=True) and pages == 3  # the parent lists its descendants too
    child_only = await shopper.ListProducts(pb.ListProductsRequest(category_id=child, page_size=100))
    assert [p.id for p in child_only.products] == sorted(ids[1::2], reverse=True)
    first = await shopper.ListProducts(pb.ListProductsRequest(category_id=parent, page_size=3))
    for bad in ("garbage!", first.next_page_token[:-2] + "zz"):
        error = await expect_error(
            shopper.ListProducts(pb.ListProductsRequest(category_id=parent, page_token=bad)),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert bad_field_of(error) == "page_token"
    error = await expect_error(
        shopper.ListProducts(pb.ListProductsRequest(category_id=child, page_token=first.next_page_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_field_of(error) == "page_token"
    error = await expect_error(
        shopper.ListProducts(pb.ListProductsRequest(category_id=987_654_321)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert reason_of(error) == "CATEGORY_NOT_FOUND"


async def test_categories_come_depth_first_with_paths(mesh, refs):
    shopper = stub(mesh)
    categories = (await shopper.ListCategories(pb.ListCategoriesRequest())).categories
    by_id = {c.id: c for c in categories}
    position = {c.id: n for n, c in enumerate(categories)}
    for c in categories:
        if c.parent_id:
            parent = by_id[c.parent_id]
            assert position[parent.id] < position[c.id]
            assert c.path == f"{parent.path}/{c.slug}" and c.depth == parent.depth + 1
        else:
            assert c.path == c.slug and c.depth == 0
    assert by_id[refs.category_id].path == refs.category_path


async def test_a_sibling_whose_slug_extends_another_does_not_split_that_ones_subtree(mesh, refs):
    """'-' sorts before '/': ordered by the whole path, "home", "home-garden", "home/kitchen" came in
    that order, and a client indenting by depth showed kitchen under home-garden."""
    root = f"t{uuid.uuid4().hex[:8]}"
    rows = catalog_sql(
        mesh.database_url,
        "INSERT INTO catalog.categories (name, slug, path, depth, ancestor_paths)"
        " VALUES ('Home', %s, %s, 0, ARRAY[%s]), ('Home Garden', %s, %s, 0, ARRAY[%s]) RETURNING id, slug",
        (root, root, root, f"{root}-garden", f"{root}-garden", f"{root}-garden"),
    )
    home = next(i for i, slug in rows if slug == root)
    catalog_sql(
        mesh.database_url,
        "INSERT INTO catalog.categories (parent_id, name, slug, path, depth, ancestor_paths)"
        " VALUES (%s, 'Kitchen', 'kitchen', %s, 1, ARRAY[%s, %s]) RETURNING id",
        (home, f"{root}/kitchen", root, f"{root}/kitchen"),
    )
    shopper = stub(mesh)  # kept: a garbage-collected channel closes mid-call
    categories = (await shopper.ListCategories(pb.ListCategoriesRequest())).categories
    paths = [c.path for c in categories]
    mine = [p for p in paths if p.split("/")[0] in (root, f"{root}-garden")]
    assert mine == [root, f"{root}/kitchen", f"{root}-garden"]
    # and the whole list: every subtree contiguous, each segment in byte order
    assert paths == sorted(paths, key=lambda p: [s.encode() for s in p.split("/")])


async def test_reads_work_without_valkey(mesh, refs, tmp_path):
    admin = admin_stub(mesh)
    created = (
        await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "No Cache Lamp")))
    ).product
    async with own_catalog(mesh, tmp_path, valkey_url=f"valkey://127.0.0.1:{free_port()}/0") as catalog:
        reader = stub(mesh, catalog.addr)
        for _ in range(5):
            started = time.monotonic()
            got = (await reader.GetProduct(pb.GetProductRequest(product_id=created.id))).product
            assert got == created
            assert time.monotonic() - started < 1.0
        own_admin = admin_stub(mesh, catalog.addr)
        updated = await own_admin.UpdateProduct(
            pb.UpdateProductRequest(
                product_id=created.id,
                product=pb.Product(review_count=3),
                update_mask=field_mask_pb2.FieldMask(paths=["review_count"]),
            )
        )
        assert updated.product.review_count == 3
        assert await catalog.metric("product_cache_requests_total", {"result": "error"}) is not None


async def test_cache_never_replaces_a_newer_version_with_an_older_one(mesh):
    settings = load_settings(CatalogSettings, environ=mesh.env)
    client = valkey_asyncio.from_url(settings.valkey_url)
    cache = ProductCache(
        GuardedValkey(client, timeout=2, breaker=CircuitBreaker("valkey-test-cache")),
        ttl_seconds=60,
        prefix=f"{settings.cache_key_prefix}cache-test:",
    )
    now = dt.datetime.now(dt.UTC)
    old = Product(
        1, 1, "old", "old", "", None, "", Decimal("1.00"), Decimal("0"), 0, True, "", (), 1, now, now
    )
    new = dataclasses.replace(old, title="new", version=2)
    try:
        await cache.put_many([new])
        await cache.put_many([old])  # a slow reader that loaded the row before the write
        assert (await cache.get_many([1]))[1].title == "new"
        ttl = await client.ttl(cache.key(1))
        assert 0 < ttl <= 60
    finally:
        await client.delete(cache.key(1))
        await client.aclose()


async def test_a_refresh_valkey_missed_is_never_overtaken_by_the_entry_from_before_the_write(mesh):
    """A write's cache refresh refused (breaker open after a Valkey stall): the entry from before the
    write, old price and active flag, was served again once the breaker closed, for up to its TTL
    (order_svc prices checkouts from it). Now the refresh is retried first, and skipped entries read
    as misses until it lands."""
    settings = load_settings(CatalogSettings, environ=mesh.env)
    client = valkey_asyncio.from_url(settings.valkey_url)
    now_s = [0.0]
    breaker = CircuitBreaker("valkey-test-unsynced", reset_timeout=10, clock=lambda: now_s[0])
    cache = ProductCache(
        GuardedValkey(client, timeout=2, breaker=breaker),
        ttl_seconds=60,
        prefix=f"{settings.cache_key_prefix}unsynced-test:",
    )
    now = dt.datetime.now(dt.UTC)
    before = Product(
        1, 1, "lamp", "lamp", "", None, "", Decimal("10.00"), Decimal("0"), 0, True, "", (), 1, now, now
    )
    after = dataclasses.replace(before, price=Decimal("99.00"), is_active=False, version=2)
    try:
        await cache.put_many([before])
        for _ in range(3):  # a stall: three timeouts open the breaker
            breaker.acquire().failure()
        await cache.put_many([after], committed=True)  # refused: Valkey still holds version 1
        assert cache.unsynced == {1}
        assert await cache.get_many([1]) == {} and await cache.get_encoded(1) is None

        now_s[0] += 10  # half-open: the next calls go through as probes
        assert (await cache.get_many([1]))[1] == after
        assert cache.unsynced == frozenset()
        assert (await cache.get_encoded(1))[1] is False  # inactive, as written
    finally:
        await client.delete(cache.key(1))
        await client.aclose()


async def test_product_writes_are_audited_with_the_changed_fields(mesh, refs):
    from shop.audit.v1 import audit_pb2, audit_pb2_grpc

    admin = admin_stub(mesh)
    created = (
        await admin.CreateProduct(pb.CreateProductRequest(product=new_product(refs, "Audited Lamp")))
    ).product
    await admin.UpdateProduct(
        pb.UpdateProductRequest(
            product_id=created.id,
            product=pb.Product(price=money(24, 50)),
            update_mask=field_mask_pb2.FieldMask(paths=["price"]),
        )
    )
    await expect_error(  # rejected: no record
        admin.UpdateProduct(
            pb.UpdateProductRequest(
                product_id=created.id,
                product=pb.Product(price=money(-1)),
                update_mask=field_mask_pb2.FieldMask(paths=["price"]),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await admin.DeleteProduct(pb.DeleteProductRequest(product_id=created.id))
    await admin.DeleteProduct(pb.DeleteProductRequest(product_id=created.id))  # already inactive: no change
    auditor = audit_pb2_grpc.AuditServiceStub(mesh.channel("catalog_svc", "auditor", ("admin",)))
    reply = await auditor.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(resource=f"product/{created.id}")
    )
    records = list(reversed(reply.records))
    assert [r.action for r in records] == ["product.create", "product.update", "product.delete"]
    assert (
        records[1].changes["price"]["before"] == "19.99" and records[1].changes["price"]["after"] == "24.50"
    )
    assert set(records[1].changes.keys()) == {"price"}
    assert records[2].changes["is_active"]["after"] is False
    assert len({r.actor for r in records}) == 1 and "admin" in records[0].actor_roles
