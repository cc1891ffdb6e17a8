"""Batch jobs of catalog_svc: full reindex with an alias swap, index reconcile, search log retention,
and the leader-only schedulers that run them (and the nightly also-bought computation) in-service.
`shopctl` runs the same functions by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from catalog_svc import index_store, metrics, store
from catalog_svc.index_client import SearchIndex
from catalog_svc.search_os import cents, document, document_version
from meshkit.db import connection, transaction
from meshkit.logs import log_event
from meshkit.outbox import LeaderLease

log = logging.getLogger("catalog_svc.jobs")

# product id -> (available, in_stock), from inventory's BatchGetAvailability
Availability = Callable[[Sequence[int]], Awaitable[dict[int, tuple[int, bool]]]]

# A write committed during a reindex carries an updated_at from its transaction's start, a little
# before it committed; catch-up re-reads that far back (catalog transactions last milliseconds).
CATCH_UP_SLACK = dt.timedelta(seconds=30)


def _docs(rows: Sequence[index_store.IndexRow]) -> list[dict[str, Any]]:
    return [document(p, in_stock=in_stock, inventory_version=inv) for p, in_stock, inv in rows]


async def reindex(pool: AsyncConnectionPool, index: SearchIndex, *, batch_size: int = 2000) -> dict[str, Any]:
    """Build a new versioned index from PostgreSQL, swap the alias to it atomically, catch up.

    Searches keep using the old index until the swap, and the new one is merged into one segment
    before it takes them (SearchIndex.compact). Writes the sync loop makes meanwhile go to the old
    index; the catch-up pass writes everything changed since the start into the new one, skipping
    documents it already holds at that version (external versions make any overlap harmless), and
    reconcile repairs whatever is left.
    """
    async with connection(pool) as conn:
        started_at = await store.db_now(conn)
    clock = time.perf_counter()
    name = index.new_index_name()
    await index.create_index(name, bulk_mode=True)
    try:
        total = await _bulk_load(pool, index, name, batch_size)
        load_seconds = time.perf_counter() - clock
        await index.finish_bulk_load(name)
        merge_clock = time.perf_counter()
        await index.compact(name)  # one segment before it serves searches
        merge_seconds = time.perf_counter() - merge_clock
        replaced, left_behind = await index.swap_alias(name)
    except BaseException:
        # drop the new index, unless the swap took effect before the error reached us: then it serves
        # every search, and deleting it would leave the alias on nothing (searches fall back, the sync
        # loop's require_alias writes fail) until the next reindex
        with contextlib.suppress(Exception):
            await index.discard_unless_live(name)
        raise
    async with connection(pool) as conn:
        changed = await index_store.changed_since(conn, started_at - CATCH_UP_SLACK)
    caught_up = 0
    for start in range(0, len(changed), batch_size):
        async with connection(pool) as conn:
            rows = await index_store.index_rows(conn, changed[start : start + batch_size])
        # only_newer: a product unchanged since the bulk load is already there at this version. A stock
        # repair by a reconcile running at the same time keeps the version, so it is skipped here and
        # left to the next reconcile (which rewrites it with external_gte).
        caught_up += await index.write_documents(_docs(rows), only_newer=True)
    report = {
        "index": name,
        "alias": index.alias,
        "replaced": replaced,
        "left_behind": left_behind,
        "documents": total,
        "load_seconds": round(load_seconds, 3),
        "docs_per_second": round(total / load_seconds, 1) if load_seconds > 0 else None,
        "merge_seconds": round(merge_seconds, 3),
        "caught_up": caught_up,
    }
    log_event(log, "reindex_done", **report)
    return report


async def _bulk_load(pool: AsyncConnectionPool, index: SearchIndex, name: str, batch_size: int) -> int:
    after, total = 0, 0
    in_flight: asyncio.Future[int] | None = None  # one bulk request overlaps reading the next batch
    try:
        while True:
            async with connection(pool) as conn:
                rows = await index_store.index_rows_after(conn, after, batch_size)
            if not rows:
                break
            docs = _docs(rows)
            if in_flight is not None:
                total += await in_flight
            in_flight = asyncio.ensure_future(index.write_documents(docs, index=name))
            after = rows[-1][0].id
        if in_flight is not None:
            total += await in_flight
            in_flight = None
    finally:
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
    return total


@dataclasses.dataclass
class ReconcileReport:
    checked: int = 0
    missing: int = 0
    stale: int = 0
    extra: int = 0
    stock_repaired: int = 0
    # documents newer than PostgreSQL (e.g. after a database restore): external versions refuse the
    # rewrite; `shopctl search reindex` builds a clean index
    ahead: int = 0
    inventory_checked: bool = False

    @property
    def drift(self) -> int:
        return self.missing + self.stale + self.extra + self.stock_repaired + self.ahead


def _differs(row: index_store.IndexRow, state: dict[str, Any]) -> bool:
    product, in_stock, inventory_version = row
    return (
        state.get("catalog_version") != product.version
        or state.get("inventory_version") != inventory_version
        or state.get("in_stock") != in_stock
        or state.get("is_active") != product.is_active
        # a document from before price_cents existed: price filters cannot see it exactly
        or state.get("price_cents") != cents(product.price)
    )


async def _still_ahead(pool: AsyncConnectionPool, index: SearchIndex, ids: Sequence[int]) -> int:
    """How many of these documents are newer than PostgreSQL holds now. A refused rewrite alone
    proves nothing: PostgreSQL may have moved on since the pass read it and the sync loop indexed
    the newer state first (ordinary lag), which counted as 'ahead' and logged the reindex advice."""
    async with connection(pool) as conn:
        now = {
            p.id: p.version + inventory_version
            for p, _, inventory_version in await index_store.index_rows(conn, ids)
        }
    states = await index.fetch_states(ids)
    return sum(1 for pid, state in states.items() if pid in now and document_version(state) > now[pid])


async def reconcile(
    pool: AsyncConnectionPool,
    index: SearchIndex,
    *,
    availability: Availability | None = None,
    batch_size: int = 1000,
) -> ReconcileReport:
    """Compare PostgreSQL with the index and repair the drift.

    With `availability` (inventory's BatchGetAvailability), catalog's own in_stock knowledge is
    checked against inventory first (for events lost or never seen), then every product's document
    is compared with PostgreSQL (missing, older versions, different stock or active flag) and
    rewritten; finally documents of products PostgreSQL does not have are deleted.
    """
    report = ReconcileReport(inventory_checked=availability is not None)
    after = 0
    while True:
        async with connection(pool) as conn:
            rows = await index_store.index_rows_after(conn, after, batch_size)
        if not rows:
            break
        ids = [p.id for p, _, _ in rows]
        if availability is not None:
            async with connection(pool) as conn:
                asked_at = await index_store.database_now(conn)
            truth = await availability(ids)
            wrong = [
                (p.id, *truth[p.id])
                for p, in_stock, _ in rows
                if p.id in truth and truth[p.id][1] != in_stock
            ]
            if wrong:
                fixed: list[int] = []
                async with transaction(pool) as conn:
                    for pid, available, in_stock in wrong:
                        if await index_store.repair_stock(
                            conn, product_id=pid, in_stock=in_stock, available=available, asked_at=asked_at
                        ):
                            fixed.append(pid)
                    # the sync loop rewrites them too: a pass of it that read the rows before this
                    # repair could otherwise write its older document after ours, at the same version
                    await index_store.mark_dirty(conn, fixed)
                    rows = await index_store.index_rows(conn, ids)
                    rows.sort(key=lambda r: r[0].id)
                repaired = len(fixed)
                report.stock_repaired += repaired
                metrics.reconcile_repairs_total.labels("stock").inc(repaired)
        states = await index.fetch_states(ids)
        repair = []
        for row in rows:
            state = states.get(row[0].id)
            if state is None:
                report.missing += 1
                repair.append(row)
            elif _differs(row, state):
                report.stale += 1
                repair.append(row)
        if repair and await index.write_documents(_docs(repair)) < len(repair):
            report.ahead += await _still_ahead(pool, index, [row[0].id for row in repair])
        report.checked += len(rows)
        after = rows[-1][0].id
    after = 0
    while True:
        doc_ids = await index.ids_after(after, size=batch_size)
        if not doc_ids:
            break
        async with connection(pool) as conn:
            known = await index_store.existing_ids(conn, doc_ids)
        extra = [i for i in doc_ids if i not in known]
        if extra:
            await index.delete_documents(extra)
            report.extra += len(extra)
        after = doc_ids[-1]
    metrics.reconcile_repairs_total.labels("missing").inc(report.missing)
    metrics.reconcile_repairs_total.labels("stale").inc(report.stale)
    metrics.reconcile_repairs_total.labels("extra").inc(report.extra)
    if report.ahead:
        log.warning(
            "index documents ahead of PostgreSQL; run `shopctl search reindex`", extra={"ahead": report.ahead}
        )
    log_event(log, "reconcile_done", **dataclasses.asdict(report))
    return report


async def purge_search_log(pool: AsyncConnectionPool, *, retention_days: int, batch: int = 10_000) -> int:
    """Delete search log rows older than the retention (90 days), in bounded batches."""
    total = 0
    while True:
        async with connection(pool) as conn:
            deleted = await store.purge_search_log(conn, older_than_days=retention_days, batch=batch)
        total += deleted
        if deleted < batch:
            break
    if total:
        log_event(log, "search_log_purged", deleted=total, retention_days=retention_days)
    return total


async def run_as_leader(
    *,
    database_url: str,
    name: str,
    job: Callable[[], Awaitable[Any]],
    next_delay: Callable[[], float],
    first_delay: float = 0.0,
) -> None:
    """Forever: wait, then run `job` if this instance holds the job's lease (one active instance)."""
    lease = LeaderLease(database_url, f"catalog_svc:{name}")
    await asyncio.sleep(first_delay)
    try:
        while True:
            if await lease.still_held() or await lease.acquire():
                try:
                    await job()
                except Exception:
                    log.exception("scheduled job failed", extra={"job": name})
            await asyncio.sleep(next_delay())
    finally:
        await lease.release()


def seconds_until_hour(hour_utc: int, now: dt.datetime | None = None) -> float:
    """Seconds from now until the next hh:00 UTC (the nightly job's start)."""
    now = now or dt.datetime.now(dt.UTC)
    target = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    if target <= now:
        target += dt.timedelta(days=1)
    return (target - now).total_seconds()
