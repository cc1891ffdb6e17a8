"""Product, category and seller SQL of catalog_svc, against its own `catalog` schema (search_path).

Functions take an open connection (usually inside the caller's transaction) and never commit.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from catalog_svc.model import Attribute, Category, ListCursor, Product, ProductDraft

Row = dict[str, Any]

PRODUCT_COLUMNS = (
    "p.id, p.seller_id, p.title, p.slug, p.description, p.category_id, coalesce(c.path, '') AS category_path,"
    " p.price, p.rating, p.review_count, p.is_active, p.brand, p.attributes, p.version,"
    " p.created_at, p.updated_at"
)
PRODUCT_FROM = "products p LEFT JOIN categories c ON c.id = p.category_id"


def product_of(row: Row) -> Product:
    return Product(
        id=row["id"],
        seller_id=row["seller_id"],
        title=row["title"],
        slug=row["slug"],
        description=row["description"],
        category_id=row["category_id"],
        category_path=row["category_path"],
        price=row["price"],
        rating=row["rating"],
        review_count=row["review_count"],
        is_active=row["is_active"],
        brand=row["brand"],
        attributes=tuple(Attribute(a["name"], a["value"]) for a in row["attributes"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def draft_of(product: Product) -> ProductDraft:
    return ProductDraft(
        seller_id=product.seller_id,
        title=product.title,
        price=product.price,
        slug=product.slug,
        description=product.description,
        category_id=product.category_id,
        rating=product.rating,
        review_count=product.review_count,
        brand=product.brand,
        attributes=product.attributes,
    )


def _attributes_json(attributes: Sequence[Attribute]) -> str:
    return json.dumps([{"name": a.name, "value": a.value} for a in attributes])


async def get_products(conn: AsyncConnection, product_ids: Sequence[int]) -> dict[int, Product]:
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM {PRODUCT_FROM} WHERE p.id = ANY(%s)", (list(product_ids),)
    )
    return {row["id"]: product_of(row) for row in await cur.fetchall()}


async def lock_product(conn: AsyncConnection, product_id: int) -> Product | None:
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM {PRODUCT_FROM} WHERE p.id = %s FOR UPDATE OF p", (product_id,)
    )
    row = await cur.fetchone()
    return product_of(row) if row else None


async def product_by_request(conn: AsyncConnection, request_id: uuid.UUID) -> Product | None:
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM {PRODUCT_FROM} WHERE p.request_id = %s", (request_id,)
    )
    row = await cur.fetchone()
    return product_of(row) if row else None


async def list_products(
    conn: AsyncConnection, *, category_id: int, cursor: ListCursor | None, limit: int
) -> list[Product]:
    """Active products newest first; a category includes its descendants (by materialized path)."""
    where = ["p.is_active"]
    params: list[Any] = []
    if category_id:
        where.append(
            "p.category_id IN (SELECT d.id FROM categories a JOIN categories d"
            " ON d.path = a.path OR d.path LIKE a.path || '/%%' WHERE a.id = %s)"
        )
        params.append(category_id)
    if cursor is not None:
        where.append("(p.created_at, p.id) < (%s, %s)")
        params += [cursor.created_at, cursor.product_id]
    params.append(limit)
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS} FROM {PRODUCT_FROM} WHERE {' AND '.join(where)}"
        " ORDER BY p.created_at DESC, p.id DESC LIMIT %s",
        params,
    )
    return [product_of(row) for row in await cur.fetchall()]


async def slugs_taken(conn: AsyncConnection, base: str) -> list[str]:
    """Slugs equal to `base` or `base-<n>` (slugs hold only [a-z0-9-], so LIKE needs no escaping)."""
    cur = await conn.execute("SELECT slug FROM products WHERE slug = %s OR slug LIKE %s", (base, base + "-%"))
    return [row["slug"] for row in await cur.fetchall()]


async def insert_product(
    conn: AsyncConnection, draft: ProductDraft, *, slug: str, request_id: uuid.UUID | None
) -> int | None:
    """New product id, or None when `request_id` was used before (the caller returns that product)."""
    cur = await conn.execute(
        "INSERT INTO products (seller_id, title, slug, description, category_id, price, rating,"
        " review_count, brand, attributes, request_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (request_id) DO NOTHING RETURNING id",
        (
            draft.seller_id,
            draft.title,
            slug,
            draft.description,
            draft.category_id,
            draft.price,
            draft.rating,
            draft.review_count,
            draft.brand,
            _attributes_json(draft.attributes),
            request_id,
        ),
    )
    row = await cur.fetchone()
    return row["id"] if row else None


async def update_product(conn: AsyncConnection, product_id: int, draft: ProductDraft, *, slug: str) -> None:
    await conn.execute(
        "UPDATE products SET seller_id = %s, title = %s, slug = %s, description = %s, category_id = %s,"
        " price = %s, rating = %s, review_count = %s, brand = %s, attributes = %s,"
        " version = version + 1, updated_at = now() WHERE id = %s",
        (
            draft.seller_id,
            draft.title,
            slug,
            draft.description,
            draft.category_id,
            draft.price,
            draft.rating,
            draft.review_count,
            draft.brand,
            _attributes_json(draft.attributes),
            product_id,
        ),
    )


async def deactivate_product(conn: AsyncConnection, product_id: int) -> None:
    await conn.execute(
        "UPDATE products SET is_active = false, version = version + 1, updated_at = now() WHERE id = %s",
        (product_id,),
    )


async def seller_exists(conn: AsyncConnection, seller_id: int) -> bool:
    cur = await conn.execute("SELECT 1 FROM sellers WHERE id = %s", (seller_id,))
    return await cur.fetchone() is not None


async def ensure_seller(conn: AsyncConnection, name: str) -> int:
    cur = await conn.execute(
        "INSERT INTO sellers (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id",
        (name,),
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"]


# -- categories --------------------------------------------------------------------------------------


def category_of(row: Row) -> Category:
    return Category(
        id=row["id"],
        parent_id=row["parent_id"],
        name=row["name"],
        slug=row["slug"],
        path=row["path"],
        depth=row["depth"],
    )


async def list_categories(conn: AsyncConnection) -> list[Category]:
    # depth-first: by the path's segments, each in byte order ('C'). Sorting the whole path put a
    # sibling whose slug extends another's between that one and its children ("home", "home-garden",
    # "home/kitchen": '-' sorts before '/'), so kitchen looked like home-garden's child.
    cur = await conn.execute(
        "SELECT id, parent_id, name, slug, path, depth FROM categories"
        " ORDER BY string_to_array(path, '/') COLLATE \"C\""
    )
    return [category_of(row) for row in await cur.fetchall()]


async def category_exists(conn: AsyncConnection, category_id: int) -> bool:
    cur = await conn.execute("SELECT 1 FROM categories WHERE id = %s", (category_id,))
    return await cur.fetchone() is not None


async def ensure_category(conn: AsyncConnection, *, parent_id: int | None, name: str, slug: str) -> Category:
    """Get or create the child `slug` of `parent_id` (None: a root), computing its path."""
    if parent_id is None:
        path, depth, ancestors = slug, 0, [slug]
    else:
        cur = await conn.execute(
            "SELECT path, depth, ancestor_paths FROM categories WHERE id = %s", (parent_id,)
        )
        parent = await cur.fetchone()
        if parent is None:
            raise LookupError(f"category {parent_id} does not exist")
        path = f"{parent['path']}/{slug}"
        depth = parent["depth"] + 1
        ancestors = [*parent["ancestor_paths"], path]
    cur = await conn.execute(
        "INSERT INTO categories (parent_id, name, slug, path, depth, ancestor_paths)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET name = categories.name"
        " RETURNING id, parent_id, name, slug, path, depth",
        (parent_id, name, slug, path, depth, ancestors),
    )
    row = await cur.fetchone()
    assert row is not None
    return category_of(row)


async def db_now(conn: AsyncConnection) -> dt.datetime:
    cur = await conn.execute("SELECT now() AS now")
    row = await cur.fetchone()
    assert row is not None
    return row["now"]


# -- search log --------------------------------------------------------------------------------------


async def insert_search_log(conn: AsyncConnection, rows: Sequence[tuple[str, str, int, str, float]]) -> None:
    """rows: (query, filters json, result_count, engine, took_ms). COPY: ~2.4 us of client CPU a row
    against ~9 us for executemany's INSERTs, and the writer runs on the serving thread."""
    async with (
        conn.cursor() as cur,
        cur.copy("COPY search_log (query, filters, result_count, engine, took_ms) FROM STDIN") as copy,
    ):
        for row in rows:
            await copy.write_row(row)


