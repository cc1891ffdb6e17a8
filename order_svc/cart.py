"""Cart use cases: each holds the user's cart row lock for one transaction around its inventory call.

Why a lock across a network call: a cart change is "reserve (or release) in inventory, then record
it here", and two changes of one user's cart must not interleave. The lock is per user, so users
never wait for each other. Inventory calls carry request ids derived from (user, cart version,
operation), or for an add carrying the client's request id from (user, request id, product,
units): the version only moves when a change commits, so a change retried after a failure reuses its
request id and inventory answers with the first call's reservations instead of holding stock twice;
an add with a client request id keeps its inventory id even when another change committed between
its attempts (see add_request_id). A reservation whose recording failed is never lost for good: it
lapses at its TTL.
"""

from __future__ import annotations

import datetime as dt
import uuid

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from shop.order.v1 import cart_pb2

from meshkit.db import connection, transaction
from meshkit.errors import DomainError, InvalidArgument
from order_svc import cart_store, convert
from order_svc.cart_cache import CartCache
from order_svc.config import OrderSettings
from order_svc.model import (
    Cart,
    CartItemNotFound,
    CartLine,
    CheckoutInProgress,
    ProductInfo,
    ProductNotFound,
    derived_request_id,
    plan_release,
    validate_product_id,
    validate_quantity,
)
from order_svc.peers import CatalogClient, Held, InventoryClient

# Releasing these is already done: expired, released, or sold to an order.
_GONE_REASONS = {"RESERVATION_EXPIRED", "RESERVATION_NOT_FOUND"}


def add_request_id(
    user_id: str, product_id: int, units: int, *, request_id: str, version: int, total: int
) -> str:
    """The inventory request id of an add that reserves `units` of a product.

    With the client's request id it is derived from (user, request id, product, units) and not from
    the cart version: when inventory committed a reservation whose answer was lost (inventory killed,
    a deadline) and another change of the cart committed before the retry, the retry still reuses
    the first call's id, so inventory answers with the reservation it already holds instead of
    holding the units a second time (and the first reservation would sit on no cart until its TTL).
    Without one, a retry is a new request anyway, so the version keeps two adds apart.
    """
    if request_id:
        return derived_request_id(user_id, "req", request_id, product_id, units, "add")
    # units too: a retry at this version after the line lapsed reserves the whole line, not the
    # added units, and one id sent with another quantity is REQUEST_ID_REUSED
    return derived_request_id(user_id, version, product_id, total, units, request_id, "add")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _line(cart: Cart, product_id: int) -> CartLine | None:
    return next((line for line in cart.lines if line.product_id == product_id), None)


