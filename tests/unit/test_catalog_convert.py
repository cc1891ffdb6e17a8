"""catalog_svc.convert fills nested fields in place (product_pb), and a search hit answers the message
its document carries: both must equal the plain construction."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import orjson
import pytest
from google.protobuf import timestamp_pb2
from shop.catalog.v1 import catalog_pb2 as pb
from shop.common.v1 import money_pb2

from catalog_svc import search_os
from catalog_svc.cache import product_from_json, product_json
from catalog_svc.convert import product_pb, product_wire, search_response
from catalog_svc.model import Attribute, Product
from catalog_svc.search_model import Facets, SearchPage, SearchQuery, UnresolvedProduct


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return stamp


def _expected(p: Product) -> pb.Product:
    units = int(p.price)
    return pb.Product(
        id=p.id,
        seller_id=p.seller_id,
        title=p.title,
        slug=p.slug,
        description=p.description,
        category_id=p.category_id or 0,
        category_path=p.category_path,
        price=money_pb2.Money(
            currency_code="USD", units=units, nanos=int((p.price - units) * Decimal(10**9))
        ),
        rating=float(p.rating),
        review_count=p.review_count,
        is_active=p.is_active,
        brand=p.brand,
        attributes=[pb.ProductAttribute(name=a.name, value=a.value) for a in p.attributes],
        create_time=_timestamp(p.created_at),
        update_time=_timestamp(p.updated_at),
    )


AWARE = dt.datetime(2026, 11, 25, 4, 5, 6, 789012, tzinfo=dt.UTC)
NAIVE = dt.datetime(1999, 12, 31, 23, 59, 59, 1)


@pytest.mark.parametrize(
    "product",
    [
        Product(1, 2, "Lamp", "lamp", "", None, "", Decimal("0.01"), Decimal("0"), 0, True, "", (), 1, AWARE, AWARE),
        Product(
            99, 7, "Shoe", "shoe", "Light.", 5, "shoes/trail", Decimal("99999999.99"), Decimal("4.5"), 12,
            False, "Bench", (Attribute("color", "red"), Attribute("size", "42"), Attribute("color", "blue")),
            9, NAIVE, AWARE,
        ),
        Product(3, 1, "Free", "free", "", 4, "x", Decimal("12"), Decimal("3.7"), 1, True, "B", (), 2, AWARE, NAIVE),
    ],
)  # fmt: skip
def test_product_pb_equals_the_plain_construction(product: Product) -> None:
    assert product_pb(product) == _expected(product)
    # the cached encoding decodes to the same message, and so does the JSON model round trip
    assert pb.Product.FromString(product_wire(product)) == _expected(product)
    assert product_pb(product_from_json(product_json(product))) == _expected(
        product_from_json(product_json(product))
    )


def _indexed(p: Product) -> dict:
    """The product's search document as OpenSearch hands it back (the JSON it was bulk-written as)."""
    return orjson.loads(json.dumps(search_os.document(p, in_stock=True, inventory_version=3)))


@pytest.mark.parametrize(
    "product",
    [
        Product(1, 2, "Lamp", "lamp", "", None, "", Decimal("0.01"), Decimal("0"), 0, True, "", (), 1, AWARE, AWARE),
        Product(
            99, 7, "Shoe", "shoe", "Light.", 5, "shoes/trail", Decimal("99999999.99"), Decimal("4.5"), 12,
            False, "Bench", (Attribute("color", "red"), Attribute("size", "42"), Attribute("color", "blue")),
            9, NAIVE, AWARE,
        ),
        Product(
            4, 1, "Ünïcode ☃", "u", "Ça va", 4, "a/b", Decimal("19.99"), Decimal("5.0"), 7, True, "Bräu", (), 2,
            dt.datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))), AWARE,
        ),
    ],
)  # fmt: skip
def test_a_search_hit_answers_the_product_exactly_as_indexed(product: Product) -> None:
    doc = _indexed(product)
    hit = search_os.parse_response(
        SearchQuery(),
        {
            "hits": {
                "total": {"value": 1},
                "hits": [{"_score": 1.5, "_source": {k: doc[k] for k in search_os.SOURCE_FIELDS}}],
            }
        },
    ).hits[0]
    assert hit.product == doc["product_wire"] and hit.in_stock is True and hit.score == 1.5
    page = SearchPage(hits=(hit,), facets=Facets((), (), (), 0), total=1, page=0, fallback=False)
    assert search_response(page).results[0].product == _expected(product)


def test_a_hit_whose_document_predates_product_wire_is_left_for_postgres() -> None:
    doc = _indexed(
        Product(
            5, 1, "Old", "old", "", None, "", Decimal("1"), Decimal("0"), 0, True, "", (), 1, AWARE, AWARE
        )
    )
    del doc["product_wire"]
    page = search_os.parse_response(
        SearchQuery(), {"hits": {"total": {"value": 1}, "hits": [{"_score": 1.0, "_source": doc}]}}
    )
    assert page.hits[0].product == UnresolvedProduct(5)
