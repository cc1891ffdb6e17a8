"""The PostgreSQL search fallback: full-text (plainto_tsquery + ts_rank over the GIN-indexed
`products.search` vector), the same filters and ranking factor as OpenSearch, and the same facets
computed in SQL (the seed returns none; we return them all).

One statement: a materialized CTE of the hits, then the page, the counts and the facets over it.
Every value is a bound parameter; only fixed SQL fragments are composed.
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
                "p.category_id IN (SELECT id FROM categories WHERE path = %(cp)s OR path LIKE %(cp_like)s)"
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
stats AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE in_stock) AS in_stock_count, {price_counts}
    FROM hits
)
SELECT stats.*,
    (SELECT coalesce(json_agg(json_build_array(id, score, in_stock) ORDER BY score DESC, id DESC), '[]')
       FROM (SELECT id, score, in_stock FROM hits ORDER BY score DESC, id DESC
             LIMIT %(limit)s OFFSET %(offset)s) pg) AS page,
    (SELECT coalesce(json_agg(json_build_array(brand, n) ORDER BY n DESC, brand COLLATE "C"), '[]')
       FROM (SELECT brand, count(*) AS n FROM hits WHERE brand <> '' GROUP BY brand
             ORDER BY n DESC, brand COLLATE "C" LIMIT {brand_size}) b) AS brands,
    (SELECT coalesce(json_agg(json_build_array(path, n) ORDER BY n DESC, path COLLATE "C"), '[]')
       FROM (SELECT a.path, count(*) AS n FROM hits h JOIN categories c ON c.id = h.category_id
             CROSS JOIN LATERAL unnest(c.ancestor_paths) AS a(path)
             GROUP BY a.path ORDER BY n DESC, a.path COLLATE "C" LIMIT {category_size}) x) AS categories
FROM stats
"""
    ).format(
        relevance=relevance,
        source=source,
        where=sql.SQL(" AND ").join(_conditions(query, params)),
        price_counts=_price_counts(),
        brand_size=sql.Literal(BRAND_FACET_SIZE),
        category_size=sql.Literal(CATEGORY_FACET_SIZE),
    )
    return statement, params


async def search(conn: AsyncConnection, query: SearchQuery) -> SearchPage:
    statement, params = build_statement(query)
    cur = await conn.execute(statement, params)
    row = await cur.fetchone()
    assert row is not None
    page = [(int(pid), float(score), bool(in_stock)) for pid, score, in_stock in row["page"]]
    products = await store.get_products(conn, [pid for pid, _, _ in page]) if page else {}
    hits = tuple(
        SearchHit(product=products[pid], in_stock=in_stock, score=score)
        for pid, score, in_stock in page
        if pid in products
    )
    facets = Facets(
        categories=tuple((path, int(n)) for path, n in row["categories"]),
        brands=tuple((brand, int(n)) for brand, n in row["brands"]),
        price_ranges=tuple((r, int(row[f"range_{r.key}"])) for r in PRICE_RANGES),
        in_stock_count=int(row["in_stock_count"]),
    )
    return SearchPage(hits=hits, facets=facets, total=int(row["total"]), page=query.page, fallback=True)