async def purge_search_log(conn: AsyncConnection, *, older_than_days: int, batch: int) -> int:
    """Delete up to `batch` rows past retention (oldest first); returns how many."""
    cur = await conn.execute(
        "DELETE FROM search_log WHERE id IN (SELECT id FROM search_log"
        " WHERE created_at < now() - make_interval(days => %s) ORDER BY created_at LIMIT %s)",
        (older_than_days, batch),
    )
    return cur.rowcount


async def bulk_insert_products(
    conn: AsyncConnection, drafts: Sequence[ProductDraft], slugs: Sequence[str]
) -> dict[str, int]:
    """Insert many products in one statement (loaders); returns slug -> id of those inserted.
    Rows whose slug is taken are skipped (the caller retries them with another slug)."""
    cur = await conn.execute(
        "INSERT INTO products (seller_id, title, slug, description, category_id, price, rating, review_count,"
        " brand, attributes)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::numeric[],"
        " %s::numeric[], %s::int[], %s::text[], %s::jsonb[])"
        " ON CONFLICT (slug) DO NOTHING RETURNING id, slug",
        (
            [d.seller_id for d in drafts],
            [d.title for d in drafts],
            list(slugs),
            [d.description for d in drafts],
            [d.category_id for d in drafts],
            [d.price for d in drafts],
            [d.rating for d in drafts],
            [d.review_count for d in drafts],
            [d.brand for d in drafts],
            [_attributes_json(d.attributes) for d in drafts],
        ),
    )
    return {row["slug"]: row["id"] for row in await cur.fetchall()}
