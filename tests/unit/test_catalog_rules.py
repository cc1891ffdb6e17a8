"""Catalog rules without servers: slugs, validation, page tokens, the search query shapes, demo data."""

from __future__ import annotations

import datetime as dt
import math
import struct
from decimal import Decimal

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from shop.events.v1 import events_pb2

from catalog_svc import demo, jobs, search_os, search_sql
from catalog_svc.consumers import is_order_created
from catalog_svc.model import (
    ListCursor,
    Product,
    ProductDraft,
    decode_page_token,
    encode_page_token,
    first_free_slug,
    slugify,
    update_fields,
    validate_draft,
)
from catalog_svc.search_model import PRICE_RANGES, SearchQuery, business_factor, validate_search
from meshkit.errors import InvalidArgument


def search(**overrides):
    args = dict(
        q="",
        category_path="",
        min_price=None,
        max_price=None,
        brands=(),
        min_rating=None,
        in_stock=False,
        page=0,
    )
    args.update(overrides)
    return validate_search(max_pages=50, **args)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Café Noir 2-Pack!", "cafe-noir-2-pack"),
        ("  --Hello   World--  ", "hello-world"),
        ("日本語", "product"),
        ("A" * 600, "a" * 488),
    ],
)
def test_slugify(title, slug):
    assert slugify(title) == slug


def test_first_free_slug_takes_the_lowest_free_suffix():
    assert first_free_slug("lamp", []) == "lamp"
    assert first_free_slug("lamp", ["lamp", "lamp-2", "lamp-4"]) == "lamp-3"


def test_validate_draft_normalises_and_names_fields():
    draft = validate_draft(
        ProductDraft(seller_id=1, title="  Lamp ", price=Decimal("5.5"), rating=Decimal("4.26"))
    )
    assert draft.title == "Lamp" and draft.price == Decimal("5.50") and draft.rating == Decimal("4.3")
    with pytest.raises(InvalidArgument) as caught:
        validate_draft(ProductDraft(seller_id=1, title="Lamp", price=Decimal("5.555")))
    assert caught.value.field == "product.price"
    with pytest.raises(InvalidArgument) as caught:
        validate_draft(ProductDraft(seller_id=1, title="La\x00mp", price=Decimal(1)))
    assert caught.value.field == "product.title"


def test_update_mask_rules():
    assert update_fields([]) == update_fields(["*"]) and "title" in update_fields([])
    assert update_fields(["price", "price", "title"]) == ("price", "title")
    for bad in (["id"], ["create_time"], ["nope"]):
        with pytest.raises(InvalidArgument) as caught:
            update_fields(bad)
        assert caught.value.field == "update_mask"


def test_page_tokens_round_trip_and_are_bound_to_their_category():
    cursor = ListCursor(7, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), 42)
    token = encode_page_token(cursor)
    assert decode_page_token(token, category_id=7) == cursor
    for bad, category in ((token, 8), ("%%%", 7), (token[:-3], 7), ("", 7)):
        with pytest.raises(InvalidArgument):
            decode_page_token(bad, category_id=category)


def test_search_validation():
    q = search(
        q="  running\t shoes ", min_price=10.001, max_price=49.999, min_rating=3.01, brands=["A", "A", "B"]
    )
    assert q.q == "running shoes"
    assert (q.min_price, q.max_price, q.min_rating) == (Decimal("10.01"), Decimal("49.99"), Decimal("3.1"))
    assert q.brands == ("A", "B")
    assert search(q="   ").q == "" and search(q="").query_type == "browse"
    cases = [
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x1b"}, "q"),
        ({"min_price": -0.01}, "min_price"),
        ({"min_price": float("nan")}, "min_price"),
        ({"max_price": float("inf")}, "max_price"),
        ({"min_price": 10, "max_price": 9.99}, "max_price"),
        ({"min_rating": 5.1}, "min_rating"),
        ({"page": 50}, "page"),
        ({"page": -1}, "page"),
        ({"brands": ["x"] * 51}, "brands"),
        ({"brands": [""]}, "brands"),
    ]
    for overrides, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            search(**overrides)
        assert caught.value.field == field, overrides
    assert search(page=49).page == 49


