"""The PostgreSQL search fallback: full-text (plainto_tsquery + ts_rank over the GIN-indexed
`products.search` vector), the same filters and ranking factor as OpenSearch, and the same facets
computed in SQL (the seed returns none; we return them all).

One statement, one round trip: a materialized CTE of the hits, the counts and facets over it, and the
page's products (store's columns) joined in. Every value is a bound parameter; only fixed SQL
fragments are composed.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from catalog_svc import store
from catalog_svc.search_model import (
    BRAND_FACET_SIZE,
    CATEGORY_FACET_SIZE,
    IN_STOCK_WEIGHT,
    PAGE_SIZE,
    PRICE_RANGES,
    RATING_FACTOR,
    REVIEW_FACTOR,
    Facets,
    SearchHit,
    SearchPage,
    SearchQuery,
)


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(query: SearchQuery, params: dict[str, Any]) -> list[sql.Composable]:
    where: list[sql.Composable] = [sql.SQL("p.is_active")]
    if query.q:
        where.append(sql.SQL("p.search @@ tq"))
    if query.category_path:
        params["cp"] = query.category_path
        params["cp_like"] = escape_like(query.category_path) + "/%"
        where.append(
            sql.SQL(
                # an array (InitPlan) rather than IN (subquery): the planner can then combine the
                # category index with the text index (BitmapAnd) instead of joining afterwards
                "p.category_id = ANY (ARRAY(SELECT id FROM categories"
                " WHERE path = %(cp)s OR path LIKE %(cp_like)s))"
            )
        )
    if query.min_price is not None:
        params["min_price"] = query.min_price
        where.append(sql.SQL("p.price >= %(min_price)s"))
    if query.max_price is not None:
        params["max_price"] = query.max_price
        where.append(sql.SQL("p.price <= %(max_price)s"))
    if query.brands:
        params["brands"] = list(query.brands)
        where.append(sql.SQL("p.brand = ANY(%(brands)s)"))
    if query.min_rating is not None:
        params["min_rating"] = query.min_rating
        where.append(sql.SQL("p.rating >= %(min_rating)s"))
    if query.in_stock:
        where.append(sql.SQL("coalesce(s.in_stock, false)"))
    return where


def _price_counts() -> sql.Composable:
    parts = []
    for r in PRICE_RANGES:
        bounds = []
        if r.low is not None:
            bounds.append(sql.SQL("price >= {}").format(sql.Literal(r.low)))
        if r.high is not None:
            bounds.append(sql.SQL("price < {}").format(sql.Literal(r.high)))
        parts.append(
            sql.SQL("count(*) FILTER (WHERE {}) AS {}").format(
                sql.SQL(" AND ").join(bounds), sql.Identifier(f"range_{r.key}")
            )
        )
    return sql.SQL(", ").join(parts)


def build_statement(query: SearchQuery) -> tuple[sql.Composed, dict[str, Any]]:
    params: dict[str, Any] = {
        "offset": query.page * PAGE_SIZE,
        "limit": PAGE_SIZE,
        "in_stock_weight": IN_STOCK_WEIGHT,
        "rating_factor": RATING_FACTOR,
        "review_factor": REVIEW_FACTOR,
    }
    if query.q:
        params["q"] = query.q
        source = sql.SQL(
            "products p CROSS JOIN plainto_tsquery('english', %(q)s) AS tq"
            " LEFT JOIN stock_status s ON s.product_id = p.id"
        )
        relevance = sql.SQL("ts_rank(p.search, tq)")
    else:
        source = sql.SQL("products p LEFT JOIN stock_status s ON s.product_id = p.id")
        relevance = sql.SQL("1.0")
    statement = sql.SQL(
        """
WITH hits AS MATERIALIZED (
    SELECT p.id, p.price, p.brand, p.category_id, coalesce(s.in_stock, false) AS in_stock,
           ({relevance} * (1 + CASE WHEN coalesce(s.in_stock, false) THEN %(in_stock_weight)s ELSE 0 END
                + sqrt(%(rating_factor)s * p.rating::float8)
                + log(1 + %(review_factor)s * p.review_count)))::float8 AS score
    FROM {source}
    WHERE {where}
),
summary AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE in_stock) AS in_stock_count, {price_counts},
        (SELECT coalesce(json_agg(json_build_array(brand, n) ORDER BY n DESC, brand COLLATE "C"), '[]')
           FROM (SELECT brand, count(*) AS n FROM hits WHERE brand <> '' GROUP BY brand
                 ORDER BY n DESC, brand COLLATE "C" LIMIT {brand_size}) b) AS brands,
        -- counted per category first, then added up over each category's ancestor paths
        (SELECT coalesce(json_agg(json_build_array(path, n) ORDER BY n DESC, path COLLATE "C"), '[]')
           FROM (SELECT a.path, sum(h.n)::bigint AS n
                   FROM (SELECT category_id, count(*) AS n FROM hits GROUP BY category_id) h
                   JOIN categories c ON c.id = h.category_id
                   CROSS JOIN LATERAL unnest(c.ancestor_paths) AS a(path)
                  GROUP BY a.path ORDER BY n DESC, a.path COLLATE "C" LIMIT {category_size}) x) AS categories
    FROM hits
),
page AS (
    SELECT id, score, in_stock FROM hits ORDER BY score DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s
)
-- one row per hit of the page (one row with NULL product columns when the page is empty); the
-- counts and facets are read from the first row only
SELECT summary.*, page.score AS hit_score, page.in_stock AS hit_in_stock, {product_columns}
FROM summary
LEFT JOIN (page JOIN {product_from} ON p.id = page.id) ON true
ORDER BY page.score DESC, page.id DESC
"""
    ).format(
        relevance=relevance,
        source=source,
        where=sql.SQL(" AND ").join(_conditions(query, params)),
        price_counts=_price_counts(),
        brand_size=sql.Literal(BRAND_FACET_SIZE),
        category_size=sql.Literal(CATEGORY_FACET_SIZE),
        product_columns=sql.SQL(store.PRODUCT_COLUMNS),
        product_from=sql.SQL(store.PRODUCT_FROM),
    )
    return statement, params


async def search(conn: AsyncConnection, query: SearchQuery) -> SearchPage:
    statement, params = build_statement(query)
    cur = await conn.execute(statement, params)
    rows = await cur.fetchall()
    first = rows[0]
    hits = tuple(
        SearchHit(store.product_of(row), row["hit_in_stock"], row["hit_score"])
        for row in rows
        if row["id"] is not None
    )
    facets = Facets(
        categories=tuple((path, int(n)) for path, n in first["categories"]),
        brands=tuple((brand, int(n)) for brand, n in first["brands"]),
        price_ranges=tuple((r, int(first[f"range_{r.key}"])) for r in PRICE_RANGES),
        in_stock_count=int(first["in_stock_count"]),
    )
    return SearchPage(hits=hits, facets=facets, total=int(first["total"]), page=query.page, fallback=True)
