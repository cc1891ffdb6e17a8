"""Order lifecycle after checkout: read, list, cancel, ship, deliver, refund.

Cancel (of a PAID order) and refund have remote effects: refund the payment, restock the units (a
refund after shipping only when asked: the goods came back). They run as a small saga: (1) record
the intent (`transition_to`, `transition_restock`) with a conditional UPDATE, which also blocks
ship/deliver from racing; (2) refund and restock, each idempotent (provider key, order id); (3)
move the status and write the event. A crash after (1) leaves the intent, which the recovery job
completes, so refund and restock each happen exactly once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

from psycopg_pool import AsyncConnectionPool

from meshkit.context import Principal
from meshkit.db import transaction
from meshkit.errors import Aborted, InvalidArgument
from order_svc import events, store
from order_svc.config import OrderSettings
from order_svc.model import (
    MAX_REASON_LENGTH,
    MAX_TRACKING_LENGTH,
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderNotFound,
    OrderStatus,
    PaymentStatus,
    check_transition,
    parse_order_id,
    validate_text,
)
from order_svc.peers import InventoryClient
from order_svc.saga import OrderSaga, Superseded, payment_key

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


def encode_page_token(order: Order) -> str:
    raw = json.dumps({"c": order.created_at.isoformat(), "i": str(order.id)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_PAGE_TOKEN_CHARS = 200  # what encode_page_token makes is about 110


def decode_page_token(token: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return dt.datetime.fromisoformat(data["c"]), uuid.UUID(data["i"])
    # AttributeError: uuid.UUID of a number (a crafted token); RecursionError: a token of a deeply
    # nested JSON array ("W1tb..." repeated); both were an INTERNAL
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise InvalidArgument("page_token", "not a token returned by ListOrders") from None


class OrderLifecycle:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        inventory: InventoryClient,
        saga: OrderSaga,
        settings: OrderSettings,
    ) -> None:
        self._pool = pool
        self._inventory = inventory
        self._saga = saga
        self._topic = settings.topic_order_events
        self._lease_seconds = settings.idempotency_lease_seconds

    async def get(self, principal: Principal, raw_id: str) -> Order:
        order_id = parse_order_id(raw_id)
        async with transaction(self._pool) as conn:
            found = await store.get_order(conn, order_id)
        if found is None or (found[1].user_id != principal.subject and not principal.is_admin):
            raise OrderNotFound(order_id)  # another user's order looks exactly like a missing one
        return found[1]

    async def list(self, user_id: str, *, page_size: int, page_token: str) -> tuple[list[Order], str]:
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(page_token) if page_token else None
        async with transaction(self._pool) as conn:
            orders = await store.list_orders(conn, user_id, after=after, limit=size + 1)
        more = len(orders) > size
        orders = orders[:size]
        return orders, encode_page_token(orders[-1]) if more else ""

    async def ship(self, raw_id: str, tracking_number: str) -> Order:
        validate_text(tracking_number, "tracking_number", MAX_TRACKING_LENGTH, required=True)
        return await self._move(
            parse_order_id(raw_id), OrderStatus.SHIPPED, changes={"tracking_number": tracking_number.strip()}
        )

    async def deliver(self, raw_id: str) -> Order:
        return await self._move(parse_order_id(raw_id), OrderStatus.DELIVERED)

    async def cancel(self, principal: Principal, raw_id: str, reason: str) -> Order:
        validate_text(reason, "reason", MAX_REASON_LENGTH)
        order = await self.get(principal, raw_id)
        if order.status == OrderStatus.PENDING:
            cancelled = await self._cancel_pending(order, reason or "cancelled")
            if cancelled is not None:
                return cancelled
            # its checkout ended between the read and the lease: cancel what the order became (a
            # PAID one through the refund saga below), never refund it as if it were still pending
            order = await self.get(principal, raw_id)
        if order.status == OrderStatus.CANCELLED:
            return order  # cancelling twice is harmless, as the contract says
        return await self._compensated_move(order, OrderStatus.CANCELLED, reason or "cancelled", restock=True)

    async def refund(self, raw_id: str, reason: str, *, restock: bool = False) -> Order:
        """`restock`: a SHIPPED or DELIVERED order's goods came back, so its units return to stock;
        a PAID order's always do (they never left)."""
        validate_text(reason, "reason", MAX_REASON_LENGTH)
        order_id = parse_order_id(raw_id)
        async with transaction(self._pool) as conn:
            found = await store.get_order(conn, order_id)
        if found is None:
            raise OrderNotFound(order_id)
        order = found[1]
        return await self._compensated_move(
            order,
            OrderStatus.REFUNDED,
            reason or "refunded",
            restock=restock or order.status == OrderStatus.PAID,
        )

    async def finish_transition(self, order: Order) -> Order:
        """Steps 2-3 of a recorded cancel/refund (also what recovery runs for one left half-done)."""
        assert order.transition_to is not None
        if order.payment_status in (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED):
            await self._saga.payments.refund(payment_key(order.id))
        if order.transition_restock:
            await self._inventory.restock(order.id, reason=order.transition_to.value)
        changes: dict[str, object] = {"transition_to": None, "transition_reason": None}
        if order.payment_status in (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED):
            changes["payment_status"] = PaymentStatus.REFUNDED.value
        sources = [s for s, targets in _SOURCES.items() if order.transition_to in targets]
        async with transaction(self._pool) as conn:
            row = await store.move(
                conn,
                order.id,
                expected=sources,
                target=order.transition_to,
                changes=changes,
                require_no_transition=False,
            )
            if row is not None:
                moved = store.order_from_row(row, [])
                await events.status_changed(
                    conn,
                    topic=self._topic,
                    order=moved,
                    from_status=order.status,
                    reason=order.transition_reason,
                )
            found = await store.get_order(conn, order.id)
        assert found is not None
        return found[1]

    async def _compensated_move(
        self, order: Order, target: OrderStatus, reason: str, *, restock: bool
    ) -> Order:
        check_transition(order.id, order.status, target)
        async with transaction(self._pool) as conn:
            started = await store.begin_transition(
                conn, order.id, expected=[order.status], target=target, reason=reason, restock=restock
            )
            found = await store.get_order(conn, order.id)
        assert found is not None
        row, current = found
        if not started:
            if current.status == target == OrderStatus.CANCELLED:
                return current  # a concurrent cancel finished first: cancelling twice is harmless
            _refuse_if_transition_in_progress(current)
            _refuse_if_changed(current, read_as=order.status)
            raise InvalidTransition(order.id, current.status, target, archived=row["archived_at"] is not None)
        return await self.finish_transition(current)

    async def _cancel_pending(self, order: Order, reason: str) -> Order | None:
        """Cancel a checkout that has not completed: only when no request is driving it right now.
        None when the order is no longer PENDING and not cancelled by this call (its checkout
        completed or failed meanwhile, or a driver that took the lease over ended it)."""
        owner = uuid.uuid4()
        async with transaction(self._pool) as conn:
            taken = await store.take_lease(conn, order.id, owner, self._lease_seconds, pending_only=True)
            if taken:
                # the intent first, with the lease: whoever drives the order next (this call, a retry
                # of its checkout key, recovery) ends it CANCELLED
                await store.request_cancel(conn, order.id, reason)
            found = await store.get_order(conn, order.id)
        if found is None or found[1].status != OrderStatus.PENDING:
            return None
        if not taken:
            raise _checkout_in_progress()
        try:
            # renewed like a checkout's lease: the final move is fenced by it, and a cancel slowed past
            # one lease (provider, inventory) must not lose the order to a retry of its checkout key
            async with self._saga.renewing_lease(order.id, owner, name="cancel-lease"):
                await self._saga.cancel_pending(found[1], lease_owner=owner)
        except Superseded:
            pass
        finally:
            async with transaction(self._pool) as conn:
                await store.clear_lease(conn, order.id, owner)
        ended = await self._saga.load(order.id)
        if ended.status == OrderStatus.PENDING:  # another driver took the lease over: not cancelled
            raise _checkout_in_progress()
        # another driver that took the lease over ended it otherwise (a PAID one is then cancelled
        # through the refund saga by the caller, as if its checkout had completed before the cancel)
        return ended if ended.status == OrderStatus.CANCELLED else None

    async def _move(
        self, order_id: uuid.UUID, target: OrderStatus, changes: dict[str, object] | None = None
    ) -> Order:
        sources = [s for s, targets in _SOURCES.items() if target in targets]
        async with transaction(self._pool) as conn:
            row = await store.move(conn, order_id, expected=sources, target=target, changes=changes)
            if row is None:
                found = await store.get_order(conn, order_id)
                if found is None:
                    raise OrderNotFound(order_id)
                if found[1].status in sources:  # else forbidden, in flight or not
                    _refuse_if_transition_in_progress(found[1])
                raise InvalidTransition(order_id, found[1].status, target)
            await events.status_changed(
                conn, topic=self._topic, order=store.order_from_row(row, []), from_status=sources[0]
            )
            found = await store.get_order(conn, order_id)
        assert found is not None
        return found[1]


