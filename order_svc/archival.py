"""Order retention (seed Deep Dive 5): hot 2 years -> warm `orders_archive` -> cold files -> purge at 7.

* archive: delivered/cancelled/refunded/failed orders created more than 2 years before `now` are copied to
  orders_archive as JSON with their lines, and the live row is anonymized (shipping address
  {"anonymized": true}, billing address, notes and the stored checkout response cleared). Batches of
  1000, one transaction each; the selection skips archived rows, so a stopped run resumes where it
  was. Several archivers may run at once (SKIP LOCKED).
* export: archived rows not yet exported go to gzip JSON Lines files (one per batch), written to a
  temporary name, fsynced and renamed before the rows are marked exported. A crash between rename
  and mark exports those rows again in a later file: readers de-duplicate by order_id.
* purge: archive rows (and cold files) whose orders are older than 7 years are deleted.
Every function takes `now`, so tests and operators can run them at any point in time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from meshkit.db import transaction
from meshkit.errors import DomainError
from meshkit.logs import log_event
from meshkit.outbox import LeaderLease
from order_svc import archive_store, metrics

log = logging.getLogger("order_svc.archival")

HOT_YEARS = 2
RETENTION_YEARS = 7
BATCH_SIZE = 1000
FILE_PREFIX = "orders-archive-"


def years_before(now: dt.datetime, years: int) -> dt.datetime:
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February in a non-leap target year
        return now.replace(year=now.year - years, day=28)


async def archive_orders(
    pool: AsyncConnectionPool, *, now: dt.datetime, batch_size: int = BATCH_SIZE, max_batches: int = 0
) -> int:
    """Archive every eligible order (or `max_batches` batches). Returns how many were archived."""
    cutoff = years_before(now, HOT_YEARS)
    total = batches = 0
    while not max_batches or batches < max_batches:
        async with transaction(pool) as conn:
            moved = await archive_store.archive_batch(conn, cutoff=cutoff, now=now, limit=batch_size)
        batches += 1
        total += moved
        if moved:
            metrics.orders_archived_total.inc(moved)
            log_event(log, "order_archival", archived=moved, cutoff=cutoff.isoformat())
        if moved < batch_size:
            break
    return total


async def run_archival(pool: AsyncConnectionPool, *, database_url: str, interval_seconds: float) -> None:
    """The scheduled job: while holding the `order-archival` advisory lock, archive every interval."""
    lease = LeaderLease(database_url, "order-archival")
    try:
        while True:
            await asyncio.sleep(interval_seconds)  # first run one interval after start, not at boot
            if await lease.still_held() or await lease.acquire():
                try:
                    await archive_orders(pool, now=dt.datetime.now(dt.UTC))
                except DomainError as error:  # database away: next interval
                    log.warning("archival run failed", extra={"error": error.message[:200]})
    finally:
        await lease.release()


def _write_file(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    with open(tmp, "rb") as raw:
        os.fsync(raw.fileno())
    os.replace(tmp, path)
    # the rename itself is durable only once the directory is synced; the rows are marked exported
    # right after this, so a crash must not lose the file they point to
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def export_archives(
    pool: AsyncConnectionPool, *, directory: Path, now: dt.datetime, batch_size: int = BATCH_SIZE
) -> list[Path]:
    """Write not-yet-exported archive rows to gzip JSON Lines files; returns the files written."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    written: list[Path] = []
    run = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"  # unique even for two runs at one `now`
    while True:
        async with transaction(pool) as conn:
            rows = await archive_store.unexported(conn, limit=batch_size)
            if not rows:
                break
            newest = max(r["order_created_at"] for r in rows)
            path = directory / f"{FILE_PREFIX}{run}-{len(written):04d}-until-{newest:%Y%m%d}.jsonl.gz"
            records = [
                {
                    "order_id": str(r["order_id"]),
                    "user_id": r["user_id"],
                    "order_created_at": r["order_created_at"].isoformat(),
                    "archived_at": r["archived_at"].isoformat(),
                    "archive_data": r["archive_data"],
                }
                for r in rows
            ]
            await asyncio.to_thread(_write_file, path, records)
            await archive_store.mark_exported(conn, [r["order_id"] for r in rows], file=path.name, now=now)
        written.append(path)
        metrics.order_archives_exported_total.inc(len(rows))
        log_event(log, "order_archive_export", file=path.name, orders=len(rows))
    return written


def read_export(path: Path) -> Iterator[dict]:
    """The records of one cold-tier file."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_exports(directory: Path) -> dict[str, dict]:
    """Every exported order by id (a re-exported order appears once)."""
    found: dict[str, dict] = {}
    for path in sorted(directory.glob(f"{FILE_PREFIX}*.jsonl.gz")):
        for record in read_export(path):
            found[record["order_id"]] = record
    return found


def _purge_files(directory: Path, cutoff: dt.datetime) -> list[Path]:
    """Cold files whose newest order (in the name) is past the retention."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.glob(f"{FILE_PREFIX}*-until-*.jsonl.gz")):
        newest = dt.datetime.strptime(path.name.split("-until-")[1][:8], "%Y%m%d").replace(tzinfo=dt.UTC)
        if newest + dt.timedelta(days=1) <= cutoff:
            path.unlink()
            removed.append(path)
    return removed


async def purge_archives(
    pool: AsyncConnectionPool,
    *,
    now: dt.datetime,
    directory: Path | None = None,
    batch_size: int = BATCH_SIZE,
) -> tuple[int, list[Path]]:
    """Delete archive rows of orders older than 7 years, and cold files holding only such orders."""
    cutoff = years_before(now, RETENTION_YEARS)
    purged = 0
    while True:
        async with transaction(pool) as conn:
            deleted = await archive_store.purge_batch(conn, cutoff=cutoff, limit=batch_size)
        purged += deleted
        if deleted < batch_size:
            break
    removed = await asyncio.to_thread(_purge_files, directory, cutoff) if directory is not None else []
    if purged:
        metrics.order_archives_purged_total.inc(purged)
    log_event(log, "order_archive_purge", purged=purged, files=len(removed), cutoff=cutoff.isoformat())
    return purged, removed
