"""OpenSearch side of search, as data: index settings and mapping, documents, the query body, and
reading a response back. Pure functions; the client calls live in index_client.py.

The query follows the seed's structure:

  function_score
    query: bool { must: multi_match(title^3, description) or match_all,
                  filter: is_active, category_path term, price range, brand terms, rating range,
                          in_stock term }
    functions (score_mode "sum", boost_mode "multiply"):
      weight 1 (baseline), in_stock=true -> weight 2, rating sqrt x1.2, review_count log1p x1.1
  aggs: categories (terms on category_path, 20), brands (terms, 50), the five price ranges,
        an in-stock count (filter)
  from = page * 20, size = 20; ties broken by id (newest id first) so pages are stable.

Why "sum" and a baseline: the seed fixes the functions but not how they combine. With "multiply",
a product with no reviews (log1p(0) = 0) or no rating (sqrt(0) = 0) would score 0 whatever its
relevance, so new products would sink below everything. Summing keeps every factor a boost:
relevance x (1 + 2 in_stock + sqrt(1.2 rating) + log10(1 + 1.1 reviews)). The PostgreSQL fallback
uses the same factor (search_model.business_factor).

Text semantics match the fallback's plainto_tsquery: every word must occur, in the title or the
description (cross_fields + operator and), english analyzer on both sides.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from catalog_svc.convert import product_wire
from catalog_svc.model import Product
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
    UnresolvedProduct,
)

MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "long"},
        "seller_id": {"type": "long"},
        "title": {"type": "text", "analyzer": "english"},
        "slug": {"type": "keyword", "index": False},
        "description": {"type": "text", "analyzer": "english"},
        "category_id": {"type": "keyword"},
        # every ancestor path and the category's own, so a term filter matches descendants; facet
        # fields build their global ordinals at refresh, not on the first search after each refresh
        "category_path": {"type": "keyword", "eager_global_ordinals": True},
        "category_full_path": {"type": "keyword", "index": False},
        "brand": {"type": "keyword", "eager_global_ordinals": True},
        # what price filters and the price facet read: whole cents, exact at any price. The float
        # `price` stays for documents written before price_cents existed: a 32-bit float has a
        # 24-bit mantissa, so above $131,072 it no longer tells neighbouring cents apart (and above
        # $16.7M neighbouring dollars), and the two engines disagreed on the edges of a filter.
        "price_cents": {"type": "long"},
        "price": {"type": "float"},
        "rating": {"type": "float"},
        "review_count": {"type": "integer"},
        "in_stock": {"type": "boolean"},
        "is_active": {"type": "boolean"},
        "attributes": {
            "type": "nested",
            "properties": {"name": {"type": "keyword"}, "value": {"type": "keyword"}},
        },
        "catalog_version": {"type": "long"},
        "inventory_version": {"type": "long"},
        "created_at": {"type": "date"},
        "updated_at": {"type": "date"},
        # the product as the API sends it (convert.product_wire, base64): what a search hit returns;
        # binary fields are neither indexed nor given doc values, they live in _source only
        "product_wire": {"type": "binary"},
    },
}

# What a search asks back per hit: the encoded product and the stock flag, not the fields the product
# was indexed from. Building the API message from those fields (and before that a Product, with its
# Decimal and datetimes) was the largest part of catalog_svc's own CPU per search; parsing the
# encoded message in C costs a fraction. `id` names the hit when its document predates product_wire.
SOURCE_FIELDS = ["id", "in_stock", "product_wire"]


def index_body(*, shards: int, replicas: int, refresh_interval: str) -> dict[str, Any]:
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "refresh_interval": refresh_interval,
            }
        },
        "mappings": MAPPING,
    }


def ancestor_paths(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']."""
    if not path:
        return []
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def document(product: Product, *, in_stock: bool, inventory_version: int) -> dict[str, Any]:
    return {
        "id": product.id,
        "seller_id": product.seller_id,
        "title": product.title,
        "slug": product.slug,
        "description": product.description,
        "category_id": str(product.category_id) if product.category_id else None,
        "category_path": ancestor_paths(product.category_path),
        "category_full_path": product.category_path,
        "brand": product.brand or None,
        "price": float(product.price),
        "price_cents": cents(product.price),
        "rating": float(product.rating),
        "review_count": product.review_count,
        "in_stock": in_stock,
        "is_active": product.is_active,
        "attributes": [{"name": a.name, "value": a.value} for a in product.attributes],
        "catalog_version": product.version,
        "inventory_version": inventory_version,
        "created_at": product.created_at.isoformat(),
        "updated_at": product.updated_at.isoformat(),
        "product_wire": base64.b64encode(product_wire(product)).decode("ascii"),
    }


def document_version(doc: dict[str, Any]) -> int:
    """External version of a document: both per-product versions only grow, so their sum does."""
    return int(doc["catalog_version"]) + int(doc["inventory_version"])


def cents(amount: Decimal) -> int:
    """Whole cents of an amount already rounded to cents (prices, validated filter bounds)."""
    return int(amount.scaleb(2))