# status -> where it may go after checkout (PENDING's moves belong to the checkout saga)
_SOURCES = {status: targets for status, targets in TRANSITIONS.items() if status != OrderStatus.PENDING}


# A move refused because of another one in flight, not because the state machine forbids it, is
# ABORTED (retry): both cases below were a permanent INVALID_ORDER_TRANSITION, some naming a move the
# state machine allows ("delivered to refunded").


def _refuse_if_transition_in_progress(current: Order) -> None:
    """A cancel/refund half-done blocks every other move until it ends."""
    if current.transition_to is not None:
        raise Aborted(
            f"a move of order {current.id} to {current.transition_to.value} is in progress; retry",
            reason="ORDER_TRANSITION_IN_PROGRESS",
            metadata={"order_id": current.id, "to_status": current.transition_to.wire_name},
        )


def _refuse_if_changed(current: Order, *, read_as: OrderStatus) -> None:
    """The status changed between the read and the write."""
    if current.status != read_as:
        raise Aborted(
            f"order {current.id} changed from {read_as.value} to {current.status.value} meanwhile; retry",
            reason="ABORTED",
            metadata={"order_id": current.id},
        )


def _checkout_in_progress() -> Aborted:
    return Aborted("the checkout of this order is in progress; retry later", reason="ABORTED")
