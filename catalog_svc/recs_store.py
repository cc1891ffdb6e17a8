"""Also-bought SQL: co-purchases (from order_created events), computed recommendations, and the
category top-seller fallback. Catalog's own tables only; the orders schema is never read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from psycopg import AsyncConnection

Recommendation = tuple[int, float, int]  # recommended product id, score, frequency


async def add_order(
    conn: AsyncConnection, *, order_id: str, quantities: dict[int, int], ordered_at: dt.datetime
) -> int:
    """Record an order's products once (a redelivered order changes nothing); returns rows added."""
    if not quantities:
        return 0
    cur = await conn.execute(
        "INSERT INTO co_purchases (order_id, product_id, quantity, ordered_at)"
        " SELECT %s, t.product_id, t.quantity, %s FROM unnest(%s::bigint[], %s::int[]) AS t(product_id, quantity)"
        " ON CONFLICT DO NOTHING",
        (order_id, ordered_at, list(quantities), list(quantities.values())),
    )
    return cur.rowcount


async def active_ids_after(conn: AsyncConnection, after_id: int, limit: int) -> list[int]:
    cur = await conn.execute(
        "SELECT id FROM products WHERE is_active AND id > %s ORDER BY id LIMIT %s", (after_id, limit)
    )
    return [row["id"] for row in await cur.fetchall()]


async def compute_also_bought(
    conn: AsyncConnection, product_ids: Sequence[int], *, window_days: int, top_n: int
) -> dict[int, list[Recommendation]]:
    """The seed's query for a batch: per product, the products bought in the same orders over the
    window, by frequency (ties by id), top N; score = frequency / orders containing the product."""
    cur = await conn.execute(
        """
WITH mine AS (  -- the batch's orders in the window, by the (product_id, ordered_at) index
    SELECT order_id, product_id FROM co_purchases
    WHERE product_id = ANY(%(ids)s) AND ordered_at > now() - make_interval(days => %(days)s)
),
totals AS (
    SELECT product_id, count(*) AS orders FROM mine GROUP BY product_id
),
pairs AS (  -- the other lines of those orders, by the primary key (order_id, product_id)
    SELECT m.product_id, b.product_id AS recommended_id, count(*) AS frequency
    FROM mine m JOIN co_purchases b ON b.order_id = m.order_id AND b.product_id <> m.product_id
    GROUP BY m.product_id, b.product_id
),
ranked AS (
    SELECT pairs.*, row_number() OVER (PARTITION BY product_id ORDER BY frequency DESC, recommended_id) AS rn
    FROM pairs
)
SELECT r.product_id, r.recommended_id, r.frequency, r.frequency::float8 / t.orders AS score
FROM ranked r JOIN totals t USING (product_id)
WHERE r.rn <= %(top)s
ORDER BY r.product_id, r.rn
""",
        {"days": window_days, "ids": list(product_ids), "top": top_n},
    )
    out: dict[int, list[Recommendation]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["product_id"], []).append((row["recommended_id"], row["score"], row["frequency"]))
    return out


async def replace_recommendations(
    conn: AsyncConnection, product_ids: Sequence[int], recs: dict[int, list[Recommendation]]
) -> list[int]:
    """Replace the batch's also-bought rows; returns the products whose stored list changed."""
    cur = await conn.execute(
        "DELETE FROM product_recommendations WHERE product_id = ANY(%s) AND type = 'also_bought'"
        " RETURNING product_id, recommended_product_id, score",
        (list(product_ids),),
    )
    before: dict[int, set[tuple[int, float]]] = {}
    for row in await cur.fetchall():
        before.setdefault(row["product_id"], set()).add((row["recommended_product_id"], row["score"]))
    rows = [(pid, rid, score, freq) for pid, items in recs.items() for rid, score, freq in items]
    if rows:
        await conn.execute(
            "INSERT INTO product_recommendations (product_id, recommended_product_id, type, score, frequency)"
            " SELECT t.pid, t.rid, 'also_bought', t.score, t.freq"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::int[]) AS t(pid, rid, score, freq)",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
        )
    changed = []
    for pid in product_ids:
        after = {(rid, score) for rid, score, _ in recs.get(pid, [])}
        if after != before.get(pid, set()):
            changed.append(pid)
    return changed


async def stored_recommendations(
    conn: AsyncConnection, product_id: int, limit: int
) -> list[tuple[int, float]]:
    cur = await conn.execute(
        "SELECT recommended_product_id, score FROM product_recommendations"
        " WHERE product_id = %s AND type = 'also_bought' ORDER BY score DESC, recommended_product_id LIMIT %s",
        (product_id, limit),
    )
    return [(row["recommended_product_id"], row["score"]) for row in await cur.fetchall()]


async def sellable(conn: AsyncConnection, product_ids: Sequence[int]) -> set[int]:
    """Those of the ids that are active and in stock (catalog's knowledge from inventory events)."""
    cur = await conn.execute(
        "SELECT p.id FROM products p JOIN stock_status s ON s.product_id = p.id"
        " WHERE p.id = ANY(%s) AND p.is_active AND s.in_stock",
        (list(product_ids),),
    )
    return {row["id"] for row in await cur.fetchall()}


async def category_of(conn: AsyncConnection, product_id: int) -> tuple[bool, int | None]:
    """(exists and is active, category id) of a product."""
    cur = await conn.execute("SELECT category_id, is_active FROM products WHERE id = %s", (product_id,))
    row = await cur.fetchone()
    return (row is not None and row["is_active"], row["category_id"] if row else None)


async def category_top_sellers(
    conn: AsyncConnection, *, category_id: int, window_days: int, limit: int
) -> list[tuple[int, float]]:
    """Sellable products of the category by units sold over the window (then reviews, then id)."""
    cur = await conn.execute(
        """
WITH sold AS (
    SELECT cp.product_id, sum(cp.quantity) AS units
    FROM co_purchases cp JOIN products p ON p.id = cp.product_id
    WHERE p.category_id = %(category)s AND cp.ordered_at > now() - make_interval(days => %(days)s)
    GROUP BY cp.product_id
)
SELECT p.id, coalesce(sold.units, 0)::float8 AS sold
FROM products p
JOIN stock_status s ON s.product_id = p.id AND s.in_stock
LEFT JOIN sold ON sold.product_id = p.id
WHERE p.category_id = %(category)s AND p.is_active
ORDER BY sold DESC, p.review_count DESC, p.id
LIMIT %(limit)s
""",
        {"category": category_id, "days": window_days, "limit": limit},
    )
    return [(row["id"], row["sold"]) for row in await cur.fetchall()]
