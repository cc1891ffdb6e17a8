"""Every SQL statement of inventory_svc, against its own `inventory` schema (via search_path).

Functions take an open connection (inside the caller's transaction) and never commit.
Lock order everywhere: reservations (by id) before stock rows, stock rows by (product_id, warehouse_id).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]


async def reserve_batch(
    conn: AsyncConnection,
    *,
    product_id: int,
    owners: Sequence[str],
    quantities: Sequence[int],
    ttl_seconds: Sequence[float],
    request_ids: Sequence[str],
    topic: str,
    headers: dict[str, str],
) -> list[Row]:
    # The arrays go as array literals (text, cast by the function's parameter types): psycopg's list
    # dumper adapts and regex-escapes element by element in Python, ~30 us for a batch of one and
    # ~90 us for a batch of eight, against ~8 and ~12 us for building the literals.
    cur = await conn.execute(
        "SELECT * FROM reserve_batch_v2(%s, %s, %s, %s, %s, %s, %s)",
        (
            product_id,
            text_array(owners),
            number_array(quantities),
            number_array(ttl_seconds),
            text_array(request_ids),
            topic,
            json.dumps(headers),
        ),
        prepare=True,
    )
    return await cur.fetchall()


def text_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of these strings: every element quoted, `\\` and `"` escaped."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def number_array(values: Iterable[int | float]) -> str:
    """A PostgreSQL array literal of these ints or finite floats."""
    return "{" + ",".join(map(repr, values)) + "}"


async def commit_order(
    conn: AsyncConnection,
    *,
    order_id: str,
    reservation_ids: Sequence[uuid.UUID],
    actor: str,
    topic: str,
    headers: dict[str, str],
    expected_units: Mapping[int, int] | None = None,
) -> list[Row]:
    """The whole commit in one statement (inventory.commit_order_v3): rows with an `outcome` each.
    `expected_units`: units per product the reservations must hold between them (None: no check)."""
    products = list(expected_units) if expected_units is not None else None
    units = list(expected_units.values()) if expected_units is not None else None
    cur = await conn.execute(
        "SELECT * FROM commit_order_v3(%s, %s, %s, %s, %s, %s::bigint[], %s::int[])",
        (
            order_id,
            "{" + ",".join(map(str, reservation_ids)) + "}",
            actor,
            topic,
            json.dumps(headers),
            products,
            units,
        ),
        prepare=True,
    )
    return await cur.fetchall()


async def restock_order(
    conn: AsyncConnection, *, order_id: str, reason: str, actor: str, topic: str, headers: dict[str, str]
) -> Row:
    """The whole restock in one statement (inventory.restock_order_v2): its outcome and units."""
    cur = await conn.execute(
        "SELECT * FROM restock_order_v2(%s, %s, %s, %s, %s)",
        (order_id, reason, actor, topic, json.dumps(headers)),
        prepare=True,
    )
    return await cur.fetchone()


async def extend_and_get_reservations(
    conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID], ttl_seconds: float
) -> list[Row]:
    """Extend the active ones (never shortening) and read them all back, in one statement."""
    cur = await conn.execute(
        "SELECT * FROM extend_reservations_v2(%s, %s)", (list(reservation_ids), ttl_seconds), prepare=True
    )
    return await cur.fetchall()


async def list_warehouses(conn: AsyncConnection) -> list[Row]:
    cur = await conn.execute("SELECT id, code, name, priority FROM warehouses ORDER BY priority, id")
    return await cur.fetchall()


async def warehouse_exists(conn: AsyncConnection, warehouse_id: int) -> bool:
    cur = await conn.execute("SELECT 1 FROM warehouses WHERE id = %s", (warehouse_id,))
    return await cur.fetchone() is not None


async def stock_rows(conn: AsyncConnection, product_id: int) -> list[Row]:
    cur = await conn.execute(
        "SELECT warehouse_id, quantity, reserved FROM stock WHERE product_id = %s ORDER BY warehouse_id",
        (product_id,),
    )
    return await cur.fetchall()


async def availability(conn: AsyncConnection, product_ids: Sequence[int]) -> dict[int, int]:
    cur = await conn.execute(
        "SELECT product_id, sum(quantity - reserved)::INT AS available FROM stock"
        " WHERE product_id = ANY(%s) GROUP BY product_id",
        (list(product_ids),),
    )
    return {row["product_id"]: row["available"] for row in await cur.fetchall()}


async def claim_request(conn: AsyncConnection, request_id: str, operation: str) -> bool:
    """False when this request id was applied before (the caller then changes nothing)."""
    cur = await conn.execute(
        "INSERT INTO applied_requests (request_id, operation) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (request_id, operation),
    )
    return await cur.fetchone() is not None


async def applied_operation(conn: AsyncConnection, request_id: str) -> str | None:
    cur = await conn.execute("SELECT operation FROM applied_requests WHERE request_id = %s", (request_id,))
    row = await cur.fetchone()
    return row["operation"] if row else None


async def ensure_product(conn: AsyncConnection, product_id: int) -> None:
    await conn.execute("INSERT INTO products (product_id) VALUES (%s) ON CONFLICT DO NOTHING", (product_id,))


async def change_quantity(
    conn: AsyncConnection, *, product_id: int, warehouse_id: int, delta: int
) -> Row | None:
    """Conditional: applies only if the new quantity stays >= reserved (and >= 0). Creates the row for delta > 0."""
    if delta > 0:
        cur = await conn.execute(
            "INSERT INTO stock (product_id, warehouse_id, quantity) VALUES (%s, %s, %s)"
            " ON CONFLICT (product_id, warehouse_id) DO UPDATE"
            " SET quantity = stock.quantity + EXCLUDED.quantity, updated_at = now()"
            " RETURNING quantity, reserved",
            (product_id, warehouse_id, delta),
        )
    else:
        cur = await conn.execute(
            "UPDATE stock SET quantity = quantity + %s, updated_at = now()"
            " WHERE product_id = %s AND warehouse_id = %s AND quantity + %s >= reserved"
            " RETURNING quantity, reserved",
            (delta, product_id, warehouse_id, delta),
        )
    return await cur.fetchone()


async def add_ledger(
    conn: AsyncConnection,
    *,
    product_id: int,
    warehouse_id: int,
    movement: str,
    quantity_delta: int,
    reserved_delta: int,
    reservation_id: uuid.UUID | None = None,
    order_id: str | None = None,
    reason: str | None = None,
    actor: str = "",
) -> None:
    await conn.execute(
        "INSERT INTO stock_ledger (product_id, warehouse_id, movement, quantity_delta, reserved_delta,"
        " reservation_id, order_id, reason, actor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            product_id,
            warehouse_id,
            movement,
            quantity_delta,
            reserved_delta,
            reservation_id,
            order_id,
            reason,
            actor,
        ),
    )


async def bump_version(conn: AsyncConnection, product_id: int, *, by: int = 1) -> int:
    """The product's new event version; `by` > 1 reserves the versions last-by+1 .. last for `by` events."""
    cur = await conn.execute(
        "UPDATE products SET version = version + %s WHERE product_id = %s RETURNING version", (by, product_id)
    )
    row = await cur.fetchone()
    return int(row["version"]) if row else 0


