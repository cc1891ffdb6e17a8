"""The recovery pass over real PostgreSQL: which unfinished orders one pass reaches."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
from psycopg.rows import dict_row

from meshkit.db import open_pool
from order_svc import recovery
from order_svc.recovery import RecoveryJob
from tests.integration.test_order_checkout_functions import _cart, _create


async def test_one_pass_reaches_every_unfinished_order_past_a_full_page_it_cannot_finish(mesh, monkeypatch):
    """A pass re-read the oldest page and stopped when it held only orders already tried: orders it
    could not finish keep their updated_at, so BATCH of them (a peer refusing them for good) hid
    every newer stuck order, pass after pass, and each blocks its user's next checkout."""
    conn = await psycopg.AsyncConnection.connect(
        mesh.database_url, autocommit=True, row_factory=dict_row, options="-c search_path=orders,public"
    )
    stuck = []
    for age_days in (3, 2, 1):
        user = f"rec-{uuid.uuid4().hex[:8]}"
        await _cart(conn, user, [(901, 2), (902, 1)])
        order_id, row = await _create(conn, user, "key-1")
        assert row["result"] == "created"
        # far older than anything else in the database, and with an outcome recorded, which a live
        # order_svc's own recovery leaves alone (it cannot finish these either)
        await conn.execute(
            "UPDATE orders SET updated_at = now() - make_interval(days => 3650 + %s), lease_until = NULL,"
            " checkout_outcome = 'x' WHERE id = %s",
            (age_days, order_id),
        )
        stuck.append(order_id)
    monkeypatch.setattr(recovery, "BATCH", 2)
    tried: list[uuid.UUID] = []

    async def cannot_finish(order_id: uuid.UUID) -> None:
        tried.append(order_id)
        return None

    pool = await open_pool(mesh.database_url, schema="orders", min_size=1, max_size=2, name="recovery-test")
    try:
        job = RecoveryJob(pool=pool, saga=None, lifecycle=None, idempotency=None, settings=None)  # type: ignore[arg-type]
        monkeypatch.setattr(job, "recover_order", cannot_finish)
        await job.recover(min_age=dt.timedelta(days=3650), limit=0)
    finally:
        await pool.close()
    assert tried == stuck  # oldest first, each once
    # finished, so they hold up no other test's checkout or gauge
    await conn.execute(
        "UPDATE orders SET status = 'failed', failure_reason = 'test', updated_at = now() WHERE id = ANY(%s)",
        (stuck,),
    )
    await conn.close()
