"""Steps 2-4 of checkout and their compensations: the part shared by Checkout, recovery and cancel.

Every step is safe to repeat, which is what makes a crash at any boundary recoverable:
  * holding stock: ExtendReservations, re-reserve with request ids derived from the order id, and
    CommitReservations are idempotent by reservation and order id;
  * payment: the provider keeps one charge per idempotency key `order:<id>`; `void` closes the key
    so a charge that was lost in flight cannot be captured after recovery gave up on it;
  * compensation: RestockOrder is idempotent by order id, and also fences a late commit;
  * the final move (PENDING -> PAID/FAILED/CANCELLED) is one conditional UPDATE written with the
    stored checkout outcome, the cart change and the outbox event in one transaction.
Remote effects always come before the local state change that records them, so a crash between the
two leaves the order PENDING and the next driver (retry or recovery) repeats the remote call, which
changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg
from psycopg_pool import AsyncConnectionPool

from meshkit.db import connection, transaction
from meshkit.errors import Aborted, DomainError
from meshkit.idempotency import keep_renewing
from meshkit.logs import log_event
from order_svc import cart_store, convert, events, metrics, store
from order_svc.audit import first_status_change_records
from order_svc.cart_cache import CartCache
from order_svc.config import OrderSettings
from order_svc.failpoints import Failpoints
from order_svc.model import (
    CURRENCY,
    CheckoutAbandoned,
    Order,
    OrderOutOfStock,
    OrderStatus,
    PaymentDeclined,
    PaymentStatus,
    PaymentUnavailable,
    derived_request_id,
)
from order_svc.payments import Charge, PaymentProvider, PaymentProviderError, PaymentTimeout
from order_svc.peers import Held, InventoryClient

log = logging.getLogger("order_svc.saga")

_STOCK_SHORT_REASONS = {"INSUFFICIENT_STOCK", "PRODUCT_NOT_FOUND"}
# a commit refused for these committed nothing: extend the reservations to learn what they hold now
_RECOUNT_REASONS = {"RESERVATION_EXPIRED", "RESERVATION_QUANTITY_MISMATCH"}


class Superseded(Exception):
    """Another actor finished or compensated the order meanwhile: read its outcome instead."""


class Restocked(Superseded):
    """Inventory says the order was restocked (a compensation began) while it is still PENDING."""


def payment_key(order_id: uuid.UUID) -> str:
    return f"order:{order_id}"


class OrderSaga:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        cache: CartCache,
        inventory: InventoryClient,
        payments: PaymentProvider,
        settings: OrderSettings,
        failpoints: Failpoints,
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._inventory = inventory
        self.payments = payments
        self._settings = settings
        self._topic = settings.topic_order_events
        self._hold = settings.checkout_hold_seconds
        self._failpoints = failpoints

    @contextlib.asynccontextmanager
    async def renewing_lease(
        self, order_id: uuid.UUID, owner: uuid.UUID, *, name: str
    ) -> AsyncIterator[None]:
        """Keep the order row's lease (taken by `owner`) from running out while the block works: the
        final moves are fenced by it, so a takeover by someone else makes them change nothing."""
        seconds = self._settings.idempotency_lease_seconds

        async def renew() -> None:
            with contextlib.suppress(DomainError):
                async with transaction(self._pool) as conn:
                    await store.renew_lease(conn, order_id, owner, seconds)

        async with keep_renewing(renew, seconds / 3, name=f"{name}:{order_id}"):
            yield

    async def check_lease(self, order_id: uuid.UUID, owner: uuid.UUID) -> None:
        """Renew the lease `owner` took, or raise Superseded when someone else holds it now: for a
        compensation about to give something back (stock, money) that a new driver may be using."""
        async with connection(self._pool) as conn:
            held = await store.renew_lease(conn, order_id, owner, self._settings.idempotency_lease_seconds)
        if not held:
            raise Superseded()

    # --- driving a pending order forward --------------------------------------------------------

    async def advance(
        self,
        order_id: uuid.UUID,
        *,
        payment_token: str,
        lease_owner: uuid.UUID,
        fresh: tuple[Order, list[dict]] | None = None,
    ) -> bytes:
        """Take a PENDING order (whose lease `lease_owner` holds) to its final state; returns the
        stored outcome. The final move happens only while `lease_owner` still holds the lease: a
        driver that stalled past it while a cancel or recovery took over changes nothing (Superseded).

        `fresh`: the order step 1 just created and the reservations it took, which spares reading
        them back. Raises a retryable DomainError (PAYMENT_UNAVAILABLE, DEPENDENCY_UNAVAILABLE...)
        when a step cannot finish now; the order then stays PENDING for a retry with the same key or
        recovery.
        """
        try:
            order, reservations = fresh if fresh is not None else (await self.load(order_id), None)
            if order.status != OrderStatus.PENDING:
                raise Superseded()
            if order.cancel_requested:  # its cancel was recorded and died half-way
                return await self.cancel_pending(order, lease_owner=lease_owner)
            if not order.stock_committed:
                shortage = await self.hold_and_commit(order, reservations, lease_owner=lease_owner)
                if shortage is not None:
                    return await self.fail(order, shortage, restock=True, lease_owner=lease_owner)
                # recorded by step 4 (or with a payment error or a decline): a crash before then
                # re-runs step 2, which finds the reservations committed to this order and changes
                # nothing
                self._failpoints.hit("after_commit")
            charge = await self.charge(order, payment_token)
            if charge.status == "refunded":  # a cancel is compensating this order right now
                raise Superseded()
            if not charge.captured:
                # recorded before the restock, which fences any later commit of this order: a
                # driver resuming after a crash past the restock must skip step 2 and meet the
                # decline again (the provider's answer for the key), not a fenced commit
                async with connection(self._pool) as conn:
                    await store.mark_payment_attempt(conn, order.id, None)
                error = PaymentDeclined(order.id, charge.decline_code or charge.status)
                return await self.fail(
                    order,
                    error,
                    restock=True,
                    payment_status=PaymentStatus.DECLINED,
                    decline_code=error.metadata["decline_code"],
                    lease_owner=lease_owner,
                )
            self._failpoints.hit("after_payment")
            return await self.complete(order, charge, lease_owner=lease_owner)
        except Restocked:
            return await self.abandon_restocked(order, lease_owner=lease_owner)
        except Superseded:
            return await self.final_outcome(order_id)

    async def abandon_restocked(self, order: Order, *, lease_owner: uuid.UUID) -> bytes:
        """End a PENDING order whose stock a compensation gave back before its driver died (a cancel,
        or a failed checkout, killed between the restock and its final move). Only the final move is
        missing: the order cannot go on (inventory fences its commit), and answering ABORTED left it
        PENDING, each retry of the key putting recovery off again."""
        try:
            charge = await self.payments.void(payment_key(order.id))
            return await self.abandon(order, charge, lease_owner=lease_owner)
        except Superseded:
            return await self.final_outcome(order.id)

    async def abandon(self, order: Order, charge: Charge | None, *, lease_owner: uuid.UUID) -> bytes:
        """End a PENDING order nobody can take further as FAILED / CHECKOUT_ABANDONED, its stock back.
        `charge`: what voiding its payment key found. A capture is refunded (a compensation was
        doing that when it died); the payment is then REFUNDED, else FAILED if one was attempted."""
        if charge is not None and charge.status == "captured":
            charge = await self.payments.refund(payment_key(order.id))
        if charge is not None and charge.status == "refunded":
            payment = PaymentStatus.REFUNDED
        else:
            payment = PaymentStatus.FAILED if order.payment_attempted else None
        return await self.fail(
            order,
            CheckoutAbandoned(order.id, OrderStatus.FAILED),
            restock=True,
            payment_status=payment,
            lease_owner=lease_owner,
        )

    async def cancel_pending(self, order: Order, *, lease_owner: uuid.UUID) -> bytes:
        """End a PENDING order whose cancel is recorded (cancel_requested): close its payment
        key, refund a capture, restock, CANCELLED. What CancelOrder runs, and what a retry of the
        checkout key or recovery runs for a cancel that died half-way, so the order ends cancelled as
        asked whichever step the cancel reached (it ended FAILED, once as PAYMENT_DECLINED "voided":
        the next driver met the key the cancel had closed)."""
        charge = await self.payments.void(payment_key(order.id))
        if charge is not None and charge.status == "captured":
            await self.check_lease(order.id, lease_owner)  # a new driver may be ending it
            charge = await self.payments.refund(payment_key(order.id))
        return await self.fail(
            order,
            CheckoutAbandoned(order.id, OrderStatus.CANCELLED),
            restock=True,
            target=OrderStatus.CANCELLED,
            payment_status=PaymentStatus.REFUNDED if charge is not None and charge.captured else None,
            lease_owner=lease_owner,
        )

    async def hold_and_commit(
        self, order: Order, reservations: list[dict] | None = None, *, lease_owner: uuid.UUID
    ) -> OrderOutOfStock | None:
        """Step 2: commit the order's reservations to it; when some lapsed, extend the live ones,
        re-reserve the missing units and commit again. `reservations`: the order's, if just read.

        Usually every reservation is still held and covers its line exactly: then one commit call
        does it (all or nothing; idempotent by order id, so it also answers a repeat). The extend
        first is needed only to learn which reservations lapsed."""
        rows = reservations if reservations is not None else await self._reservations(order.id)
        expected = _units_of(order)
        if _covers(order, rows):
            # inventory checks the units too: the quantities recorded here can be behind inventory's
            # (a partial release it applied whose answer was lost), and selling by id alone then
            # sold fewer units than the order charges for
            try:
                await self._inventory.commit(order.id, [r["reservation_id"] for r in rows], expected)
                return None
            except DomainError as error:
                if error.reason == "ORDER_RESTOCKED":
                    raise Restocked() from error
                if error.reason not in _RECOUNT_REASONS:
                    raise
        for attempt in range(3):
            rows = await self._reservations(order.id)
            held = await self._inventory.extend([r["reservation_id"] for r in rows], ttl_seconds=self._hold)
            mine = str(order.id)
            if held and all(h.status == "committed" and h.order_id == mine for h in held):
                return None  # committed by an earlier attempt
            live = [
                h for h in held if h.status == "active" or (h.status == "committed" and h.order_id == mine)
            ]
            dead = [h.id for h in held if h not in live]
            have: dict[int, int] = defaultdict(int)
            for h in live:
                have[h.product_id] += h.quantity
            new: list[Held] = []
            short: list[tuple[int, str]] = []
            for line in order.lines:
                missing = line.quantity - have[line.product_id]
                if missing < 0:
                    raise RuntimeError(
                        f"order {order.id} holds {-missing} units too many of {line.product_id}"
                    )
                if missing == 0:
                    continue
                try:
                    new += await self._inventory.reserve(
                        owner=order.user_id,
                        product_id=line.product_id,
                        quantity=missing,
                        ttl_seconds=self._hold,
                        request_id=derived_request_id(
                            order.id, line.product_id, missing, attempt, "re-reserve"
                        ),
                    )
                except DomainError as error:
                    if error.reason not in _STOCK_SHORT_REASONS:
                        raise
                    short.append((line.product_id, error.message))
            await self._record_holdings(order, live=live, dead=dead, new=new, lease_owner=lease_owner)
            if short:
                detail = "; ".join(message for _, message in short)
                return OrderOutOfStock(order.id, [pid for pid, _ in short], detail)
            try:
                await self._inventory.commit(order.id, [h.id for h in live + new], expected)
                return None
            except DomainError as error:
                if error.reason == "ORDER_RESTOCKED":
                    raise Restocked() from error
                if error.reason not in _RECOUNT_REASONS:
                    raise
                log.info(
                    "reservations changed during commit; holding again",
                    extra={"order_id": str(order.id), "reason": error.reason},
                )
        raise Aborted(
            "stock kept lapsing while committing; retry", reason="ABORTED", metadata={"order_id": order.id}
        )

    async def _record_holdings(
        self,
        order: Order,
        *,
        live: list[Held],
        dead: list[uuid.UUID],
        new: list[Held],
        lease_owner: uuid.UUID,
    ) -> None:
        """The order's reservations now; re-reserved ones also go back on the cart line they serve.
        Only while `lease_owner` still drives the order: a driver that stalled past its lease while
        a cancel ended the order attached its re-reserved units to the ended order for good (its
        claims outlive it, so the cart line refused every change as CHECKOUT_IN_PROGRESS); its new
        reservations are released instead."""
        if not dead and not new:
            return  # the usual case: every reservation was still held (extended expiries are not copied)
        async with transaction(self._pool) as conn:
            await cart_store.lock_cart(conn, order.user_id)
            seconds = self._settings.idempotency_lease_seconds
            still_driving = await store.renew_lease(conn, order.id, lease_owner, seconds)
            if still_driving:
                await store.drop_reservations(conn, order.id, dead)
                claimed = [(h.id, h.product_id, h.quantity) for h in new]
                if not await store.claim_reservations(conn, order.id, claimed):
                    raise Aborted("a re-reserved reservation is claimed by another order", reason="ABORTED")
                await cart_store.lapse_reservations(conn, dead)
                await cart_store.add_reservations(
                    conn, order.user_id, [(h.id, h.product_id, h.quantity, h.expires_at) for h in new]
                )
                await cart_store.set_expiry(
                    conn, [(h.id, h.expires_at) for h in live if h.status == "active"]
                )
        if not still_driving:
            await self._release_quietly([h.id for h in new])
            raise Superseded()
        await self._cache.invalidate(order.user_id)

    async def _release_quietly(self, reservation_ids: list[uuid.UUID]) -> None:
        """Give back reservations nobody records (their TTL would, later)."""
        for reservation_id in reservation_ids:
            try:
                await self._inventory.release(reservation_id)
            except DomainError as error:
                log.warning(
                    "could not release an unrecorded reservation; its TTL will",
                    extra={"reservation_id": str(reservation_id), "error": error.message[:200]},
                )

    async def charge(self, order: Order, token: str) -> Charge:
        """Step 3. Timeouts and provider errors leave the order PENDING (retry or recovery decides),
        with the attempt and its error recorded. A capture is recorded by the final move
        (checkout_complete), a decline before its restock (see advance): no write of its own before
        the provider call, which saves a round trip and a commit per checkout. A driver resuming
        without the record repeats step 2, idempotent by order id until a restock fences it, and the
        provider answers a repeated charge with the first one."""
        timeout = self._settings.payment_timeout_seconds
        try:
            async with asyncio.timeout(timeout * 2 + 1):  # no task of its own, unlike wait_for
                charge = await self.payments.charge(
                    idempotency_key=payment_key(order.id), amount=order.total, currency=CURRENCY, token=token
                )
        except (PaymentTimeout, TimeoutError, PaymentProviderError) as exc:
            outcome = "error" if isinstance(exc, PaymentProviderError) else "timeout"
            metrics.payment_calls_total.labels("charge", outcome).inc()
            async with connection(self._pool) as conn:
                await store.mark_payment_attempt(conn, order.id, f"{outcome}: {exc}"[:500])
            raise PaymentUnavailable(order.id, outcome) from exc
        metrics.payment_calls_total.labels("charge", charge.status).inc()
        return charge

    # --- final moves ------------------------------------------------------------------------------

    async def complete(self, order: Order, charge: Charge, *, lease_owner: uuid.UUID) -> bytes:
        """Step 4: PENDING -> PAID with the capture, the cart cleared of what was bought, one event.

        One round trip (checkout_complete): the paid order, its outcome, event and audit records are
        built here first. The records assume the order's audit chain is empty, as it is for an order
        never moved before; if it is not, the function writes nothing and the step goes statement by
        statement (`_complete_stepwise`)."""
        now = dt.datetime.now(dt.UTC)
        paid = dataclasses.replace(
            order,
            status=OrderStatus.PAID,
            payment_status=PaymentStatus.CAPTURED,
            payment_reference=charge.reference,
            version=order.version + 1,
            updated_at=now,
            stock_committed=True,
            payment_attempted=True,
        )
        outcome = convert.encode_success(paid)
        resource, records = first_status_change_records(paid, OrderStatus.PENDING, now)
        try:
            async with connection(self._pool) as conn:
                moved = await store.complete_checkout(
                    conn,
                    paid=paid,
                    outcome=outcome,
                    event=events.status_changed_event(
                        topic=self._topic, order=paid, from_status=OrderStatus.PENDING
                    ),
                    audit_resource=resource,
                    audit_records=records,
                    lease_owner=lease_owner,
                )
        except psycopg.Error as error:
            if error.sqlstate != store.CHAIN_HAS_RECORDS:
                raise
            return await self._complete_stepwise(order, charge, lease_owner)
        if not moved:
            raise Superseded()
        return await self._paid(order, outcome)

    async def _complete_stepwise(self, order: Order, charge: Charge, lease_owner: uuid.UUID) -> bytes:
        async with transaction(self._pool) as conn:
            await cart_store.lock_cart(conn, order.user_id)
            row = await store.move(
                conn,
                order.id,
                expected=[OrderStatus.PENDING],
                target=OrderStatus.PAID,
                changes={
                    "payment_status": PaymentStatus.CAPTURED.value,
                    "payment_reference": charge.reference,
                },
                lease_owner=lease_owner,
            )
            if row is None:
                raise Superseded()
            await store.mark_payment_attempt(conn, order.id, None)
            reservations = await store.reservations_of(conn, order.id)
            await cart_store.remove_ordered(
                conn,
                order.user_id,
                [(line.product_id, line.quantity) for line in order.lines],
                [r["reservation_id"] for r in reservations],
            )
            await cart_store.touch_cart(conn, order.user_id)
            paid = store.order_from_row(row, [])
            paid = _with_lines(paid, order)
            outcome = convert.encode_success(paid)
            await store.set_outcome(conn, order.id, outcome)
            await events.status_changed(conn, topic=self._topic, order=paid, from_status=OrderStatus.PENDING)
        return await self._paid(order, outcome)

    async def _paid(self, order: Order, outcome: bytes) -> bytes:
        await self._cache.invalidate(order.user_id)
        metrics.orders_total.labels("success").inc()
        metrics.order_value_dollars.observe(float(order.total))
        log_event(log, "order_paid", order_id=str(order.id), total=str(order.total))
        return outcome

    async def fail(
        self,
        order: Order,
        error: DomainError,
        *,
        restock: bool,
        target: OrderStatus = OrderStatus.FAILED,
        payment_status: PaymentStatus | None = None,
        decline_code: str | None = None,
        lease_owner: uuid.UUID,
    ) -> bytes:
        """Compensate and end the order (FAILED, or CANCELLED for a cancelled checkout), while
        `lease_owner` holds its lease."""
        restocked = 0
        if restock:
            # a driver that lost the lease (stalled past it) must not give back units the order's new
            # driver may have committed and is about to sell: checked (and renewed) right before
            await self.check_lease(order.id, lease_owner)
            # gives back committed units, or fences a commit still in flight: idempotent by order id
            restocked = await self._inventory.restock(order.id, reason=error.reason.lower())
            self._failpoints.hit("after_restock")
        product_ids = list(getattr(error, "product_ids", []))
        changes: dict[str, object] = {
            "failure_reason": error.reason if target == OrderStatus.FAILED else None,
            "failure_message": error.message if target == OrderStatus.FAILED else None,
            "failure_product_ids": product_ids or None,
        }
        if payment_status is not None:
            changes["payment_status"] = payment_status.value
        if decline_code is not None:
            changes["decline_code"] = decline_code
        async with transaction(self._pool) as conn:
            await cart_store.lock_cart(conn, order.user_id)
            row = await store.move(
                conn,
                order.id,
                expected=[OrderStatus.PENDING],
                target=target,
                changes=changes,
                lease_owner=lease_owner,
            )
            if row is None:
                raise Superseded()
            reservations = [r["reservation_id"] for r in await store.reservations_of(conn, order.id)]
            if row["stock_committed_at"] is not None or restocked:
                # the cart's reservations were sold to this order and are now restocked: not held.
                # `restocked` covers a crash between inventory's commit and recording it here:
                # the cart then kept counting reservations inventory had committed (fault suite)
                await cart_store.lapse_reservations(conn, reservations)
            await store.drop_reservations(conn, order.id)
            ended = _with_lines(store.order_from_row(row, []), order)
            outcome = convert.encode_error(error)
            await store.set_outcome(conn, order.id, outcome)
            await events.status_changed(
                conn,
                topic=self._topic,
                order=ended,
                from_status=OrderStatus.PENDING,
                reason=order.cancel_reason if target == OrderStatus.CANCELLED else "",
            )
        await self._cache.invalidate(order.user_id)
        if target == OrderStatus.FAILED:  # a cancelled checkout is the user's choice, not a failure
            metrics.orders_total.labels("failed").inc()
        log_event(log, "order_failed", order_id=str(order.id), reason=error.reason, status=target.value)
        return outcome

    # --- reads ------------------------------------------------------------------------------------

    async def load(self, order_id: uuid.UUID) -> Order:
        async with connection(self._pool) as conn:
            found = await store.get_order(conn, order_id)
        if found is None:
            raise RuntimeError(f"order {order_id} vanished")
        return found[1]

    async def final_outcome(self, order_id: uuid.UUID) -> bytes:
        """The stored outcome of an order another actor finished."""
        async with connection(self._pool) as conn:
            found = await store.get_order(conn, order_id)
        if found is None or found[0]["checkout_outcome"] is None:
            raise Aborted("the order is being changed by another request; retry", reason="ABORTED")
        return bytes(found[0]["checkout_outcome"])

    async def _reservations(self, order_id: uuid.UUID) -> list[dict]:
        async with connection(self._pool) as conn:
            return await store.reservations_of(conn, order_id)


def _units_of(order: Order) -> dict[int, int]:
    """The order's units per product."""
    units: dict[int, int] = defaultdict(int)
    for line in order.lines:
        units[line.product_id] += line.quantity
    return dict(units)


def _covers(order: Order, reservations: list[dict]) -> bool:
    """The reservations, as recorded here, hold exactly the order's units, line by line."""
    held: dict[int, int] = defaultdict(int)
    for r in reservations:
        held[r["product_id"]] += r["quantity"]
    return bool(reservations) and held == _units_of(order)


def _with_lines(order: Order, source: Order) -> Order:
    return dataclasses.replace(order, lines=source.lines)