async def product_totals(conn: AsyncConnection, product_id: int) -> Row:
    cur = await conn.execute(
        "SELECT coalesce(sum(quantity), 0) AS quantity, coalesce(sum(reserved), 0) AS reserved"
        " FROM stock WHERE product_id = %s",
        (product_id,),
    )
    return await cur.fetchone()


async def lock_reservations(conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> list[Row]:
    cur = await conn.execute(
        "SELECT id, owner, product_id, warehouse_id, quantity, status, expires_at, order_id, created_at"
        " FROM reservations WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (list(reservation_ids),),
    )
    return await cur.fetchall()


async def get_reservations(conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> list[Row]:
    cur = await conn.execute(
        "SELECT id, owner, product_id, warehouse_id, quantity, status, expires_at, order_id, created_at"
        " FROM reservations WHERE id = ANY(%s)",
        (list(reservation_ids),),
    )
    return await cur.fetchall()


async def lock_stock(conn: AsyncConnection, keys: Sequence[tuple[int, int]]) -> None:
    """Lock stock rows in primary-key order before changing several of them."""
    if not keys:
        return
    ordered = sorted(set(keys))
    await conn.execute(
        "SELECT 1 FROM stock s JOIN unnest(%s::BIGINT[], %s::BIGINT[]) AS k(p, w)"
        " ON s.product_id = k.p AND s.warehouse_id = k.w"
        " ORDER BY s.product_id, s.warehouse_id FOR UPDATE OF s",
        ([k[0] for k in ordered], [k[1] for k in ordered]),
    )


async def change_stock(
    conn: AsyncConnection, *, product_id: int, warehouse_id: int, quantity_delta: int, reserved_delta: int
) -> None:
    """Apply deltas in the database; the CHECK constraint refuses anything that would break 0<=reserved<=quantity."""
    await conn.execute(
        "UPDATE stock SET quantity = quantity + %s, reserved = reserved + %s, updated_at = now()"
        " WHERE product_id = %s AND warehouse_id = %s",
        (quantity_delta, reserved_delta, product_id, warehouse_id),
    )


async def set_reservation(
    conn: AsyncConnection,
    reservation_id: uuid.UUID,
    *,
    status: str,
    quantity: int | None = None,
    order_id: str | None = None,
) -> Row:
    cur = await conn.execute(
        "UPDATE reservations SET status = %s, quantity = coalesce(%s, quantity),"
        " order_id = coalesce(%s, order_id), updated_at = now() WHERE id = %s"
        " RETURNING id, owner, product_id, warehouse_id, quantity, status, expires_at, order_id, created_at",
        (status, quantity, order_id, reservation_id),
    )
    return await cur.fetchone()


async def take_expired(
    conn: AsyncConnection, limit: int, reservation_ids: Sequence[uuid.UUID] | None = None
) -> list[Row]:
    """Due active reservations (all, or only these), marked expired and locked; SKIP LOCKED lets
    several sweepers (replicas) run at once. "Due" is judged by the database's clock."""
    only = " AND id = ANY(%s)" if reservation_ids is not None else ""
    params: tuple = (list(reservation_ids), limit) if reservation_ids is not None else (limit,)
    cur = await conn.execute(
        "UPDATE reservations r SET status = 'expired', updated_at = now()"
        " FROM (SELECT id FROM reservations WHERE status = 'active' AND expires_at < now()"
        + only
        + "       ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) due"
        " WHERE r.id = due.id"
        " RETURNING r.id, r.owner, r.product_id, r.warehouse_id, r.quantity",
        params,
    )
    return await cur.fetchall()


async def oldest_due_age_seconds(conn: AsyncConnection) -> float:
    cur = await conn.execute(
        "SELECT coalesce(extract(epoch FROM now() - min(expires_at)), 0)::FLOAT AS age"
        " FROM reservations WHERE status = 'active' AND expires_at < now()"
    )
    row = await cur.fetchone()
    return float(row["age"])


INVARIANT_SQL = """
WITH active AS (
    SELECT product_id, warehouse_id, sum(quantity) AS held
      FROM reservations WHERE status = 'active' GROUP BY product_id, warehouse_id
), ledger AS (
    SELECT product_id, warehouse_id, sum(quantity_delta) AS q, sum(reserved_delta) AS r
      FROM stock_ledger GROUP BY product_id, warehouse_id
)
SELECT s.product_id, s.warehouse_id, s.quantity, s.reserved,
       coalesce(a.held, 0)::BIGINT AS active_held, coalesce(l.q, 0)::BIGINT AS ledger_quantity,
       coalesce(l.r, 0)::BIGINT AS ledger_reserved
  FROM stock s
  LEFT JOIN active a USING (product_id, warehouse_id)
  LEFT JOIN ledger l USING (product_id, warehouse_id)
 WHERE s.reserved <> coalesce(a.held, 0)
    OR s.reserved > s.quantity OR s.reserved < 0
    OR s.quantity <> coalesce(l.q, 0) OR s.reserved <> coalesce(l.r, 0)
"""


async def invariant_violations(conn: AsyncConnection) -> list[Row]:
    cur = await conn.execute(INVARIANT_SQL)
    return await cur.fetchall()


# The invariant checker's incremental form of INVARIANT_SQL: the ledger side is the checkpoint's
# totals plus the ledger rows above its horizon (a primary-key range), so the check's snapshot lasts
# as long as reading a few seconds of ledger, not the whole table.
INCREMENTAL_INVARIANT_SQL = """
WITH active AS (
    SELECT product_id, warehouse_id, sum(quantity) AS held
      FROM reservations WHERE status = 'active' GROUP BY product_id, warehouse_id
), ledger AS (
    SELECT product_id, warehouse_id, sum(q) AS q, sum(r) AS r FROM (
        SELECT product_id, warehouse_id, quantity_sum AS q, reserved_sum AS r FROM ledger_checkpoint
        UNION ALL
        SELECT product_id, warehouse_id, quantity_delta, reserved_delta FROM stock_ledger WHERE id > %s
    ) AS parts GROUP BY product_id, warehouse_id
)
SELECT s.product_id, s.warehouse_id, s.quantity, s.reserved,
       coalesce(a.held, 0)::BIGINT AS active_held, coalesce(l.q, 0)::BIGINT AS ledger_quantity,
       coalesce(l.r, 0)::BIGINT AS ledger_reserved
  FROM stock s
  LEFT JOIN active a USING (product_id, warehouse_id)
  LEFT JOIN ledger l USING (product_id, warehouse_id)
 WHERE s.reserved <> coalesce(a.held, 0)
    OR s.reserved > s.quantity OR s.reserved < 0
    OR s.quantity <> coalesce(l.q, 0) OR s.reserved <> coalesce(l.r, 0)
"""


async def ledger_checkpoint_through(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT through_id FROM ledger_checkpoint_horizon")
    row = await cur.fetchone()
    return int(row["through_id"])


async def incremental_invariant_violations(conn: AsyncConnection, *, through_id: int) -> list[Row]:
    cur = await conn.execute(INCREMENTAL_INVARIANT_SQL, (through_id,))
    return await cur.fetchall()


async def lock_ledger_checkpoint(conn: AsyncConnection) -> Row | None:
    """The horizon row, locked; None while another checker (another replica) is advancing it."""
    cur = await conn.execute(
        "SELECT through_id, candidate_id, candidate_xmax::TEXT AS candidate_xmax, candidate_at"
        " FROM ledger_checkpoint_horizon FOR UPDATE SKIP LOCKED"
    )
    return await cur.fetchone()


async def ledger_candidate_is_settled(conn: AsyncConnection, *, xmax: str, at: Any) -> bool:
    """True once no open transaction can still commit a ledger id drawn before the candidate:
    every transaction with an xid below the candidate's xmax has ended, and no session of this
    database has a transaction that began before the candidate was taken (one that drew its id but
    had no xid yet). Only client backends count (an autovacuum worker writes no ledger row).
    pg_stat_activity shows xact_start for the role's own sessions, and the service writes the ledger
    under one role."""
    cur = await conn.execute(
        "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s::XID8"
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
        "   AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start < %s) AS settled",
        (xmax, at),
    )
    row = await cur.fetchone()
    return bool(row["settled"])


async def fold_ledger_into_checkpoint(conn: AsyncConnection, *, after_id: int, through_id: int) -> None:
    await conn.execute(
        "INSERT INTO ledger_checkpoint (product_id, warehouse_id, quantity_sum, reserved_sum)"
        " SELECT product_id, warehouse_id, sum(quantity_delta), sum(reserved_delta) FROM stock_ledger"
        "  WHERE id > %s AND id <= %s GROUP BY product_id, warehouse_id"
        " ON CONFLICT (product_id, warehouse_id) DO UPDATE"
        " SET quantity_sum = ledger_checkpoint.quantity_sum + EXCLUDED.quantity_sum,"
        "     reserved_sum = ledger_checkpoint.reserved_sum + EXCLUDED.reserved_sum",
        (after_id, through_id),
    )
    await conn.execute(
        "UPDATE ledger_checkpoint_horizon SET through_id = %s, candidate_id = NULL,"
        " candidate_xmax = NULL, candidate_at = NULL, advanced_at = now()",
        (through_id,),
    )


async def record_ledger_candidate(conn: AsyncConnection) -> None:
    """The next horizon: the last ledger id handed out so far. The time and xmax are read in a later
    statement than the sequence, so every transaction that drew an id <= candidate began before the
    recorded time and, if it had an xid, holds one below the recorded xmax."""
    cur = await conn.execute("SELECT pg_sequence_last_value('stock_ledger_id_seq'::regclass) AS last_id")
    last_id = (await cur.fetchone())["last_id"]
    if last_id is None:
        return
    await conn.execute(
        "UPDATE ledger_checkpoint_horizon SET candidate_id = %s,"
        " candidate_xmax = pg_snapshot_xmax(pg_current_snapshot()), candidate_at = clock_timestamp()"
        " WHERE through_id < %s",
        (last_id, last_id),
    )