def test_business_factor_is_the_seeds_boosts_summed_over_a_baseline():
    plain = business_factor(in_stock=False, rating=0, review_count=0)
    assert plain == 1.0
    assert business_factor(in_stock=True, rating=0, review_count=0) == 3.0
    assert business_factor(in_stock=False, rating=5, review_count=0) == pytest.approx(1 + 6**0.5)
    assert business_factor(in_stock=False, rating=0, review_count=9) == pytest.approx(
        1 + math.log10(1 + 1.1 * 9)
    )
    assert business_factor(in_stock=True, rating=4, review_count=10) > business_factor(
        in_stock=False, rating=4, review_count=10
    )


def test_opensearch_query_follows_the_seed():
    body = search_os.query_body(
        SearchQuery(
            q="lamp", category_path="home", min_price=Decimal(5), brands=("A",), in_stock=True, page=2
        )
    )
    assert (body["from"], body["size"]) == (40, 20)
    score = body["query"]["function_score"]
    match = score["query"]["bool"]["must"][0]["multi_match"]
    assert match["fields"] == ["title^3", "description"] and match["query"] == "lamp"
    filters = score["query"]["bool"]["filter"]
    assert {"term": {"category_path": "home"}} in filters and {"terms": {"brand": ["A"]}} in filters
    assert {"term": {"in_stock": True}} in filters and {"range": {"price_cents": {"gte": 500}}} in filters
    functions = score["functions"]
    assert {"filter": {"term": {"in_stock": True}}, "weight": 2.0} in functions
    factors = {
        f["field_value_factor"]["field"]: f["field_value_factor"]
        for f in functions
        if "field_value_factor" in f
    }
    assert (factors["rating"]["modifier"], factors["rating"]["factor"]) == ("sqrt", 1.2)
    assert (factors["review_count"]["modifier"], factors["review_count"]["factor"]) == ("log1p", 1.1)
    aggs = body["aggs"]
    assert aggs["categories"]["terms"]["size"] == 20 and aggs["brands"]["terms"]["size"] == 50
    assert [r["key"] for r in aggs["price_ranges"]["range"]["ranges"]] == [r.key for r in PRICE_RANGES]
    assert aggs["price_ranges"]["range"]["field"] == "price_cents"
    assert search_os.MAPPING["properties"]["title"]["analyzer"] == "english"
    assert search_os.MAPPING["properties"]["attributes"]["type"] == "nested"


def test_price_filters_and_facets_are_whole_cents_and_the_float_field_only_for_an_old_index():
    # $150,000.01 and $150,000.02 are one and the same 32-bit float (150000.015625): the float field
    # cannot tell them apart, whole cents can
    assert float32(150000.01) == float32(150000.02)
    query = SearchQuery(min_price=Decimal("150000.02"), max_price=Decimal("99999999.99"))
    exact = search_os.query_body(query)["query"]["function_score"]["query"]["bool"]["filter"]
    assert {"range": {"price_cents": {"gte": 15000002, "lte": 9999999999}}} in exact
    legacy = search_os.query_body(query, exact_prices=False)
    assert {"range": {"price": {"gte": 150000.02, "lte": 99999999.99}}} in (
        legacy["query"]["function_score"]["query"]["bool"]["filter"]
    )
    assert legacy["aggs"]["price_ranges"]["range"]["field"] == "price"
    ranges = search_os.query_body(query)["aggs"]["price_ranges"]["range"]["ranges"]
    assert ranges[0] == {"key": "under_25", "to": 2500} and ranges[-1] == {"key": "over_200", "from": 20000}
    assert search_os.cents(Decimal("99999999.99")) == 9999999999 and search_os.cents(Decimal("0.07")) == 7


def float32(value: float) -> float:
    """`value` rounded to the nearest 32-bit float, as OpenSearch stores a `float` field."""
    return struct.unpack("f", struct.pack("f", value))[0]


NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_opensearch_response_trimmed_by_filter_path_reads_back():
    # filter_path drops empty lists and the objects that only held them: an empty result is this
    empty = search_os.parse_response(SearchQuery(page=3), {"hits": {"total": {"value": 0}}})
    assert (empty.hits, empty.total, empty.page, empty.fallback) == ((), 0, 3, False)
    assert empty.facets.categories == () and empty.facets.brands == () and empty.facets.in_stock_count == 0
    assert [n for _, n in empty.facets.price_ranges] == [0] * len(PRICE_RANGES)
    source = search_os.document(
        Product(
            7, 1, "Lamp", "lamp", "", None, "", Decimal("9.99"), Decimal("4.5"), 3, True, "", (), 1, NOW, NOW
        ),
        in_stock=True,
        inventory_version=1,
    )
    page = search_os.parse_response(
        SearchQuery(),
        {
            "hits": {"total": {"value": 41}, "hits": [{"_score": 2.5, "_source": source}]},
            "aggregations": {
                "categories": {"buckets": [{"key": "home", "doc_count": 41}]},
                "price_ranges": {"buckets": [{"key": "25_to_50", "doc_count": 40}]},
                "in_stock": {"doc_count": 39},
            },
        },
    )
    assert [(h.product, h.in_stock, h.score) for h in page.hits] == [(source["product_wire"], True, 2.5)]
    assert page.total == 41 and page.facets.categories == (("home", 41),) and page.facets.brands == ()
    assert dict((r.key, n) for r, n in page.facets.price_ranges)["25_to_50"] == 40
    assert page.facets.in_stock_count == 39


def test_fallback_sql_carries_user_text_only_as_parameters():
    hostile = "x'); DROP TABLE products; --"
    statement, params = search_sql.build_statement(
        SearchQuery(q=hostile, category_path="a_b%", brands=(hostile,), min_price=Decimal(1))
    )
    text = statement.as_string(None)
    assert hostile not in text and "a_b" not in text
    assert params["q"] == hostile and params["brands"] == [hostile]
    assert params["cp_like"] == "a\\_b\\%/%"
    assert "plainto_tsquery('english', %(q)s)" in text and "ts_rank" in text


def test_ancestor_paths():
    assert search_os.ancestor_paths("a/b/c") == ["a", "a/b", "a/b/c"]
    assert search_os.ancestor_paths("") == []


def test_demo_catalog_is_deterministic_and_prefix_stable():
    first = list(demo.generate(50, seed=1))
    assert first == list(demo.generate(50, seed=1))
    assert first[:10] == list(demo.generate(10, seed=1))
    assert first != list(demo.generate(50, seed=2))
    assert list(demo.generate(5, seed=1, start=45)) == first[45:]
    assert len({p.category.path for p in demo.generate(2000)}) > 30
    assert 0.8 < sum(p.in_stock for p in demo.generate(2000)) / 2000 < 0.95
    paths = [c.path for c in demo.categories()]
    assert len(paths) == len(set(paths))
    for category in demo.categories():
        parent = "/".join(category.slugs[:-1])
        assert not parent or parent in paths


def test_seconds_until_hour():
    now = dt.datetime(2026, 5, 1, 2, 30, tzinfo=dt.UTC)
    assert jobs.seconds_until_hour(3, now) == 1800
    assert jobs.seconds_until_hour(2, now) == 23.5 * 3600


@pytest.mark.parametrize(
    ("field", "value"), [("min_price", 2.6e51), ("max_price", 1e300), ("min_rating", 5.4e279)]
)
def test_absurd_filter_amounts_are_invalid_arguments_not_errors(field, value):
    with pytest.raises(InvalidArgument) as caught:
        search(**{field: value})
    assert caught.value.field == field


def test_the_co_purchase_consumer_takes_only_new_orders_to_the_database():
    """Status changes (one per paid order) carry no lines: they skip the consumer's transaction."""

    def record(event: events_pb2.OrderEvent) -> ConsumerRecord:
        value = event.SerializeToString()
        return ConsumerRecord("order-events", 0, 0, 0, 0, 0, b"k", value, [], None, 1, len(value), -1)

    created = events_pb2.OrderEvent(order_id="o1", order_created=events_pb2.OrderCreated())
    paid = events_pb2.OrderEvent(order_id="o1", order_status_changed=events_pb2.OrderStatusChanged())
    assert is_order_created(record(created)) is True
    assert is_order_created(record(paid)) is False
