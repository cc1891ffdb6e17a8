"""inventory-events consumer: a lapsed reservation makes its cart line show as expired.

Runs through meshkit's DedupConsumer, so each event id is applied once, in the transaction that
marks the cart reservation lapsed. The cache is invalidated inside that transaction, just before it
commits (the handler says why that is enough).
"""

from __future__ import annotations

import uuid

import psycopg
from kafka.consumer.fetcher import ConsumerRecord
from shop.events.v1 import events_pb2

from order_svc import cart_store
from order_svc.cart_cache import CartCache


def is_reservation_expired(record: ConsumerRecord) -> bool:
    """Only lapsed reservations touch carts; the topic's stock changes skip the database."""
    return events_pb2.InventoryEvent.FromString(record.value).WhichOneof("payload") == "reservation_expired"


class ReservationExpiryHandler:
    def __init__(self, cache: CartCache) -> None:
        self._cache = cache

    async def __call__(self, conn: psycopg.AsyncConnection, record: ConsumerRecord) -> None:
        event = events_pb2.InventoryEvent.FromString(record.value)
        if event.WhichOneof("payload") != "reservation_expired":
            return
        expired = event.reservation_expired
        users = await cart_store.lapse_reservations(conn, [uuid.UUID(expired.reservation_id)])
        # invalidated just before the commit: a reader in between caches the old row, but that
        # reservation's expires_at has passed, so the read-time check shows the line expired anyway
        for user in users:
            await self._cache.invalidate(user)
