"""Background jobs of inventory_svc: the reservation expiry sweeper and the invariant checker.

Expiry is safe with any number of replicas: each batch claims due reservations with
`FOR UPDATE SKIP LOCKED`, so two sweepers never take the same row, and each batch is one
transaction (reservations marked expired, stock released, ledger and events written together).
"""

from __future__ import annotations

import asyncio
import logging
import time

from psycopg_pool import AsyncConnectionPool

from inventory_svc import metrics, store
from inventory_svc.service import InventoryService
from meshkit.db import connection, transaction
from meshkit.logs import log_event

log = logging.getLogger("inventory_svc.jobs")


async def release_expired_reservations(
    pool: AsyncConnectionPool, service: InventoryService, *, batch_size: int, limit: int = 0
) -> tuple[int, int]:
    """Release every due reservation (or `limit` of them) in bounded batches. Returns (count, units)."""
    count = units = 0
    while True:
        take = batch_size if not limit else min(batch_size, limit - count)
        if take <= 0:
            break
        async with transaction(pool) as conn:
            rows = await store.take_expired(conn, take)
            if not rows:
                break
            await service.apply_expiry(conn, rows, actor="job:reservation-expiry")
        count += len(rows)
        units += sum(row["quantity"] for row in rows)
        if len(rows) < take:
            break
    if count:
        log_event(log, "expired_reservations", released=count, units=units)
    return count, units


async def run_expiry_sweeper(
    pool: AsyncConnectionPool, service: InventoryService, *, interval: float, batch_size: int
) -> None:
    while True:
        try:
            await release_expired_reservations(pool, service, batch_size=batch_size)
            async with connection(pool) as conn:
                metrics.reservation_sweeper_lag_seconds.set(await store.oldest_due_age_seconds(conn))
            metrics.reservation_sweeper_last_run_timestamp.set(time.time())
        except Exception:
            log.exception("expiry sweep failed")
        await asyncio.sleep(interval)


async def check_invariants(pool: AsyncConnectionPool, *, full: bool = False) -> list[dict]:
    """reserved == sum(active reservations), 0 <= reserved <= quantity, ledger agrees with stock.

    The ledger side is incremental (see advance_ledger_checkpoint): the snapshot this check reads
    in lasts as long as summing the ledger rows above the checkpoint, a few seconds of writes. The
    whole-ledger scan it replaced held one snapshot for the full table every 30 s, and while it
    did PostgreSQL could not prune the dead versions a hot SKU's stock row piles up. `full` runs
    that whole-ledger comparison once (the operator's audit, `shopctl invariants check`).
    """
    if not full:
        try:
            await advance_ledger_checkpoint(pool)
        except Exception:  # the check still runs, over a longer ledger tail
            log.exception("ledger checkpoint not advanced")
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if full:
                violations = await store.invariant_violations(conn)
            else:
                through_id = await store.ledger_checkpoint_through(conn)
                violations = await store.incremental_invariant_violations(conn, through_id=through_id)
    if violations:
        metrics.inventory_oversell_total.inc(len(violations))
        for row in violations:
            log.error("INVENTORY INVARIANT BROKEN", extra={"event": "inventory_invariant_violation", **row})
    return violations


async def advance_ledger_checkpoint(pool: AsyncConnectionPool) -> None:
    """Fold settled ledger rows into the per-stock-row checkpoint, then name the next candidate.

    Ledger ids come from a sequence and commit out of order: id 100 may still be in flight when 101
    is visible, so "the highest id seen" is no safe horizon. A candidate is instead the sequence's
    last value, recorded with the time and the current snapshot's xmax; one check later it is
    folded only if (a) the oldest running xid is past that xmax (every transaction that had an xid
    then has ended) and (b) no transaction of this database that began before that time is still
    open (covers one that drew its id before it was given an xid). Until both hold, the candidate
    waits and the check sums a longer tail; a long transaction delays the fold, never skips a row.

    What it cannot see: a ledger row edited or deleted after it was folded. The ledger is append
    only; `shopctl invariants check` (full=True) still compares the whole table for that audit.
    """
    async with pool.connection() as conn, conn.transaction():
        horizon = await store.lock_ledger_checkpoint(conn)
        if horizon is None:  # another replica is advancing it right now
            return
        if horizon["candidate_id"] is not None:
            if not await store.ledger_candidate_is_settled(
                conn, xmax=horizon["candidate_xmax"], at=horizon["candidate_at"]
            ):
                return
            await store.fold_ledger_into_checkpoint(
                conn, after_id=horizon["through_id"], through_id=horizon["candidate_id"]
            )
        await store.record_ledger_candidate(conn)


async def run_invariant_checker(pool: AsyncConnectionPool, *, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await check_invariants(pool)
        except Exception:
            log.exception("invariant check failed")
