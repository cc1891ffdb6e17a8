"""Every SQL statement about carts (schema `orders`, via search_path). Callers own the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from order_svc.model import Cart, CartLine, CartReservation

Row = dict[str, Any]


async def lock_cart(conn: AsyncConnection, user_id: str) -> int:
    """Create the cart row if needed and lock it (serializes this user's cart changes). Returns version."""
    cur = await conn.execute(
        "INSERT INTO carts (user_id) VALUES (%s) ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id"
        " RETURNING version",
        (user_id,),
    )
    row = await cur.fetchone()
    return int(row["version"])


async def touch_cart(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        "UPDATE carts SET version = version + 1, updated_at = now() WHERE user_id = %s", (user_id,)
    )


async def load_cart(conn: AsyncConnection, user_id: str) -> Cart:
    cur = await conn.execute("SELECT version, updated_at FROM carts WHERE user_id = %s", (user_id,))
    head = await cur.fetchone()
    if head is None:
        return Cart(user_id=user_id, lines=(), updated_at=None)
    cur = await conn.execute(
        "SELECT product_id, quantity, added_at FROM cart_items WHERE user_id = %s ORDER BY position",
        (user_id,),
    )
    items = await cur.fetchall()
    cur = await conn.execute(
        "SELECT reservation_id, product_id, quantity, expires_at, state FROM cart_reservations"
        " WHERE user_id = %s ORDER BY expires_at, reservation_id",
        (user_id,),
    )
    by_product: dict[int, list[CartReservation]] = {}
    for r in await cur.fetchall():
        by_product.setdefault(r["product_id"], []).append(
            CartReservation(
                reservation_id=r["reservation_id"],
                quantity=r["quantity"],
                expires_at=r["expires_at"],
                active=r["state"] == "active",
            )
        )
    lines = tuple(
        CartLine(
            product_id=i["product_id"],
            quantity=i["quantity"],
            added_at=i["added_at"],
            reservations=tuple(by_product.get(i["product_id"], ())),
        )
        for i in items
    )
    return Cart(user_id=user_id, lines=lines, updated_at=head["updated_at"], version=int(head["version"]))


async def set_line(conn: AsyncConnection, user_id: str, product_id: int, quantity: int) -> None:
    await conn.execute(
        "INSERT INTO cart_items (user_id, product_id, quantity) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = EXCLUDED.quantity",
        (user_id, product_id, quantity),
    )


async def delete_line(conn: AsyncConnection, user_id: str, product_id: int) -> None:
    await conn.execute("DELETE FROM cart_items WHERE user_id = %s AND product_id = %s", (user_id, product_id))


async def delete_all_lines(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute("DELETE FROM cart_items WHERE user_id = %s", (user_id,))


async def add_reservations(
    conn: AsyncConnection, user_id: str, held: Iterable[tuple[uuid.UUID, int, int, dt.datetime]]
) -> None:
    """(reservation id, product id, quantity, expires_at) rows; an id seen before is refreshed.

    Rows for products no longer in the cart are skipped (the line was removed meanwhile)."""
    rows = list(held)
    if not rows:
        return
    await conn.execute(
        "INSERT INTO cart_reservations (reservation_id, user_id, product_id, quantity, expires_at)"
        " SELECT t.r, %s, t.p, t.q, t.e"
        " FROM unnest(%s::UUID[], %s::BIGINT[], %s::INT[], %s::TIMESTAMPTZ[]) AS t(r, p, q, e)"
        " JOIN cart_items ci ON ci.user_id = %s AND ci.product_id = t.p"
        " ON CONFLICT (reservation_id) DO UPDATE SET quantity = EXCLUDED.quantity,"
        " expires_at = EXCLUDED.expires_at, state = 'active'",
        (
            user_id,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            user_id,
        ),
    )


async def set_reservation_quantity(conn: AsyncConnection, reservation_id: uuid.UUID, quantity: int) -> None:
    await conn.execute(
        "UPDATE cart_reservations SET quantity = %s WHERE reservation_id = %s", (quantity, reservation_id)
    )


async def delete_reservations(conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> None:
    if reservation_ids:
        await conn.execute(
            "DELETE FROM cart_reservations WHERE reservation_id = ANY(%s)", (list(reservation_ids),)
        )


async def lapse_reservations(conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> list[str]:
    """Mark reservations as no longer holding units; returns the users whose carts changed."""
    if not reservation_ids:
        return []
    cur = await conn.execute(
        "UPDATE cart_reservations SET state = 'lapsed' WHERE reservation_id = ANY(%s) AND state = 'active'"
        " RETURNING user_id",
        (list(reservation_ids),),
    )
    users = sorted({r["user_id"] for r in await cur.fetchall()})
    for user in users:
        await conn.execute("UPDATE carts SET updated_at = now() WHERE user_id = %s", (user,))
    return users


async def set_expiry(conn: AsyncConnection, expiries: Iterable[tuple[uuid.UUID, dt.datetime]]) -> None:
    rows = list(expiries)
    if rows:
        await conn.execute(
            "UPDATE cart_reservations c SET expires_at = t.e"
            " FROM unnest(%s::UUID[], %s::TIMESTAMPTZ[]) AS t(r, e) WHERE c.reservation_id = t.r",
            ([r[0] for r in rows], [r[1] for r in rows]),
        )


async def claim_request(conn: AsyncConnection, user_id: str, request_id: str) -> bool:
    """False when this AddCartItem request id was applied before."""
    cur = await conn.execute(
        "INSERT INTO cart_requests (user_id, request_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (user_id, request_id),
    )
    return await cur.fetchone() is not None


async def prune_requests(conn: AsyncConnection, older_than: dt.timedelta) -> int:
    cur = await conn.execute("DELETE FROM cart_requests WHERE applied_at < now() - %s", (older_than,))
    return cur.rowcount


async def remove_ordered(
    conn: AsyncConnection,
    user_id: str,
    lines: Iterable[tuple[int, int]],
    reservation_ids: Sequence[uuid.UUID],
) -> None:
    """After a paid checkout: take the ordered units off the cart, and the reservations the order used."""
    await delete_reservations(conn, reservation_ids)
    rows = list(lines)
    products, quantities = [r[0] for r in rows], [r[1] for r in rows]
    # delete first: a line reduced by the UPDATE must not then match the DELETE
    await conn.execute(
        "DELETE FROM cart_items c USING unnest(%s::BIGINT[], %s::INT[]) AS t(p, q)"
        " WHERE c.user_id = %s AND c.product_id = t.p AND c.quantity <= t.q",
        (products, quantities, user_id),
    )
    await conn.execute(
        "UPDATE cart_items c SET quantity = c.quantity - t.q FROM unnest(%s::BIGINT[], %s::INT[]) AS t(p, q)"
        " WHERE c.user_id = %s AND c.product_id = t.p",
        (products, quantities, user_id),
    )
