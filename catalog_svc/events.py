"""Catalog events written to the outbox inside the caller's transaction (topic catalog-events)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from psycopg import AsyncConnection
from shop.events.v1 import events_pb2

from catalog_svc.convert import product_pb, timestamp
from catalog_svc.model import Product
from meshkit.outbox import add_event

RECOMMENDATIONS_KEY = "recommendations"


async def product_changed(conn: AsyncConnection, *, topic: str, product: Product) -> uuid.UUID:
    """product_upserted (or product_deleted once inactive), versioned by the product's version."""
    event_id = uuid.uuid4()
    event = events_pb2.CatalogEvent(
        event_id=str(event_id),
        product_id=product.id,
        version=product.version,
        occurred_at=timestamp(product.updated_at),
    )
    if product.is_active:
        event.product_upserted.product.CopyFrom(product_pb(product))
        event_type = "product_upserted"
    else:
        event.product_deleted.SetInParent()
        event_type = "product_deleted"
    return await add_event(
        conn,
        topic=topic,
        key=str(product.id),
        event_type=event_type,
        payload=event.SerializeToString(),
        event_id=event_id,
    )


async def recommendations_updated(
    conn: AsyncConnection, *, topic: str, product_ids: Sequence[int]
) -> uuid.UUID:
    event_id = uuid.uuid4()
    event = events_pb2.CatalogEvent(
        event_id=str(event_id),
        product_id=0,
        version=0,
        occurred_at=timestamp(dt.datetime.now(dt.UTC)),
        recommendations_updated=events_pb2.RecommendationsUpdated(product_ids=list(product_ids)),
    )
    return await add_event(
        conn,
        topic=topic,
        key=RECOMMENDATIONS_KEY,
        event_type="recommendations_updated",
        payload=event.SerializeToString(),
        event_id=event_id,
    )
