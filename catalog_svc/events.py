"""Catalog events written to the outbox inside the caller's transaction (topic catalog-events)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from psycopg import AsyncConnection
from shop.events.v1 import events_pb2

from catalog_svc.convert import product_pb, timestamp
from catalog_svc.model import Product
from meshkit.outbox import proto_event, write_event

RECOMMENDATIONS_KEY = "recommendations"


async def product_changed(conn: AsyncConnection, *, topic: str, product: Product) -> uuid.UUID:
    """product_upserted (or product_deleted once inactive), versioned by the product's version."""
    if product.is_active:
        event_type = "product_upserted"
        payload = {"product_upserted": events_pb2.ProductUpserted(product=product_pb(product))}
    else:
        event_type = "product_deleted"
        payload = {"product_deleted": events_pb2.ProductDeleted()}
    event = proto_event(
        events_pb2.CatalogEvent,
        topic=topic,
        key=str(product.id),
        event_type=event_type,
        product_id=product.id,
        version=product.version,
        occurred_at=timestamp(product.updated_at),
        **payload,
    )
    return await write_event(conn, event)


async def recommendations_updated(
    conn: AsyncConnection, *, topic: str, product_ids: Sequence[int]
) -> uuid.UUID:
    event = proto_event(
        events_pb2.CatalogEvent,
        topic=topic,
        key=RECOMMENDATIONS_KEY,
        event_type="recommendations_updated",
        product_id=0,
        version=0,
        occurred_at=timestamp(dt.datetime.now(dt.UTC)),
        recommendations_updated=events_pb2.RecommendationsUpdated(product_ids=list(product_ids)),
    )
    return await write_event(conn, event)
