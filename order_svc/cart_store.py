"""Every SQL statement about carts (schema `orders`, via search_path). Callers own the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from psycopg import AsyncConnection

from order_svc.model import Cart, CartLine, CartReservation
from order_svc.store import number_array, text_array

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


class LockedCart(NamedTuple):
    version: int
    cart: Cart
    fresh: bool  # the request id was new (True when none was given)
    # products an unfinished checkout of this cart is selling (read only when asked for)
    checking_out: frozenset[int]


async def lock_and_load(
    conn: AsyncConnection, user_id: str, *, request_id: str = "", with_checkouts: bool = False
) -> LockedCart:
    """lock_cart, then claim_request (when a request id is given), then load_cart, as one statement
    (cart_lock_load_v2). `with_checkouts`: also which products the user's unfinished checkouts sell,
    read under the lock (orders are created under it, see checkout_create, so it cannot change)."""
    cur = await conn.execute(
        "SELECT * FROM cart_lock_load_v2(%s, %s, %s)", (user_id, request_id, with_checkouts)
    )
    rows = await cur.fetchall()
    head = rows[0]
    cart = Cart(
        user_id=user_id, lines=_lines(rows), updated_at=head["updated_at"], version=int(head["version"])
    )
    return LockedCart(int(head["version"]), cart, bool(head["fresh"]), frozenset(head["checking_out"]))


async def claimed_by_checkout(conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> bool:
    """Whether a checkout not yet finished has taken any of these reservations (order_reservations:
    its rows go when the order fails, and the cart's when it is paid; every writer of it holds the
    owner's cart lock, so under that lock the answer cannot change)."""
    if not reservation_ids:
        return False
    cur = await conn.execute(
        "SELECT 1 FROM order_reservations WHERE reservation_id = ANY(%s) LIMIT 1", (list(reservation_ids),)
    )
    return await cur.fetchone() is not None


async def touch_cart(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(
        "UPDATE carts SET version = version + 1, updated_at = now() WHERE user_id = %s", (user_id,)
    )


async def load_cart(conn: AsyncConnection, user_id: str) -> Cart:
    """The cart, its lines in the order they were added and each line's reservations (earliest expiry
    first), in one statement."""
    cur = await conn.execute(
        "SELECT c.version, c.updated_at, i.product_id, i.quantity, i.added_at, r.reservation_id,"
        " r.quantity AS r_quantity, r.expires_at, r.state"
        " FROM carts c LEFT JOIN cart_items i ON i.user_id = c.user_id"
        " LEFT JOIN cart_reservations r ON r.user_id = i.user_id AND r.product_id = i.product_id"
        " WHERE c.user_id = %s ORDER BY i.position, r.expires_at, r.reservation_id",
        (user_id,),
    )
    rows = await cur.fetchall()
    if not rows:
        return Cart(user_id=user_id, lines=(), updated_at=None)
    head = rows[0]
    return Cart(
        user_id=user_id, lines=_lines(rows), updated_at=head["updated_at"], version=int(head["version"])
    )


def _lines(rows: Sequence[Row]) -> tuple[CartLine, ...]:
    """Cart lines from rows of (product_id, quantity, added_at, reservation_id, r_quantity,
    expires_at, state), one per reservation (reservation columns NULL for a line without any)."""
    items: dict[int, tuple[Row, list[CartReservation]]] = {}
    for r in rows:
        if r["product_id"] is None:
            continue  # a cart without lines
        _, reservations = items.setdefault(r["product_id"], (r, []))
        if r["reservation_id"] is not None:
            reservations.append(
                CartReservation(
                    reservation_id=r["reservation_id"],
                    quantity=r["r_quantity"],
                    expires_at=r["expires_at"],
                    active=r["state"] == "active",
                )
            )
    return tuple(
        CartLine(
            product_id=item["product_id"],
            quantity=item["quantity"],
            added_at=item["added_at"],
            reservations=tuple(reservations),
        )
        for item, reservations in items.values()
    )


async def apply_add(
    conn: AsyncConnection,
    user_id: str,
    product_id: int,
    quantity: int,
    held: Sequence[tuple[uuid.UUID, int, dt.datetime]],
) -> CartLine:
    """An add's writes under the cart lock in one round trip (cart_add_apply): the line's quantity,
    the new (reservation id, quantity, expires_at) rows, the version bump; returns the line. The
    arrays go as literals (store.text_array), not psycopg lists: ~5 us against ~20 us."""
    cur = await conn.execute(
        "SELECT * FROM cart_add_apply(%s, %s, %s, %s::UUID[], %s::INT[], %s::TIMESTAMPTZ[])",
        (
            user_id,
            product_id,
            quantity,
            text_array(h[0] for h in held),
            number_array(h[1] for h in held),
            text_array(h[2].isoformat() for h in held),
        ),
    )
    lines = _lines(await cur.fetchall())
    assert len(lines) == 1
    return lines[0]


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
