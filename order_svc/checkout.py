"""Checkout: exactly once per (user, idempotency key), across crashes, retries and a lost Valkey.

Layer 1 (Valkey, meshkit.idempotency): a completed key replays its stored response; a key being
processed answers ABORTED / IDEMPOTENCY_KEY_IN_PROGRESS; otherwise this request takes a ~30 s
"processing" lease, renewed while it works.

Layer 2 (PostgreSQL, the truth): `orders` is UNIQUE on (user_id, idempotency_key), and the row holds
the request hash, the final outcome (the exact response bytes) and a lease of its own
(lease_owner, lease_until). Whoever inserts the row or takes its expired lease drives the order;
everyone else gets the stored outcome or IN_PROGRESS. So even with Valkey flushed or down, two
requests with one key never create two orders or drive one order at once.

Step 1 is one read and one write round trip: read the key's order and the cart in one statement,
price the lines from the catalog (no lock held across that call), then `checkout_create` (a stored
function, migration 0002) takes the user's cart row lock, re-checks the key and that the cart is
still the one priced (else the cart is read again), inserts the PENDING order with its lines, ties
the cart's reservations to it (a reservation can belong to one open order only), and writes
order.created to the outbox. Steps 2-4 are in saga.py. Errors before an order exists (empty cart,
unknown products, catalog down) store no outcome: nothing changed, so the key stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from psycopg_pool import AsyncConnectionPool

from meshkit import metrics as mesh_metrics
from meshkit.db import connection, transaction
from meshkit.errors import Aborted, DomainError
from meshkit.idempotency import IdempotencyStore, KeyInProgress, KeyReused, Lease, Replay, keep_renewing
from meshkit.logs import log_event
from order_svc import events, metrics, store
from order_svc.audit import record_checkout_replay
from order_svc.config import OrderSettings
from order_svc.failpoints import Failpoints
from order_svc.model import (
    Address,
    CartEmpty,
    CheckoutInput,
    Order,
    OrderStatus,
    PaymentStatus,
    order_total,
    price_lines,
)
from order_svc.peers import CatalogClient
from order_svc.saga import OrderSaga

log = logging.getLogger("order_svc.checkout")

# step 1 reads and prices the cart before taking its lock; a cart changed meanwhile is read again
_CART_CHANGED_ATTEMPTS = 3


class CheckoutService:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        idempotency: IdempotencyStore,
        catalog: CatalogClient,
        saga: OrderSaga,
        settings: OrderSettings,
        failpoints: Failpoints,
    ) -> None:
        self._pool = pool
        self._idempotency = idempotency
        self._catalog = catalog
        self._saga = saga
        self._settings = settings
        self._lease_seconds = settings.idempotency_lease_seconds
        self._failpoints = failpoints
        self._running: set[asyncio.Future[tuple[bytes, bool]]] = set()

    async def checkout(self, request: CheckoutInput) -> tuple[bytes, bool]:
        """(the stored outcome: a serialized google.rpc.Status, whether it is a replay).

        Fresh or replayed, the caller's answer is always decoded from these bytes
        (`convert.decode_outcome`), so a retry gets exactly the original response or error."""
        request_hash = request.request_hash()
        claim = await self._idempotency.begin(request.user_id, request.idempotency_key, request_hash)
        if isinstance(claim, Replay):
            metrics.orders_total.labels("duplicate").inc()
            await self._audit_replay(request, "valkey")
            return claim.response, True
        # Shielded: a caller that gives up (deadline, disconnect) must not stop the saga between two
        # steps; the work finishes and stores its outcome, which the caller's retry then replays.
        task = asyncio.ensure_future(self._process(request, request_hash, claim))
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    async def _audit_replay(self, request: CheckoutInput, layer: str) -> None:
        async with transaction(self._pool) as conn:
            await record_checkout_replay(
                conn, user_id=request.user_id, idempotency_key=request.idempotency_key, layer=layer
            )

    def _finished(self, task: asyncio.Future[tuple[bytes, bool]]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here too, for when the caller had already gone away

    async def _process(self, request: CheckoutInput, request_hash: str, lease: Lease) -> tuple[bytes, bool]:
        owner = uuid.UUID(lease.token) if lease.token else uuid.uuid4()
        leases = _Leases(lease, self._pool, self._lease_seconds)
        try:
            async with keep_renewing(leases.renew, self._lease_seconds / 3, name=f"checkout-leases:{owner}"):
                outcome, replayed = await self._run(request, request_hash, owner, leases)
        except BaseException:
            await lease.release()  # nothing final was stored: a retry may start at once
            raise
        await lease.complete(outcome, request_hash)
        return outcome, replayed

    async def _run(
        self, request: CheckoutInput, request_hash: str, owner: uuid.UUID, leases: _Leases
    ) -> tuple[bytes, bool]:
        for _ in range(_CART_CHANGED_ATTEMPTS):
            async with connection(self._pool) as conn:
                snapshot = await store.checkout_snapshot(conn, request.user_id, request.idempotency_key)
            if snapshot["id"] is not None:
                return await self._resume(snapshot, request, request_hash, owner, leases)
            if not snapshot["products"]:
                raise CartEmpty()
            created = await self._create(
                request, request_hash, owner, snapshot["products"], snapshot["quantities"]
            )
            if created is None:
                continue  # the cart changed since it was read, or the key got its order meanwhile
            order, held = created
            self._failpoints.hit("after_order_created")
            drive = self._drive(order.id, request.payment_token, owner, leases, fresh=(order, held))
            return await drive, False
        raise Aborted(
            "the cart kept changing during checkout; retry",
            reason="ABORTED",
            metadata={"idempotency_key": request.idempotency_key},
        )

    async def _resume(
        self, existing: dict, request: CheckoutInput, request_hash: str, owner: uuid.UUID, leases: _Leases
    ) -> tuple[bytes, bool]:
        """The key has an order: replay its outcome, or drive it if its lease is free."""
        if existing["request_hash"] != request_hash:
            raise KeyReused(request.idempotency_key)
        if existing["checkout_outcome"] is not None:
            metrics.orders_total.labels("duplicate").inc()
            mesh_metrics.idempotent_replays_total.labels(self._settings.service_name, "database").inc()
            await self._audit_replay(request, "database")
            return bytes(existing["checkout_outcome"]), True
        async with connection(self._pool) as conn:
            taken = await store.take_lease(conn, existing["id"], owner, self._lease_seconds)
        if not taken:
            raise KeyInProgress(request.idempotency_key)
        log_event(log, "checkout_resumed", order_id=str(existing["id"]), client_request_id=request.request_id)
        return await self._drive(existing["id"], request.payment_token, owner, leases), False

    async def _create(
        self,
        request: CheckoutInput,
        request_hash: str,
        owner: uuid.UUID,
        products: list[int],
        quantities: list[int],
    ) -> tuple[Order, list[dict]] | None:
        """Step 1: price the cart as read, then one round trip (checkout_create) that writes the order
        if, under the cart lock, the key still has none and the cart is still the one priced.

        (the PENDING order, the reservations it took), or None to read the cart again."""
        found = await self._catalog.products(products)
        lines = price_lines(zip(products, quantities, strict=True), found)
        total = order_total(lines)
        order_id = uuid.uuid4()
        event = events.order_created_event(
            topic=self._settings.topic_order_events,
            order_id=order_id,
            user_id=request.user_id,
            lines=lines,
            total=total,
        )
        async with connection(self._pool) as conn:
            row = await store.create_checkout(
                conn,
                order_id=order_id,
                request=request,
                request_hash=request_hash,
                lines=lines,
                total=total,
                provider=self._saga.payments.name,
                lease_owner=owner,
                lease_seconds=self._lease_seconds,
                event=event,
            )
        if row["result"] == "reservations_claimed":
            raise Aborted(
                "another checkout of this cart is in progress; retry later",
                reason="ABORTED",
                metadata={"idempotency_key": request.idempotency_key},
            )
        if row["result"] != "created":
            return None
        created_at = row["order_created_at"]
        order = Order(
            id=order_id,
            user_id=request.user_id,
            status=OrderStatus.PENDING,
            lines=tuple(lines),
            total=total,
            shipping=Address.from_json(request.shipping.to_json()),
            shipping_anonymized=False,
            billing=Address.from_json(request.billing.to_json()) if request.billing else None,
            notes=request.notes,
            payment_status=PaymentStatus.PENDING,
            payment_provider=self._saga.payments.name,
            payment_reference="",
            decline_code="",
            tracking_number="",
            failure=None,
            version=1,
            created_at=created_at,
            updated_at=created_at,
        )
        held = [
            {"reservation_id": r, "product_id": p, "quantity": q}
            for r, p, q in zip(row["res_ids"], row["res_products"], row["res_quantities"], strict=True)
        ]
        log_event(
            log,
            "order_created",
            order_id=str(order_id),
            total=str(total),
            lines=len(lines),
            client_request_id=request.request_id,
        )
        return order, held

    async def _drive(
        self,
        order_id: uuid.UUID,
        payment_token: str,
        owner: uuid.UUID,
        leases: _Leases,
        *,
        fresh: tuple[Order, list[dict]] | None = None,
    ) -> bytes:
        leases.driving = (order_id, owner)  # the order row's lease is renewed while the saga runs
        try:
            return await self._saga.advance(
                order_id, payment_token=payment_token, lease_owner=owner, fresh=fresh
            )
        except BaseException:
            leases.driving = None
            # the order stays PENDING at its first undone step; let the next attempt resume at once
            with contextlib.suppress(DomainError):
                async with connection(self._pool) as conn:
                    await store.clear_lease(conn, order_id, owner)
            raise
        finally:
            leases.driving = None


class _Leases:
    """A checkout's two leases, renewed by one background task (keep_renewing) instead of one task
    each: the Valkey marker for the whole request, the order row's while the request drives an order
    (`driving`: order id, owner). Both are ~30 s, renewed every third of that; almost every checkout
    ends before the first renewal, so what this saves is a task, its stop event and its cancellation
    per checkout."""

    def __init__(self, lease: Lease, pool: AsyncConnectionPool, seconds: float) -> None:
        self._lease = lease
        self._pool = pool
        self._seconds = seconds
        self.driving: tuple[uuid.UUID, uuid.UUID] | None = None

    async def renew(self) -> None:
        await self._lease.renew()  # a no-op for a degraded lease; swallows Valkey errors
        driving = self.driving
        if driving is None:
            return
        with contextlib.suppress(DomainError):
            async with connection(self._pool) as conn:
                await store.renew_lease(conn, driving[0], driving[1], self._seconds)
