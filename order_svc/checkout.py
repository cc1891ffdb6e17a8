"""Checkout: exactly once per (user, idempotency key), across crashes, retries and a lost Valkey.

Layer 1 (Valkey, meshkit.idempotency): a completed key replays its stored response; a key being
processed answers ABORTED / IDEMPOTENCY_KEY_IN_PROGRESS; otherwise this request takes a ~30 s
"processing" lease, renewed while it works.

Layer 2 (PostgreSQL, the truth): `orders` is UNIQUE on (user_id, idempotency_key), and the row holds
the request hash, the final outcome (the exact response bytes) and a lease of its own
(lease_owner, lease_until). Whoever inserts the row or takes its expired lease drives the order;
everyone else gets the stored outcome or IN_PROGRESS. So even with Valkey flushed or down, two
requests with one key never create two orders or drive one order at once.

Step 1 runs under the user's cart row lock: re-check the key, read the cart, price the lines from
the catalog, insert the PENDING order with its lines, tie the cart's reservations to it (a
reservation can belong to one open order only), and write order.created to the outbox. Steps 2-4
are in saga.py. Errors before an order exists (empty cart, unknown products, catalog down) store no
outcome: nothing changed, so the key stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from psycopg_pool import AsyncConnectionPool

from meshkit import metrics as mesh_metrics
from meshkit.db import connection, transaction
from meshkit.errors import Aborted, DomainError
from meshkit.idempotency import IdempotencyStore, KeyInProgress, KeyReused, Lease, Replay
from meshkit.logs import log_event
from order_svc import cart_store, events, metrics, store
from order_svc.audit import record_checkout_replay
from order_svc.config import OrderSettings
from order_svc.failpoints import Failpoints
from order_svc.model import CartEmpty, CheckoutInput, order_total, price_lines
from order_svc.peers import CatalogClient
from order_svc.saga import OrderSaga

log = logging.getLogger("order_svc.checkout")


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
        try:
            async with lease.keep_alive():
                outcome, replayed = await self._run(request, request_hash, owner)
        except BaseException:
            await lease.release()  # nothing final was stored: a retry may start at once
            raise
        await lease.complete(outcome, request_hash)
        return outcome, replayed

    async def _run(self, request: CheckoutInput, request_hash: str, owner: uuid.UUID) -> tuple[bytes, bool]:
        async with connection(self._pool) as conn:
            existing = await store.find_by_key(conn, request.user_id, request.idempotency_key)
        if existing is None:
            order_id = await self._create(request, owner)
            if order_id is not None:
                self._failpoints.hit("after_order_created")
                return await self._drive(order_id, request.payment_token, owner), False
            async with connection(self._pool) as conn:
                existing = await store.find_by_key(conn, request.user_id, request.idempotency_key)
            assert existing is not None
        return await self._resume(existing, request, request_hash, owner)

    async def _resume(
        self, existing: dict, request: CheckoutInput, request_hash: str, owner: uuid.UUID
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
        return await self._drive(existing["id"], request.payment_token, owner), False

    async def _create(self, request: CheckoutInput, owner: uuid.UUID) -> uuid.UUID | None:
        """Step 1. None when the key turned out to have an order already (found under the lock)."""
        order_id = uuid.uuid4()
        async with transaction(self._pool) as conn:
            await cart_store.lock_cart(conn, request.user_id)
            if await store.find_by_key(conn, request.user_id, request.idempotency_key) is not None:
                return None
            cart = await cart_store.load_cart(conn, request.user_id)
            if not cart.lines:
                raise CartEmpty()
            products = await self._catalog.products([line.product_id for line in cart.lines])
            lines = price_lines(((line.product_id, line.quantity) for line in cart.lines), products)
            total = order_total(lines)
            inserted = await store.insert_order(
                conn,
                order_id=order_id,
                request=request,
                lines=lines,
                total=total,
                provider=self._saga.payments.name,
                lease_owner=owner,
                lease_seconds=self._lease_seconds,
            )
            if not inserted:
                return None
            held = [
                (r.reservation_id, line.product_id, r.quantity)
                for line in cart.lines
                for r in line.reservations
                if r.active
            ]
            if not await store.claim_reservations(conn, order_id, held):
                raise Aborted(
                    "another checkout of this cart is in progress; retry later",
                    reason="ABORTED",
                    metadata={"idempotency_key": request.idempotency_key},
                )
            await events.order_created(
                conn,
                topic=self._settings.topic_order_events,
                order_id=order_id,
                user_id=request.user_id,
                lines=lines,
                total=total,
            )
        log_event(
            log,
            "order_created",
            order_id=str(order_id),
            total=str(total),
            lines=len(lines),
            client_request_id=request.request_id,
        )
        return order_id

    async def _drive(self, order_id: uuid.UUID, payment_token: str, owner: uuid.UUID) -> bytes:
        try:
            async with self._renewing(order_id, owner):
                return await self._saga.advance(order_id, payment_token=payment_token)
        except BaseException:
            # the order stays PENDING at its first undone step; let the next attempt resume at once
            with contextlib.suppress(DomainError):
                async with connection(self._pool) as conn:
                    await store.clear_lease(conn, order_id, owner)
            raise

    @contextlib.asynccontextmanager
    async def _renewing(self, order_id: uuid.UUID, owner: uuid.UUID) -> AsyncIterator[None]:
        """Keep the database lease while the saga runs (the Valkey one renews itself)."""

        stop = asyncio.Event()

        async def renew() -> None:
            # the flag ends the loop even if a driver turns our cancellation into an error it raises
            # (which the suppress below would swallow, renewing forever)
            while not stop.is_set():
                await asyncio.sleep(self._lease_seconds / 3)
                if stop.is_set():
                    return
                with contextlib.suppress(DomainError):
                    async with connection(self._pool) as conn:
                        await store.renew_lease(conn, order_id, owner, self._lease_seconds)

        task = asyncio.create_task(renew(), name=f"order-lease:{order_id}")
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
