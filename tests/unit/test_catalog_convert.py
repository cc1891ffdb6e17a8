"""catalog_svc.convert fills nested fields in place, from a Product (product_pb) or from its search
document (fill_from_document): both must equal the plain construction."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal

import orjson
import pytest
from google.protobuf import timestamp_pb2
from shop.catalog.v1 import catalog_pb2 as pb
from shop.common.v1 import money_pb2

from catalog_svc import search_os
from catalog_svc.cache import product_from_json, product_json
from catalog_svc.convert import fill_from_document, product_pb, product_wire
from catalog_svc.model import Attribute, Product


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
        Product(3, 1, "Free", "free", "", 4, "x", Decimal("12"), Decimal("3.7"), 1, True, "B", (), 2, AWARE, NAIVE),
        Product(
            4, 1, "Ünïcode ☃", "u", "Ça va", 4, "a/b", Decimal("19.99"), Decimal("5.0"), 7, True, "Bräu", (), 2,
            dt.datetime(2026, 3, 29, 1, 30, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))), AWARE,
        ),
    ],
)  # fmt: skip
def test_search_document_fills_the_same_message_as_the_product(product: Product) -> None:
    message = pb.Product()
    fill_from_document(message, _indexed(product))
    assert message == _expected(product)


def test_every_rating_and_many_prices_come_back_exact_from_the_document() -> None:
    base = Product(1, 2, "T", "t", "", None, "", Decimal("0"), Decimal("0"), 0, True, "", (), 1, AWARE, AWARE)
    ratings = [Decimal(n) / 10 for n in range(51)]
    # every price to 1000.00, a sample of the whole DECIMAL(10,2) range and its top (all prices to
    # 100000.00 were checked once offline)
    rng = random.Random(7)
    cents = [*range(100_001), *(rng.randrange(10**10) for _ in range(20_000)), *range(10**10 - 1000, 10**10)]
    doc = search_os.document(base, in_stock=False, inventory_version=1)
    for n, c in enumerate(cents):
        rating = ratings[n % len(ratings)]
        # what search_os.document writes for this price and rating
        doc["price"], doc["rating"] = float(Decimal(c) / 100), float(rating)
        message = pb.Product()
        fill_from_document(message, doc)
        assert (message.price.units, message.price.nanos) == (c // 100, (c % 100) * 10_000_000), c
        assert message.rating == float(rating)
