"""SQL of the archival tiers (schema `orders`): hot rows -> orders_archive JSON -> cold files -> purge."""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg import AsyncConnection

Row = dict[str, Any]

# One statement per batch: pick (locked, skipping rows another archiver holds), copy to the archive
# with the lines, anonymize the live row. Data-modifying CTEs all read the same snapshot, so the
# archive gets the addresses as they were before the UPDATE blanks them.
ARCHIVE_BATCH_SQL = """
WITH picked AS (
    SELECT id FROM orders
     WHERE archived_at IS NULL AND created_at < %(cutoff)s
       AND status IN ('delivered', 'cancelled', 'refunded', 'failed')  -- model.ARCHIVABLE
       AND transition_to IS NULL  -- a refund half-done would end after its archive was written
     ORDER BY created_at, id
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
), archived AS (
    INSERT INTO orders_archive (order_id, user_id, archive_data, order_created_at, archived_at)
    SELECT o.id, o.user_id,
           (to_jsonb(o) - 'checkout_outcome' - 'lease_owner' - 'lease_until' - 'request_hash')
           || jsonb_build_object('items', coalesce((
                SELECT jsonb_agg(jsonb_build_object('product_id', l.product_id, 'title', l.title,
                                                    'unit_price', l.unit_price, 'quantity', l.quantity)
                                 ORDER BY l.position)
                  FROM order_lines l WHERE l.order_id = o.id), '[]'::jsonb)),
           o.created_at, %(now)s
      FROM orders o JOIN picked USING (id)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
UPDATE orders o
   SET archived_at = %(now)s, archive_status = 'archived',
       shipping_address = '{"anonymized": true}'::jsonb, billing_address = NULL, notes = NULL,
       checkout_outcome = NULL, updated_at = now()
  FROM picked
 WHERE o.id = picked.id
RETURNING o.id
"""


async def archive_batch(conn: AsyncConnection, *, cutoff: dt.datetime, now: dt.datetime, limit: int) -> int:
    cur = await conn.execute(ARCHIVE_BATCH_SQL, {"cutoff": cutoff, "now": now, "limit": limit})
    return len(await cur.fetchall())


async def unexported(conn: AsyncConnection, *, limit: int) -> list[Row]:
    cur = await conn.execute(
        "SELECT order_id, user_id, archive_data, order_created_at, archived_at FROM orders_archive"
        " WHERE exported_at IS NULL ORDER BY order_created_at, order_id LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    return await cur.fetchall()


async def mark_exported(conn: AsyncConnection, order_ids: list[Any], *, file: str, now: dt.datetime) -> None:
    await conn.execute(
        "UPDATE orders_archive SET exported_at = %s, export_file = %s WHERE order_id = ANY(%s)",
        (now, file, order_ids),
    )


async def purge_batch(conn: AsyncConnection, *, cutoff: dt.datetime, limit: int) -> int:
    cur = await conn.execute(
        "DELETE FROM orders_archive WHERE order_id IN ("
        " SELECT order_id FROM orders_archive WHERE order_created_at < %s"
        " ORDER BY order_created_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING order_id",
        (cutoff, limit),
    )
    return len(await cur.fetchall())
