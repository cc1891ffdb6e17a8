"""Catalog use cases: product reads (cached) and admin writes, one transaction each.

Writes update the product, bump its version and put a CatalogEvent in the outbox in the same
transaction; after commit the cache entry is replaced with the new version and the relay is
nudged. The search index follows through Kafka (consumers.py), never from here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence

import psycopg.errors
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from catalog_svc import events, store
from catalog_svc.cache import ProductCache
from catalog_svc.config import CatalogSettings
from catalog_svc.model import (
    Category,
    CategoryNotFound,
    ListCursor,
    Product,
    ProductDraft,
    ProductNotFound,
    SlugTaken,
    batch_ids,
    decode_page_token,
    encode_page_token,
    first_free_slug,
    merge_update,
    page_size_of,
    slugify,
    update_fields,
    validate_draft,
)
from meshkit.audit import audit, diff
from meshkit.db import connection, transaction
from meshkit.errors import InvalidArgument

SLUG_CONSTRAINT = "products_slug_key"
SLUG_ATTEMPTS = 32  # each collision means another creator committed: allow as many as run at once


def parse_request_id(value: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise InvalidArgument("request_id", "must be a UUID") from exc


class CatalogService:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        cache: ProductCache,
        settings: CatalogSettings,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._topic = settings.topic_catalog_events
        self._on_commit = on_commit

    # -- reads -------------------------------------------------------------------------------------

    async def _load(self, product_ids: Sequence[int]) -> dict[int, Product]:
        found = await self._cache.get_many(product_ids)
        missing = [pid for pid in product_ids if pid not in found]
        if missing:
            found.update(await self._load_uncached(missing))
        return found

    async def _load_uncached(self, product_ids: Sequence[int]) -> dict[int, Product]:
        async with connection(self._pool) as conn:
            loaded = await store.get_products(conn, product_ids)
        await self._cache.put_many(list(loaded.values()))
        return loaded

    async def get_product(self, product_id: int, *, include_inactive: bool) -> Product:
        if product_id <= 0:
            raise InvalidArgument("product_id", "must be positive")
        product = (await self._load([product_id])).get(product_id)
        if product is None or (not product.is_active and not include_inactive):
            raise ProductNotFound(product_id)
        return product

    async def get_product_encoded(self, product_id: int, *, include_inactive: bool) -> bytes:
        """get_product's result in the API's encoding (ProductCache.encode). A cache hit is answered
        with the stored bytes: no JSON, model or message is built on the hottest read."""
        if product_id <= 0:
            raise InvalidArgument("product_id", "must be positive")
        hit = await self._cache.get_encoded(product_id)
        if hit is not None:
            encoded, active = hit
            if not active and not include_inactive:
                raise ProductNotFound(product_id)
            return encoded
        product = (await self._load_uncached([product_id])).get(product_id)
        if product is None or (not product.is_active and not include_inactive):
            raise ProductNotFound(product_id)
        return self._cache.encode(product)

    async def batch_get(self, product_ids: Sequence[int]) -> tuple[list[Product], list[int]]:
        ids = batch_ids(product_ids)
        found = await self._load(ids)
        return [found[i] for i in ids if i in found], [i for i in ids if i not in found]

    async def list_products(
        self, *, category_id: int, page_size: int, page_token: str
    ) -> tuple[list[Product], str]:
        if category_id < 0:
            raise InvalidArgument("category_id", "must be >= 0")
        size = page_size_of(page_size)
        cursor = decode_page_token(page_token, category_id=category_id) if page_token else None
        async with connection(self._pool) as conn:
            if category_id and not await store.category_exists(conn, category_id):
                raise CategoryNotFound("category_id", category_id)
            rows = await store.list_products(conn, category_id=category_id, cursor=cursor, limit=size + 1)
        page, more = rows[:size], len(rows) > size
        token = ""
        if more:
            last = page[-1]
            token = encode_page_token(ListCursor(category_id, last.created_at, last.id))
        return page, token

    async def list_categories(self) -> list[Category]:
        async with connection(self._pool) as conn:
            return await store.list_categories(conn)

    # -- writes ------------------------------------------------------------------------------------

    async def create_product(self, draft: ProductDraft, *, request_id: str = "") -> Product:
        draft = validate_draft(draft)
        rid = parse_request_id(request_id)
        async with transaction(self._pool) as conn:
            if rid is not None:
                earlier = await store.product_by_request(conn, rid)
                if earlier is not None:
                    return earlier
            await self._check_references(conn, draft)
            product_id = await self._insert(conn, draft, rid)
            if product_id is None:  # a concurrent retry with the same request id won
                earlier = await store.product_by_request(conn, rid) if rid else None
                if earlier is None:
                    raise RuntimeError("request id conflict without a product")
                return earlier
            product = (await store.get_products(conn, [product_id]))[product_id]
            await _audit_product(conn, "product.create", None, product)
            await events.product_changed(conn, topic=self._topic, product=product)
        await self._after_write(product)
        return product

    async def update_product(
        self, product_id: int, incoming: ProductDraft, *, paths: Sequence[str]
    ) -> Product:
        if product_id <= 0:
            raise InvalidArgument("product_id", "must be positive")
        fields = update_fields(paths)
        async with transaction(self._pool) as conn:
            current = await store.lock_product(conn, product_id)
            if current is None:
                raise ProductNotFound(product_id)
            merged = validate_draft(merge_update(store.draft_of(current), incoming, fields))
            if merged.seller_id != current.seller_id or merged.category_id != current.category_id:
                await self._check_references(conn, merged)
            await self._update(conn, product_id, merged, current_slug=current.slug, new_slug="slug" in fields)
            product = (await store.get_products(conn, [product_id]))[product_id]
            await _audit_product(conn, "product.update", current, product)
            await events.product_changed(conn, topic=self._topic, product=product)
        await self._after_write(product)
        return product

    async def delete_product(self, product_id: int) -> Product:
        if product_id <= 0:
            raise InvalidArgument("product_id", "must be positive")
        async with transaction(self._pool) as conn:
            current = await store.lock_product(conn, product_id)
            if current is None:
                raise ProductNotFound(product_id)
            if not current.is_active:
                return current
            await store.deactivate_product(conn, product_id)
            product = (await store.get_products(conn, [product_id]))[product_id]
            await _audit_product(conn, "product.delete", current, product)
            await events.product_changed(conn, topic=self._topic, product=product)
        await self._after_write(product)
        return product

    async def _check_references(self, conn: AsyncConnection, draft: ProductDraft) -> None:
        if not await store.seller_exists(conn, draft.seller_id):
            raise InvalidArgument("product.seller_id", f"unknown seller {draft.seller_id}")
        if draft.category_id is not None and not await store.category_exists(conn, draft.category_id):
            raise CategoryNotFound("product.category_id", draft.category_id)

    async def _update(
        self,
        conn: AsyncConnection,
        product_id: int,
        draft: ProductDraft,
        *,
        current_slug: str,
        new_slug: bool,
    ) -> None:
        """Update the row; `new_slug`: the slug is in the mask, the given one or (empty) the title's
        with the lowest free suffix, retried like _insert when a concurrent write takes that one."""
        base = slugify(draft.title)
        for _ in range(SLUG_ATTEMPTS if new_slug and not draft.slug else 1):
            slug = current_slug
            if new_slug:
                taken = [s for s in await store.slugs_taken(conn, base) if s != current_slug]
                slug = draft.slug or first_free_slug(base, taken)
            try:
                async with conn.transaction():  # savepoint: a lost slug race retries, not aborts
                    await store.update_product(conn, product_id, draft, slug=slug)
                return
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != SLUG_CONSTRAINT:
                    raise
                if not new_slug or draft.slug:
                    raise SlugTaken(slug) from exc
        raise SlugTaken(base)

    async def _insert(self, conn: AsyncConnection, draft: ProductDraft, rid: uuid.UUID | None) -> int | None:
        """Insert with a unique slug: the given one, or the title's with the lowest free suffix."""
        base = slugify(draft.title)
        for _ in range(SLUG_ATTEMPTS):
            slug = draft.slug or first_free_slug(base, await store.slugs_taken(conn, base))
            try:
                async with conn.transaction():  # savepoint: a lost slug race retries, not aborts
                    return await store.insert_product(conn, draft, slug=slug, request_id=rid)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != SLUG_CONSTRAINT:
                    raise
                if draft.slug:
                    # a concurrent retry with this request id may hold the slug: the slug's unique
                    # index can be checked before the request id's, so the insert that lost the
                    # race meets its own earlier product as a slug conflict
                    if rid is not None and await store.product_by_request(conn, rid) is not None:
                        return None
                    raise SlugTaken(draft.slug) from exc
        raise SlugTaken(base)

    async def _after_write(self, product: Product) -> None:
        await self._cache.put_many([product], committed=True)
        self._on_commit()


def _audited_fields(product: Product | None) -> dict[str, object]:
    if product is None:
        return {}
    return {
        "title": product.title,
        "slug": product.slug,
        "seller_id": product.seller_id,
        "category_id": product.category_id,
        "price": str(product.price),
        "brand": product.brand,
        "is_active": product.is_active,
        "rating": str(product.rating),
        "review_count": product.review_count,
        "attributes": [[a.name, a.value] for a in product.attributes],
        # descriptions can be long: the trail says that it changed, not what it says
        "description_sha256": hashlib.sha256(product.description.encode()).hexdigest()[:16],
    }


async def _audit_product(conn: AsyncConnection, action: str, before: Product | None, after: Product) -> None:
    """The product's audit record, in the transaction of the change (meshkit.audit)."""
    await audit(
        conn,
        service="catalog_svc",
        action=action,
        resource=f"product/{after.id}",
        changes=diff(_audited_fields(before), _audited_fields(after)),
    )
