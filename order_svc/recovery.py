"""Recovery of interrupted checkouts and cancels/refunds: completes or compensates each one.

Runs in every order_svc process, but only the holder of a PostgreSQL advisory lock (LeaderLease
"order-recovery") works; `RecoverOrders` (and `shopctl orders recover`) runs the same pass on demand.
Per order it takes the order's database lease first (and renews it while it works), so it never
races a live checkout; and it only considers orders with no step and no lease held for `min_age`, so
a checkout whose lease renewal came late (busy pool, database restart) is not taken from its driver.

A PENDING order idle for `min_age` is decided by what the payment provider knows, after closing the
order's payment key (`void`), so no capture can land after the decision:
  captured  -> finish it: commit the stock if that step had not happened, then PAID (cart cleared);
  declined  -> FAILED / PAYMENT_DECLINED, stock restocked;
  nothing   -> FAILED / CHECKOUT_ABANDONED, stock restocked (the payment token is not stored, so
               recovery cannot charge on the customer's behalf).
A PENDING order whose cancel was recorded (cancel_requested) and interrupted ends CANCELLED
whatever the provider says: a capture is refunded, the stock restocked.
The outcome is stored for the key (and written to Valkey), so a later retry replays it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from psycopg_pool import AsyncConnectionPool

from meshkit.db import transaction
from meshkit.errors import DomainError
from meshkit.idempotency import IdempotencyStore
from meshkit.logs import log_event
from meshkit.outbox import LeaderLease
from order_svc import cart_store, metrics, store
from order_svc.config import OrderSettings
from order_svc.lifecycle import OrderLifecycle
from order_svc.model import OrderStatus, PaymentDeclined, PaymentStatus
from order_svc.saga import OrderSaga, Restocked, Superseded, payment_key

log = logging.getLogger("order_svc.recovery")

BATCH = 100


class RecoveryJob:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        saga: OrderSaga,
        lifecycle: OrderLifecycle,
        idempotency: IdempotencyStore,
        settings: OrderSettings,
    ) -> None:
        self._pool = pool
        self._saga = saga
        self._lifecycle = lifecycle
        self._idempotency = idempotency
        self._settings = settings

    async def run(self) -> None:
        """Forever: while leader, run a pass every `recovery_interval_seconds`."""
        lease = LeaderLease(self._settings.database_url, "order-recovery")
        min_age = dt.timedelta(seconds=self._settings.recovery_min_age_seconds)
        try:
            while True:
                if await lease.still_held() or await lease.acquire():
                    try:
                        await self.recover(min_age=min_age, limit=0)
                    except DomainError as error:  # database or a peer away: next round
                        log.warning("recovery pass failed", extra={"error": error.message[:200]})
                await asyncio.sleep(self._settings.recovery_interval_seconds)
        finally:
            await lease.release()

    async def recover(
        self, *, min_age: dt.timedelta | None, limit: int
    ) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """One pass (min_age None: the configured default). Returns (completed ids, compensated ids)."""
        if min_age is None:
            min_age = dt.timedelta(seconds=self._settings.recovery_min_age_seconds)
        completed: list[uuid.UUID] = []
        compensated: list[uuid.UUID] = []
        seen = 0
        after: tuple[dt.datetime, uuid.UUID] | None = None
        while not limit or seen < limit:
            batch = BATCH if not limit else min(BATCH, limit - seen)
            # paged by (updated_at, id): an order this pass could not finish keeps its updated_at,
            # and re-reading the oldest page let BATCH such orders hide every newer one
            async with transaction(self._pool) as conn:
                rows = await store.unfinished_orders(conn, min_age=min_age, limit=batch, after=after)
            if not rows:
                break
            after = (rows[-1]["updated_at"], rows[-1]["id"])
            for row in rows:
                order_id = row["id"]
                seen += 1
                outcome = await self.recover_order(order_id)
                if outcome == "completed":
                    completed.append(order_id)
                elif outcome in ("compensated", "transition"):
                    compensated.append(order_id)
        async with transaction(self._pool) as conn:
            await cart_store.prune_requests(conn, dt.timedelta(days=1))
            # what this pass could not finish (or had no reason to touch yet): OrdersUnfinishedStuck
            metrics.orders_unfinished_oldest_seconds.set(await store.oldest_unfinished_seconds(conn))
        if completed or compensated:
            log_event(log, "checkout_recovery", completed=len(completed), compensated=len(compensated))
        return completed, compensated

    async def recover_order(self, order_id: uuid.UUID) -> str | None:
        owner = uuid.uuid4()
        async with transaction(self._pool) as conn:
            if not await store.take_lease(conn, order_id, owner, self._settings.idempotency_lease_seconds):
                return None
        try:
            # renewed like a checkout's: a retry of the key waits (IN_PROGRESS) instead of driving the
            # order alongside a recovery that takes longer than one lease (payment or inventory slow)
            async with self._saga.renewing_lease(order_id, owner, name="recovery-lease"):
                outcome = await self._resolve(order_id, owner)
        except Superseded:
            return None
        except DomainError as error:  # a peer or the database is away: the next pass retries
            log.warning(
                "could not recover order", extra={"order_id": str(order_id), "error": error.message[:200]}
            )
            return None
        except Exception:  # a bug must not stop the pass for every other order
            log.exception("recovering an order failed", extra={"order_id": str(order_id)})
            return None
        finally:
            async with transaction(self._pool) as conn:
                await store.clear_lease(conn, order_id, owner, stamp=False)
        if outcome is not None:
            metrics.checkout_recoveries_total.labels(outcome).inc()
        return outcome

    async def _resolve(self, order_id: uuid.UUID, owner: uuid.UUID) -> str | None:
        async with transaction(self._pool) as conn:
            found = await store.get_order(conn, order_id)
        if found is None:
            return None
        row, order = found
        if order.status == OrderStatus.PENDING and order.cancel_requested:
            # a cancel of the checkout recorded, then interrupted: end it cancelled, as asked
            await self._remember(row, await self._saga.cancel_pending(order, lease_owner=owner))
            return "compensated"
        if order.transition_to is not None:
            await self._lifecycle.finish_transition(order)
            return "transition"
        if order.status != OrderStatus.PENDING or row["checkout_outcome"] is not None:
            return None
        charge = await self._saga.payments.void(payment_key(order.id))
        if charge is not None and charge.status == "captured":
            if not order.stock_committed:
                try:
                    shortage = await self._saga.hold_and_commit(order, lease_owner=owner)
                except Restocked:  # a compensation restocked it and died before its final move
                    await self._remember(row, await self._saga.abandon(order, charge, lease_owner=owner))
                    return "compensated"
                if shortage is not None:
                    await self._saga.payments.refund(payment_key(order.id))
                    outcome = await self._saga.fail(
                        order,
                        shortage,
                        restock=True,
                        payment_status=PaymentStatus.REFUNDED,
                        lease_owner=owner,
                    )
                    await self._remember(row, outcome)
                    return "compensated"
                async with transaction(self._pool) as conn:
                    await store.mark_stock_committed(conn, order.id)
            outcome = await self._saga.complete(order, charge, lease_owner=owner)
            await self._remember(row, outcome)
            return "completed"
        if charge is not None and charge.status == "declined":
            error = PaymentDeclined(order.id, charge.decline_code)
            outcome = await self._saga.fail(
                order,
                error,
                restock=True,
                payment_status=PaymentStatus.DECLINED,
                decline_code=charge.decline_code,
                lease_owner=owner,
            )
        else:  # nothing captured (or a cancel's refund already done): nobody can finish it
            outcome = await self._saga.abandon(order, charge, lease_owner=owner)
        await self._remember(row, outcome)
        return "compensated"

    async def _remember(self, row: dict, outcome: bytes) -> None:
        await self._idempotency.remember(row["user_id"], row["idempotency_key"], row["request_hash"], outcome)