class CartService:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        cache: CartCache,
        inventory: InventoryClient,
        catalog: CatalogClient,
        settings: OrderSettings,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._inventory = inventory
        self._catalog = catalog
        self._ttl = settings.cart_reservation_ttl_seconds
        self._max_quantity = settings.cart_max_line_quantity
        self._max_lines = settings.cart_max_lines

    # --- reads ------------------------------------------------------------------------------------

    async def get_cart(self, user_id: str) -> cart_pb2.Cart:
        cached, generation = await self._cache.get(user_id)
        if cached is not None:
            return convert.refresh_cart_states(cart_pb2.Cart.FromString(cached), _now())
        async with connection(self._pool) as conn:
            cart = await cart_store.load_cart(conn, user_id)
        cart = await self._check_reservations(cart)
        products, complete = await self._products([line.product_id for line in cart.lines])
        rendered = convert.cart_out(cart, products, _now())
        if complete:  # do not cache a cart missing its titles and prices
            await self._cache.put(user_id, generation, rendered.SerializeToString())
        return rendered

    async def _check_reservations(self, cart: Cart) -> Cart:
        """Read-time check with inventory: reservations no longer active there are shown as expired."""
        live = [r for line in cart.lines for r in line.reservations if r.active]
        if not live:
            return cart
        try:
            found = {h.id: h for h in await self._inventory.batch_get([r.reservation_id for r in live])}
        except DomainError:
            return cart  # inventory unreachable: the local state (and expires_at) still applies
        gone = [
            r.reservation_id
            for r in live
            if r.reservation_id not in found or found[r.reservation_id].status != "active"
        ]
        moved = [
            (r.reservation_id, found[r.reservation_id].expires_at)
            for r in live
            if r.reservation_id in found and found[r.reservation_id].expires_at != r.expires_at
        ]
        if not gone and not moved:
            return cart
        async with transaction(self._pool) as conn:
            await cart_store.lapse_reservations(conn, gone)
            await cart_store.set_expiry(conn, moved)
            return await cart_store.load_cart(conn, cart.user_id)

    async def _products(self, product_ids: list[int]) -> tuple[dict[int, ProductInfo], bool]:
        if not product_ids:
            return {}, True
        try:
            return await self._catalog.recent_products(product_ids), True
        except DomainError:
            return {}, False  # informational only: the cart is still served

    # --- writes -----------------------------------------------------------------------------------

    async def add_item(
        self, user_id: str, *, product_id: int, quantity: int, request_id: str
    ) -> tuple[CartLine, ProductInfo]:
        validate_product_id(product_id)
        validate_quantity(quantity, self._max_quantity)
        if len(request_id) > 64:
            raise InvalidArgument("request_id", "at most 64 characters")
        info = (await self._catalog.recent_products([product_id])).get(product_id)
        if info is None or not info.is_active:
            raise ProductNotFound([product_id])
        async with transaction(self._pool) as conn:
            version, cart, fresh, checking_out = await cart_store.lock_and_load(
                conn, user_id, request_id=request_id, with_checkouts=True
            )
            line = _line(cart, product_id)
            if not fresh:  # this request id was applied before: answer with the line as it is
                if line is None:
                    raise CartItemNotFound(product_id)
                return line, info
            if line is None and len(cart.lines) >= self._max_lines:
                raise InvalidArgument("product_id", f"a cart holds at most {self._max_lines} lines")
            total = validate_quantity((line.quantity if line else 0) + quantity, self._max_quantity)
            _refuse_if_being_checked_out(checking_out, product_id)
            if line is not None and line.is_expired(_now()):
                await self._release_all(conn, user_id, line, version)
                units = total
            else:
                units = quantity
            op = add_request_id(
                user_id, product_id, units, request_id=request_id, version=version, total=total
            )
            held = await self._reserve(user_id, product_id, units, op)
            line = await cart_store.apply_add(
                conn, user_id, product_id, total, [(h.id, h.quantity, h.expires_at) for h in held]
            )
        await self._cache.invalidate(user_id)
        return line, info

    async def update_item(
        self, user_id: str, *, product_id: int, quantity: int
    ) -> tuple[CartLine, ProductInfo | None]:
        validate_product_id(product_id)
        validate_quantity(quantity, self._max_quantity)
        async with transaction(self._pool) as conn:
            version, cart, _, checking_out = await cart_store.lock_and_load(
                conn, user_id, with_checkouts=True
            )
            line = _line(cart, product_id)
            if line is None:
                raise CartItemNotFound(product_id)
            op = derived_request_id(user_id, version, product_id, quantity, "update")
            expired = line.is_expired(_now())
            if expired or quantity > line.quantity:
                _refuse_if_being_checked_out(checking_out, product_id)
            # the inventory request id names the units reserved: a retry at this version after the
            # line lapsed reserves the whole quantity, not the difference (the same id with another
            # quantity is REQUEST_ID_REUSED)
            if expired:
                await self._release_all(conn, user_id, line, version)
                units = quantity
            else:
                units = quantity - line.quantity
            if units > 0:
                reserve_op = derived_request_id(user_id, version, product_id, quantity, units, "update")
                held = await self._reserve(user_id, product_id, units, reserve_op)
                await cart_store.add_reservations(
                    conn, user_id, [(h.id, h.product_id, h.quantity, h.expires_at) for h in held]
                )
            elif quantity < line.quantity:
                await _refuse_if_claimed(conn, line)
                for reservation_id, units, whole in plan_release(line.reservations, line.quantity - quantity):
                    await self._release(conn, reservation_id, 0 if whole else units, f"{op}:{reservation_id}")
            await cart_store.set_line(conn, user_id, product_id, quantity)
            line = await self._finish(conn, user_id, product_id)
        await self._cache.invalidate(user_id)
        products, _ = await self._products([product_id])
        return line, products.get(product_id)

    async def remove_item(self, user_id: str, *, product_id: int) -> cart_pb2.Cart:
        validate_product_id(product_id)
        async with transaction(self._pool) as conn:
            version, cart, _, _ = await cart_store.lock_and_load(conn, user_id)
            line = _line(cart, product_id)
            if line is None:
                raise CartItemNotFound(product_id)
            await self._release_all(conn, user_id, line, version)
            await cart_store.delete_line(conn, user_id, product_id)
            await cart_store.touch_cart(conn, user_id)
        await self._cache.invalidate(user_id)
        return await self.get_cart(user_id)

    async def clear_cart(self, user_id: str) -> cart_pb2.Cart:
        async with transaction(self._pool) as conn:
            version, cart, _, _ = await cart_store.lock_and_load(conn, user_id)
            # every line before any release: releases are calls to inventory, which a refusal at a
            # later line (the rollback) would not undo, leaving the cart holding freed reservations
            for line in cart.lines:
                await _refuse_if_claimed(conn, line)
            for line in cart.lines:
                await self._release_all(conn, user_id, line, version, checked=True)
            await cart_store.delete_all_lines(conn, user_id)
            await cart_store.touch_cart(conn, user_id)
        await self._cache.invalidate(user_id)
        return await self.get_cart(user_id)

    # --- helpers (inside the caller's transaction) ------------------------------------------------

    async def _reserve(self, user_id: str, product_id: int, quantity: int, request_id: str) -> list[Held]:
        held = await self._inventory.reserve(
            owner=user_id,
            product_id=product_id,
            quantity=quantity,
            ttl_seconds=self._ttl,
            request_id=request_id,
        )
        # a replayed request id is answered with its reservations as they are now: one expired,
        # released or committed since holds nothing, and recording it as live would only fail the
        # next checkout's commit (the line then counts as lapsed and is reserved again)
        return [h for h in held if h.status == "active"]

    async def _release(
        self, conn: AsyncConnection, reservation_id: uuid.UUID, quantity: int, request_key: str
    ) -> None:
        try:
            held = await self._inventory.release(
                reservation_id, quantity=quantity, request_id=derived_request_id(request_key)
            )
        except DomainError as error:
            if error.reason not in _GONE_REASONS:
                raise
            await cart_store.delete_reservations(conn, [reservation_id])
            return
        if held.status == "active":
            await cart_store.set_reservation_quantity(conn, reservation_id, held.quantity)
        else:
            await cart_store.delete_reservations(conn, [reservation_id])

    async def _release_all(
        self, conn: AsyncConnection, user_id: str, line: CartLine, version: int, *, checked: bool = False
    ) -> None:
        if not checked:
            await _refuse_if_claimed(conn, line)
        for reservation in line.reservations:
            if reservation.active:
                key = f"{user_id}:{version}:{reservation.reservation_id}:release-all"
                await self._release(conn, reservation.reservation_id, 0, key)
        await cart_store.delete_reservations(conn, [r.reservation_id for r in line.reservations])

    async def _finish(self, conn: AsyncConnection, user_id: str, product_id: int) -> CartLine:
        await cart_store.touch_cart(conn, user_id)
        line = _line(await cart_store.load_cart(conn, user_id), product_id)
        assert line is not None
        return line


def _refuse_if_being_checked_out(checking_out: frozenset[int], product_id: int) -> None:
    """Before reserving more of a product: an unfinished checkout may be selling it. When it ends
    it takes the units it sold off the line and its reservations off the cart; units reserved now
    would stay on a line that no longer counts them (holding stock nothing buys, and failing the
    next checkout with too many units held), and a line added again would be taken away whole."""
    if product_id in checking_out:
        raise CheckoutInProgress(product_id)


async def _refuse_if_claimed(conn: AsyncConnection, line: CartLine) -> None:
    """Before releasing a line's units: an unfinished checkout of this cart may have taken them. Its
    order was priced and is charged for the units as they were; releasing some now would let it
    commit fewer units than it sells (step 2 commits reservations by id), so the change waits."""
    if await cart_store.claimed_by_checkout(conn, [r.reservation_id for r in line.reservations]):
        raise CheckoutInProgress(line.product_id)