def filters(query: SearchQuery, *, exact_prices: bool = True) -> list[dict[str, Any]]:
    """`exact_prices`: filter on price_cents; False (an index that still holds documents without
    it) filters on the float `price`, as before price_cents existed."""
    out: list[dict[str, Any]] = [{"term": {"is_active": True}}]
    if query.category_path:
        out.append({"term": {"category_path": query.category_path}})
    if query.min_price is not None or query.max_price is not None:
        bounds: dict[str, float | int] = {}
        amount = cents if exact_prices else float
        if query.min_price is not None:
            bounds["gte"] = amount(query.min_price)
        if query.max_price is not None:
            bounds["lte"] = amount(query.max_price)
        out.append({"range": {"price_cents" if exact_prices else "price": bounds}})
    if query.brands:
        out.append({"terms": {"brand": list(query.brands)}})
    if query.min_rating is not None:
        out.append({"range": {"rating": {"gte": float(query.min_rating)}}})
    if query.in_stock:
        out.append({"term": {"in_stock": True}})
    return out


# The parts of the body that never change, built once (the body is serialized straight away and
# never mutated, so every request may share them).
_TEXT_FIELDS = ["title^3", "description"]
_MATCH_ALL: dict[str, Any] = {"match_all": {}}
_FUNCTIONS: list[dict[str, Any]] = [
    {"weight": 1},
    {"filter": {"term": {"in_stock": True}}, "weight": IN_STOCK_WEIGHT},
    {"field_value_factor": {"field": "rating", "modifier": "sqrt", "factor": RATING_FACTOR, "missing": 0}},
    {
        "field_value_factor": {
            "field": "review_count",
            "modifier": "log1p",
            "factor": REVIEW_FACTOR,
            "missing": 0,
        }
    },
]
_SORT: list[dict[str, str]] = [{"_score": "desc"}, {"id": "desc"}]


def _aggs(*, exact_prices: bool) -> dict[str, Any]:
    amount = cents if exact_prices else float
    return {
        "categories": {"terms": {"field": "category_path", "size": CATEGORY_FACET_SIZE}},
        "brands": {"terms": {"field": "brand", "size": BRAND_FACET_SIZE}},
        "price_ranges": {
            "range": {
                "field": "price_cents" if exact_prices else "price",
                "ranges": [
                    {"key": r.key}
                    | ({"from": amount(r.low)} if r.low is not None else {})
                    | ({"to": amount(r.high)} if r.high is not None else {})
                    for r in PRICE_RANGES
                ],
            }
        },
        "in_stock": {"filter": {"term": {"in_stock": True}}},
    }


_AGGS = {True: _aggs(exact_prices=True), False: _aggs(exact_prices=False)}

# What parse_response reads, and all OpenSearch is asked to send back (`filter_path`): per hit only
# the score and the source fields, no index name, id or sort values; no timings or shard header.
RESPONSE_FILTER_PATH = ",".join(
    [
        "hits.total.value",
        "hits.hits._score",
        "hits.hits._source",
        "aggregations.*.buckets.key",
        "aggregations.*.buckets.doc_count",
        "aggregations.in_stock.doc_count",
    ]
)


def query_body(query: SearchQuery, *, exact_prices: bool = True) -> dict[str, Any]:
    if query.q:
        must: dict[str, Any] = {
            "multi_match": {
                "query": query.q,
                "fields": _TEXT_FIELDS,
                "type": "cross_fields",
                "operator": "and",
                "zero_terms_query": "none",
            }
        }
    else:
        must = _MATCH_ALL
    return {
        "from": query.page * PAGE_SIZE,
        "size": PAGE_SIZE,
        "track_total_hits": True,
        "_source": SOURCE_FIELDS,
        "query": {
            "function_score": {
                "query": {"bool": {"must": [must], "filter": filters(query, exact_prices=exact_prices)}},
                "functions": _FUNCTIONS,
                "score_mode": "sum",
                "boost_mode": "multiply",
            }
        },
        "sort": _SORT,
        "aggs": _AGGS[exact_prices],
    }


def _hit(hit: dict[str, Any]) -> SearchHit:
    source = hit["_source"]
    wire = source.get("product_wire")
    return SearchHit(
        wire if wire is not None else UnresolvedProduct(source["id"]),
        source["in_stock"],
        hit.get("_score") or 0.0,
    )


def parse_response(query: SearchQuery, response: dict[str, Any]) -> SearchPage:
    """The page from a response trimmed by RESPONSE_FILTER_PATH (which leaves out empty lists and
    the objects that only held them, hence the defaults)."""
    hits_part = response.get("hits") or {}
    hits = tuple(_hit(hit) for hit in hits_part.get("hits") or ())
    aggs = response.get("aggregations") or {}

    def buckets(name: str) -> tuple[tuple[str, int], ...]:
        return tuple((b["key"], b["doc_count"]) for b in (aggs.get(name) or {}).get("buckets") or ())

    by_key = dict(buckets("price_ranges"))
    facets = Facets(
        categories=buckets("categories"),
        brands=buckets("brands"),
        price_ranges=tuple((r, by_key.get(r.key, 0)) for r in PRICE_RANGES),
        in_stock_count=(aggs.get("in_stock") or {}).get("doc_count", 0),
    )
    return SearchPage(
        hits=hits,
        facets=facets,
        total=hits_part["total"]["value"],
        page=query.page,
        fallback=False,
    )
