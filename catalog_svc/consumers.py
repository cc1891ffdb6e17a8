"""Kafka consumers of catalog_svc and the search-document sync loop.

Indexer (group catalog-indexer, topics catalog-events + inventory-events): records each event's
effect in PostgreSQL only if its per-product version is newer than the last applied (catalog and
inventory versions are tracked separately, since order across two topics is not defined), then
marks the product dirty, all in the DedupConsumer's transaction.

IndexSync: rewrites dirty products' documents from PostgreSQL in bulk, with external_gte versions,
and clears only the marks it handled. OpenSearch being down just leaves the marks for later.

Co-purchases (group catalog-copurchases, topic order-events): order_created lines -> co_purchases.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from kafka.consumer.fetcher import ConsumerRecord
from opensearchpy.exceptions import OpenSearchException
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from shop.events.v1 import events_pb2

from catalog_svc import index_store, metrics, recs_store
from catalog_svc.index_client import BulkError, SearchIndex
from catalog_svc.search_os import document
from meshkit.db import CONNECTION_ERRORS, connection
from meshkit.errors import Unavailable

log = logging.getLogger("catalog_svc.consumers")


class Indexer:
    def __init__(self, *, catalog_topic: str, inventory_topic: str, wake: asyncio.Event) -> None:
        self._catalog_topic = catalog_topic
        self._inventory_topic = inventory_topic
        self._wake = wake

    async def handle(self, conn: AsyncConnection, record: ConsumerRecord) -> None:
        if record.topic == self._catalog_topic:
            await self._catalog_event(conn, events_pb2.CatalogEvent.FromString(record.value))
        elif record.topic == self._inventory_topic:
            await self._inventory_event(conn, events_pb2.InventoryEvent.FromString(record.value))

    async def _catalog_event(self, conn: AsyncConnection, event: events_pb2.CatalogEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind not in ("product_upserted", "product_deleted") or event.product_id <= 0:
            metrics.index_events_total.labels("catalog", "ignored").inc()
            return
        if await index_store.apply_catalog_version(conn, product_id=event.product_id, version=event.version):
            await index_store.mark_dirty(conn, [event.product_id])
            metrics.index_events_total.labels("catalog", "applied").inc()
            self._wake.set()
        else:
            metrics.index_events_total.labels("catalog", "stale").inc()

    async def _inventory_event(self, conn: AsyncConnection, event: events_pb2.InventoryEvent) -> None:
        if event.WhichOneof("payload") != "stock_level_changed" or event.product_id <= 0:
            metrics.index_events_total.labels("inventory", "ignored").inc()
            return
        level = event.stock_level_changed
        applied = await index_store.apply_stock_level(
            conn,
            product_id=event.product_id,
            in_stock=level.in_stock,
            available=level.available,
            version=event.version,
        )
        if applied is index_store.StockApplied.STALE:
            metrics.index_events_total.labels("inventory", "stale").inc()
            return
        metrics.index_events_total.labels("inventory", "applied").inc()
        if applied is index_store.StockApplied.REINDEX:
            await index_store.mark_dirty(conn, [event.product_id])
            self._wake.set()


class IndexSync:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        index: SearchIndex,
        wake: asyncio.Event,
        batch_size: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._index = index
        self._wake = wake
        self._batch = batch_size
        self._poll = poll_seconds

    async def sync_once(self) -> int:
        """Rewrite one batch of dirty products; returns how many marks were handled."""
        async with connection(self._pool) as conn:
            marks = await index_store.dirty_batch(conn, self._batch)
            if not marks:
                metrics.index_dirty_backlog.set(0)
                return 0
            rows = await index_store.index_rows(conn, [pid for pid, _ in marks])
        docs = [document(p, in_stock=in_stock, inventory_version=inv) for p, in_stock, inv in rows]
        rejected = 0
        try:
            written = await self._index.write_documents(docs)
        except BulkError as error:
            if error.retryable:
                raise
            # refused for what they are: a retry would meet the same refusal, and keeping their marks
            # would put them at the head of every batch, the queue behind them stuck for good
            written, rejected = error.written, len(error.rejected)
            metrics.index_sync_documents_total.labels("rejected").inc(rejected)
            log.error(
                "index sync: OpenSearch rejected documents; their marks are dropped (shopctl search"
                " reconcile or the product's next change rewrites them once the cause is fixed)",
                extra={"product_ids": sorted(error.rejected)[:20], "error": str(error)[:300]},
            )
        metrics.index_sync_documents_total.labels("written").inc(written)
        metrics.index_sync_documents_total.labels("skipped_stale").inc(len(docs) - written - rejected)
        async with connection(self._pool) as conn:
            await index_store.clear_dirty(conn, marks)
            metrics.index_dirty_backlog.set(await index_store.dirty_count(conn))
        return len(marks)

    async def run(self) -> None:
        backoff = self._poll
        failed = False
        while True:
            try:
                if failed:  # e.g. OpenSearch came back empty: recreate the alias before writing
                    await self._index.ensure_alias()
                handled = await self.sync_once()
                backoff, failed = self._poll, False
            except (
                OpenSearchException,
                BulkError,
                TimeoutError,
                OSError,
                Unavailable,
                *CONNECTION_ERRORS,
            ) as exc:
                metrics.index_sync_documents_total.labels("failed_batch").inc()
                log.warning("index sync failed; will retry", extra={"error": repr(exc)[:300]})
                failed = True
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)
                continue
            if handled < self._batch:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
                    await asyncio.sleep(0.05)  # let the consumer's transaction commit
                except TimeoutError:
                    pass
                self._wake.clear()


def is_order_created(record: ConsumerRecord) -> bool:
    """Only a new order's lines are co-purchases; the topic's status changes (as many again: every
    paid order has one) skip the database."""
    return events_pb2.OrderEvent.FromString(record.value).WhichOneof("payload") == "order_created"


class CoPurchaseRecorder:
    async def handle(self, conn: AsyncConnection, record: ConsumerRecord) -> None:
        event = events_pb2.OrderEvent.FromString(record.value)
        if event.WhichOneof("payload") != "order_created":
            return
        quantities: dict[int, int] = {}
        for line in event.order_created.lines:
            if line.product_id > 0 and line.quantity > 0:
                quantities[line.product_id] = quantities.get(line.product_id, 0) + line.quantity
        ordered_at = (
            event.occurred_at.ToDatetime(tzinfo=dt.UTC)
            if event.HasField("occurred_at")
            else dt.datetime.now(dt.UTC)
        )
        await recs_store.add_order(
            conn, order_id=event.order_id, quantities=quantities, ordered_at=ordered_at
        )
