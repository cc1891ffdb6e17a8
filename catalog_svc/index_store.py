"""Index sync SQL: catalog's stock knowledge, applied event versions, and the dirty-product queue.

The indexer never writes a document from an event payload. It records what the event says in
PostgreSQL (guarded by the event's per-product version) and marks the product dirty; the sync
loop then rebuilds the document from PostgreSQL. So events arriving out of order across the two
topics cannot leave an old state in the index.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence

from psycopg import AsyncConnection

from catalog_svc.model import Product
from catalog_svc.store import PRODUCT_COLUMNS, PRODUCT_FROM, product_of

IndexRow = tuple[Product, bool, int]  # product, in_stock, inventory version of that in_stock


class StockApplied(enum.Enum):
    STALE = "stale"  # an event at or below the version already applied: nothing changed
    RECORDED = "recorded"  # newer, same in_stock: stock_status updated, the document stays
    REINDEX = "reindex"  # in_stock changed (or first seen): the document must be rewritten


async def apply_stock_level(
    conn: AsyncConnection, *, product_id: int, in_stock: bool, available: int, version: int
) -> StockApplied:
    """Record a StockLevelChanged unless a newer one was applied. The document needs rewriting only
    when in_stock changed (or the product had no stock row): in_stock_version moves only then."""
    cur = await conn.execute(
        "INSERT INTO stock_status (product_id, in_stock, available, version, in_stock_version)"
        " VALUES (%(id)s, %(in_stock)s, %(available)s, %(version)s, %(version)s)"
        " ON CONFLICT (product_id) DO UPDATE SET in_stock = EXCLUDED.in_stock,"
        " available = EXCLUDED.available, version = EXCLUDED.version, updated_at = now(),"
        " in_stock_version = CASE WHEN stock_status.in_stock = EXCLUDED.in_stock"
        " THEN stock_status.in_stock_version ELSE EXCLUDED.version END"
        " WHERE stock_status.version < EXCLUDED.version"
        " RETURNING in_stock_version = version AS reindex",
        {"id": product_id, "in_stock": in_stock, "available": available, "version": version},
    )
    row = await cur.fetchone()
    if row is None:
        return StockApplied.STALE
    return StockApplied.REINDEX if row["reindex"] else StockApplied.RECORDED


async def apply_catalog_version(conn: AsyncConnection, *, product_id: int, version: int) -> bool:
    """True when `version` is newer than the last catalog event applied for the product."""
    cur = await conn.execute(
        "INSERT INTO index_versions (product_id, catalog_version) VALUES (%s, %s)"
        " ON CONFLICT (product_id) DO UPDATE SET catalog_version = EXCLUDED.catalog_version"
        " WHERE index_versions.catalog_version < EXCLUDED.catalog_version RETURNING product_id",
        (product_id, version),
    )
    return await cur.fetchone() is not None


async def database_now(conn: AsyncConnection) -> dt.datetime:
    cur = await conn.execute("SELECT clock_timestamp() AS now")
    return (await cur.fetchone())["now"]


async def repair_stock(
    conn: AsyncConnection, *, product_id: int, in_stock: bool, available: int, asked_at: dt.datetime
) -> bool:
    """Correct in_stock from inventory's answer (reconcile); the event version is left as it is.
    Only if no stock event was applied since `asked_at` (before inventory was asked): such an event
    is newer than the answer, and overwriting it left in_stock wrong until the next flip or reconcile.
    (An event applied by a transaction that began before asked_at predates the answer: kept out.)"""
    cur = await conn.execute(
        "INSERT INTO stock_status (product_id, in_stock, available, version) VALUES (%s, %s, %s, 0)"
        " ON CONFLICT (product_id) DO UPDATE SET in_stock = EXCLUDED.in_stock,"
        " available = EXCLUDED.available, updated_at = now()"
        " WHERE stock_status.updated_at < %s RETURNING 1",
        (product_id, in_stock, available, asked_at),
    )
    return await cur.fetchone() is not None


async def mark_dirty(conn: AsyncConnection, product_ids: Sequence[int]) -> None:
    await conn.execute(
        "INSERT INTO index_dirty (product_id) SELECT unnest(%s::bigint[])"
        " ON CONFLICT (product_id) DO UPDATE SET seq = nextval('index_dirty_seq'), marked_at = now()",
        (list(product_ids),),
    )


async def dirty_batch(conn: AsyncConnection, limit: int) -> list[tuple[int, int]]:
    cur = await conn.execute("SELECT product_id, seq FROM index_dirty ORDER BY seq LIMIT %s", (limit,))
    return [(row["product_id"], row["seq"]) for row in await cur.fetchall()]


async def clear_dirty(conn: AsyncConnection, marks: Sequence[tuple[int, int]]) -> None:
    """Delete the marks handled; a product marked again meanwhile has a new seq and stays."""
    await conn.execute(
        "DELETE FROM index_dirty d USING unnest(%s::bigint[], %s::bigint[]) AS t(product_id, seq)"
        " WHERE d.product_id = t.product_id AND d.seq = t.seq",
        ([m[0] for m in marks], [m[1] for m in marks]),
    )


async def dirty_count(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM index_dirty")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def index_rows(conn: AsyncConnection, product_ids: Sequence[int]) -> list[IndexRow]:
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS}, coalesce(s.in_stock, false) AS in_stock,"
        f" coalesce(s.in_stock_version, 0) AS inventory_version"
        f" FROM {PRODUCT_FROM} LEFT JOIN stock_status s ON s.product_id = p.id WHERE p.id = ANY(%s)",
        (list(product_ids),),
    )
    return [(product_of(r), r["in_stock"], r["inventory_version"]) for r in await cur.fetchall()]


async def index_rows_after(conn: AsyncConnection, after_id: int, limit: int) -> list[IndexRow]:
    """Every product (active or not) with id > after_id, ascending: the reindex/reconcile scan."""
    cur = await conn.execute(
        f"SELECT {PRODUCT_COLUMNS}, coalesce(s.in_stock, false) AS in_stock,"
        f" coalesce(s.in_stock_version, 0) AS inventory_version"
        f" FROM {PRODUCT_FROM} LEFT JOIN stock_status s ON s.product_id = p.id"
        f" WHERE p.id > %s ORDER BY p.id LIMIT %s",
        (after_id, limit),
    )
    return [(product_of(r), r["in_stock"], r["inventory_version"]) for r in await cur.fetchall()]


async def changed_since(conn: AsyncConnection, since: dt.datetime) -> list[int]:
    cur = await conn.execute(
        "SELECT id FROM products WHERE updated_at >= %s"
        " UNION SELECT s.product_id FROM stock_status s JOIN products p ON p.id = s.product_id"
        " WHERE s.updated_at >= %s",
        (since, since),
    )
    return [row["id"] for row in await cur.fetchall()]


async def existing_ids(conn: AsyncConnection, product_ids: Sequence[int]) -> set[int]:
    cur = await conn.execute("SELECT id FROM products WHERE id = ANY(%s)", (list(product_ids),))
    return {row["id"] for row in await cur.fetchall()}


async def stock_of(conn: AsyncConnection, product_ids: Sequence[int]) -> dict[int, bool]:
    cur = await conn.execute(
        "SELECT product_id, in_stock FROM stock_status WHERE product_id = ANY(%s)", (list(product_ids),)
    )
    return {row["product_id"]: row["in_stock"] for row in await cur.fetchall()}


async def bulk_set_stock(conn: AsyncConnection, stock: Sequence[tuple[int, int]]) -> None:
    """(product id, available) pairs as catalog's stock knowledge, version 0 (benchmark loads only:
    real stock arrives as inventory events)."""
    await conn.execute(
        "INSERT INTO stock_status (product_id, in_stock, available, version)"
        " SELECT t.pid, t.available > 0, t.available, 0 FROM unnest(%s::bigint[], %s::int[]) AS t(pid, available)"
        " ON CONFLICT (product_id) DO UPDATE SET in_stock = EXCLUDED.in_stock, available = EXCLUDED.available,"
        " updated_at = now()",
        ([s[0] for s in stock], [s[1] for s in stock]),
    )
