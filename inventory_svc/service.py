"""Inventory use cases: one function per operation, one transaction each (reserve: one statement)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import NumericValueOutOfRange, UniqueViolation
from psycopg_pool import AsyncConnectionPool
from shop.events.v1 import events_pb2

from inventory_svc import metrics, store
from inventory_svc.batcher import KeyedBatcher
from inventory_svc.config import InventorySettings
from inventory_svc.model import (
    MAX_BATCH_PRODUCT_IDS,
    MAX_PRODUCT_UNITS,
    InsufficientStock,
    Movement,
    ProductStock,
    Reservation,
    ReservationNotActive,
    ReservationStatus,
    ReserveRequest,
    StockBelowReserved,
    UnknownProduct,
    UnknownWarehouse,
    WarehouseStock,
    parse_reservation_id,
    validate_adjust_delta,
    validate_order_id,
    validate_owner,
    validate_product_id,
    validate_quantity,
    validate_ttl,
)
from meshkit.audit import audit
from meshkit.context import current_principal
from meshkit.db import connection, transaction
from meshkit.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from meshkit.outbox import add_event, context_headers
from meshkit.tracing import inject_headers

log = logging.getLogger("inventory_svc.service")

STOCK_EVENT = "inventory.stock_level_changed"
EXPIRED_EVENT = "inventory.reservation_expired"
_RESERVE_ATTEMPTS = 2  # the batch, then once more (see _flush_reserve)
_MOVEMENT_ENUM = {
    Movement.RECEIVE: events_pb2.STOCK_MOVEMENT_RECEIVE,
    Movement.ADJUST: events_pb2.STOCK_MOVEMENT_ADJUST,
    Movement.RESERVE: events_pb2.STOCK_MOVEMENT_RESERVE,
    Movement.RELEASE: events_pb2.STOCK_MOVEMENT_RELEASE,
    Movement.EXPIRE: events_pb2.STOCK_MOVEMENT_EXPIRE,
    Movement.COMMIT: events_pb2.STOCK_MOVEMENT_COMMIT,
    Movement.RESTOCK: events_pb2.STOCK_MOVEMENT_RESTOCK,
}


def _actor(default: str = "system") -> str:
    principal = current_principal()
    return principal.subject if principal else default


def _reservation(row: dict[str, Any]) -> Reservation:
    return Reservation(
        id=row["id"],
        owner=row["owner"],
        product_id=row["product_id"],
        warehouse_id=row["warehouse_id"],
        quantity=row["quantity"],
        status=ReservationStatus(row["status"]),
        expires_at=row["expires_at"],
        order_id=row.get("order_id") or "",
    )


class InventoryService:
    def __init__(self, *, pool: AsyncConnectionPool, settings: InventorySettings) -> None:
        self.pool = pool
        self._pool = pool
        self._topic = settings.topic_inventory_events
        self._default_ttl = dt.timedelta(seconds=settings.reservation_ttl_seconds)
        self._batcher: KeyedBatcher[ReserveRequest, list[Reservation]] = KeyedBatcher(
            self._flush_reserve,
            window=settings.reserve_batch_window_ms / 1000.0,
            max_batch=settings.reserve_max_batch,
            isolate=lambda error: not isinstance(error, Unavailable),  # the database, not one request
        )

    # ---- reserve (hot path) -------------------------------------------------------------------
    async def reserve(
        self, *, owner: str, product_id: int, quantity: int, ttl: dt.timedelta | None, request_id: str = ""
    ) -> list[Reservation]:
        request = ReserveRequest(
            owner=validate_owner(owner),
            product_id=validate_product_id(product_id),
            quantity=validate_quantity(quantity),
            ttl=validate_ttl(ttl, self._default_ttl),
            request_id=_validate_request_id(request_id),
        )
        try:
            reservations = await self._batcher.submit(request.product_id, request)
        except InsufficientStock:
            metrics.inventory_reservations_total.labels("insufficient").inc()
            raise
        except Exception:
            metrics.inventory_reservations_total.labels("error").inc()
            raise
        metrics.inventory_reservations_total.labels("success").inc()
        return reservations

    async def _flush_reserve(self, key: Hashable, requests: Sequence[ReserveRequest]) -> list[Any]:
        product_id = int(key)  # type: ignore[call-overload]
        metrics.reserve_batch_size.set(len(requests))
        # each request id goes to the database once: two copies in one batch would both be new to
        # it (neither is committed yet) and reserve twice; a later copy gets the first one's answer
        sent, slot = _first_copies(requests)
        for attempt in range(_RESERVE_ATTEMPTS):
            try:
                async with connection(self._pool) as conn:  # autocommit: one statement, one transaction
                    rows = await store.reserve_batch(
                        conn,
                        product_id=product_id,
                        owners=[r.owner for r in sent],
                        quantities=[r.quantity for r in sent],
                        ttl_seconds=[r.ttl.total_seconds() for r in sent],
                        request_ids=[r.request_id for r in sent],
                        topic=self._topic,
                        headers=inject_headers(),
                    )
                break
            except UniqueViolation:
                # A request id of this batch was committed meanwhile by another transaction (the same
                # id sent for another product, or by another replica): the batch saw it unused, and its
                # insert met the committed row. The whole batch rolled back, so everyone in it would
                # get the error; once more, the batch sees that row and answers that request alone
                # (a replay or REQUEST_ID_REUSED).
                if attempt == _RESERVE_ATTEMPTS - 1:
                    raise
        grouped: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["idx"], []).append(row)
        outcomes = [
            _reserve_outcome(product_id, request, grouped.get(n, [])) for n, request in enumerate(sent, 1)
        ]
        return [
            outcomes[slot[i]] if _same_reserve(sent[slot[i]], request) else _reused(request.request_id)
            for i, request in enumerate(requests)
        ]

    # ---- reservation lifecycle ----------------------------------------------------------------
    async def extend(self, reservation_ids: Sequence[str], ttl: dt.timedelta | None) -> list[Reservation]:
        """Extend the active ones (never shortening). One whose expiry has passed is not revived:
        it is expired here and now, as the sweeper would (its units go back on sale), so the answer
        does not depend on whether the sweeper has reached it yet."""
        ids = _parse_ids(reservation_ids)
        ttl = validate_ttl(ttl, self._default_ttl)
        async with transaction(self._pool) as conn:  # now() is the same for the expiry and the extend
            # reservations by id before any stock row, the order commit_order_v2 and release lock in:
            # two extends naming the same ones in other orders, or an extend and a commit, cannot
            # deadlock (the UPDATE alone locked them in scan order)
            await store.lock_reservations(conn, ids)
            await self._expire_due_in(conn, ids)
            rows = await store.extend_and_get_reservations(conn, ids, ttl.total_seconds())
            # inside the transaction: an unknown id rolls the extends and expiries back (it answered
            # NOT_FOUND after committing them, and a rejected call must change nothing)
            _require_all_found(ids, rows)
        by_id = {row["id"]: row for row in rows}
        return [_reservation(by_id[i]) for i in ids]

    async def expire_due(self, reservation_ids: Sequence[uuid.UUID]) -> int:
        """Expire those of these reservations whose expiry has passed. Returns how many."""
        async with transaction(self._pool) as conn:
            return await self._expire_due_in(conn, reservation_ids)

    async def _expire_due_in(self, conn: AsyncConnection, reservation_ids: Sequence[uuid.UUID]) -> int:
        due = await store.take_expired(conn, len(reservation_ids), reservation_ids=reservation_ids)
        if due:
            await self.apply_expiry(conn, due, actor=_actor())
        return len(due)

    async def apply_expiry(
        self, conn: AsyncConnection, rows: Sequence[dict[str, Any]], *, actor: str
    ) -> None:
        """The rest of expiring reservations that store.take_expired marked (in this transaction):
        ledger rows, the stock they held released, one expiry event each and a stock event per product."""
        totals: dict[tuple[int, int], int] = defaultdict(int)
        for row in rows:
            totals[(row["product_id"], row["warehouse_id"])] += row["quantity"]
        # Ledger rows first: they lock nothing, so the stock rows (hot SKUs that reserve batches
        # wait on) stay unlocked meanwhile. Pipelined: one round trip for the whole batch.
        async with conn.pipeline():
            for row in rows:
                await store.add_ledger(
                    conn,
                    product_id=row["product_id"],
                    warehouse_id=row["warehouse_id"],
                    movement=Movement.EXPIRE,
                    quantity_delta=0,
                    reserved_delta=-row["quantity"],
                    reservation_id=row["id"],
                    actor=actor,
                )
        # From here to the commit the stock rows are locked: a few round trips, not several per row.
        await store.lock_stock(conn, list(totals))
        async with conn.pipeline():
            for (product_id, warehouse_id), quantity in sorted(totals.items()):
                await store.change_stock(
                    conn,
                    product_id=product_id,
                    warehouse_id=warehouse_id,
                    quantity_delta=0,
                    reserved_delta=-quantity,
                )
            by_product: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_product[row["product_id"]].append(row)
            for product_id in sorted(by_product):
                expired = by_product[product_id]
                last = await store.bump_version(conn, product_id, by=len(expired))
                for version, row in enumerate(expired, start=last - len(expired) + 1):
                    await self._emit_expired_event(conn, row, version=version)
                await self._emit_stock_event(conn, product_id, Movement.EXPIRE)
        metrics.cart_abandonments_total.inc(len(rows))

    async def release(self, reservation_id: str, *, quantity: int = 0, request_id: str = "") -> Reservation:
        rid = parse_reservation_id(reservation_id)
        if quantity < 0:
            raise InvalidArgument("quantity", "must not be negative")
        request_id = _validate_request_id(request_id)
        async with transaction(self._pool) as conn:
            rows = await store.lock_reservations(conn, [rid])
            if not rows:
                raise NotFound(f"reservation_id: no reservation {rid}", reason="RESERVATION_NOT_FOUND")
            row = rows[0]
            operation = f"release:{rid}:{quantity}"
            if request_id and not await store.claim_request(conn, request_id, operation):
                await _same_request(conn, request_id, operation)
                return _reservation(row)
            status = ReservationStatus(row["status"])
            if status == ReservationStatus.ACTIVE and await self._expire_due_in(conn, [rid]):
                # past its expiry, the sweeper not there yet: expired here, as commit and extend do,
                # so the answer does not hang on the sweeper's timing (a partial release left it
                # ACTIVE for the next sweep to expire)
                return _reservation((await store.lock_reservations(conn, [rid]))[0])
            if status in (ReservationStatus.RELEASED, ReservationStatus.EXPIRED):
                return _reservation(row)
            if status == ReservationStatus.COMMITTED:
                raise ReservationNotActive([str(rid)], "committed")
            amount = quantity or row["quantity"]
            if amount > row["quantity"]:
                raise InvalidArgument(
                    "quantity", f"exceeds the {row['quantity']} units the reservation holds"
                )
            left = row["quantity"] - amount
            # reservation and ledger first, the stock row (which reserve batches wait on) last
            updated = await store.set_reservation(
                conn,
                rid,
                status=ReservationStatus.RELEASED if left == 0 else ReservationStatus.ACTIVE,
                quantity=left or None,
            )
            async with conn.pipeline():
                await store.add_ledger(
                    conn,
                    product_id=row["product_id"],
                    warehouse_id=row["warehouse_id"],
                    movement=Movement.RELEASE,
                    quantity_delta=0,
                    reserved_delta=-amount,
                    reservation_id=rid,
                    actor=_actor(),
                )
                await store.change_stock(
                    conn,
                    product_id=row["product_id"],
                    warehouse_id=row["warehouse_id"],
                    quantity_delta=0,
                    reserved_delta=-amount,
                )
                await self._emit_stock_event(conn, row["product_id"], Movement.RELEASE, row["warehouse_id"])
        return _reservation(updated)

    async def commit(
        self,
        order_id: str,
        reservation_ids: Sequence[str],
        expected_units: Mapping[int, int] | None = None,
    ) -> tuple[list[Reservation], bool]:
        """Reserved -> sold for an order. Idempotent by order id (a repeat returns the first result).
        `expected_units` (product id -> units; None or empty: no check): the reservations must hold
        exactly these units between them, or nothing is committed (RESERVATION_QUANTITY_MISMATCH).

        One statement (inventory.commit_order_v3; its 0004 original documents the locking): claim
        the order, lock and check the reservations, mark them committed, write ledger rows, lock the
        stock rows in key order and apply the sale, and write one stock event per product."""
        order_id = validate_order_id(order_id)
        ids = _parse_ids(reservation_ids)
        expected = _parse_expected_units(expected_units)
        async with connection(self._pool) as conn:  # autocommit: the one statement is the transaction
            rows = await store.commit_order(
                conn,
                order_id=order_id,
                reservation_ids=ids,
                actor=_actor(),
                topic=self._topic,
                headers=context_headers(),
                expected_units=expected,
            )
        outcome = rows[0]["outcome"] if rows else "already"
        if outcome == "quantity_mismatch":
            held: dict[int, int] = defaultdict(int)
            for r in rows:
                held[r["product_id"]] += r["quantity"]
            raise FailedPrecondition(
                f"the reservations hold {_units_text(held)} where {_units_text(expected or {})} was expected;"
                " nothing was committed",
                reason="RESERVATION_QUANTITY_MISMATCH",
                metadata={"held_units": _units_text(held), "expected_units": _units_text(expected or {})},
            )
        if outcome == "restocked":
            raise DomainError(f"order {order_id} was already restocked", reason="ORDER_RESTOCKED")
        if outcome == "not_found":
            raise _not_found([str(r["id"]) for r in rows])
        if outcome == "not_active":
            refused = [r["id"] for r in rows]
            # some may be active but past their expiry (the sweeper not there yet): expire them now,
            # so the units are free when the caller re-reserves
            try:
                await self.expire_due(refused)
            except Exception:  # best effort: the sweeper expires them anyway; the answer stays the same
                log.warning("expiring lapsed reservations at commit failed", exc_info=True)
            raise ReservationNotActive([str(r) for r in refused])
        if outcome == "already" and {r["id"] for r in rows} != set(ids):
            # a repeat names other reservations: answering "already committed" would tell the caller
            # that units were sold which are still only reserved (or never were the order's)
            raise FailedPrecondition(
                f"order {order_id} was committed with other reservations; a repeat must name the same ones",
                metadata={"order_id": order_id, "committed_reservations": len(rows)},
            )
        return [_reservation(r) for r in rows], outcome == "already"

    async def restock(self, order_id: str, *, reason: str = "") -> tuple[int, bool]:
        """Sold -> back on hand for a cancelled/refunded order. Idempotent by order id.

        One statement (inventory.restock_order_v2). An order never committed is recorded as restocked
        with nothing to restock, so a late commit for it is refused."""
        order_id = validate_order_id(order_id)
        async with connection(self._pool) as conn:  # autocommit: the one statement is the transaction
            try:
                row = await store.restock_order(
                    conn,
                    order_id=order_id,
                    reason=reason,
                    actor=_actor(),
                    topic=self._topic,
                    headers=context_headers(),
                )
            except NumericValueOutOfRange:  # a warehouse row, or a product's total (restock_order_v2)
                raise FailedPrecondition(
                    f"restocking order {order_id} would take a product past {MAX_PRODUCT_UNITS} units;"
                    " lower its stock (AdjustStock) and retry",
                    reason="STOCK_LIMIT_EXCEEDED",
                    metadata={"order_id": order_id},
                ) from None
        return int(row["quantity"]), row["outcome"] == "already"

    # ---- stock --------------------------------------------------------------------------------
    async def change_stock(
        self,
        *,
        product_id: int,
        warehouse_id: int,
        delta: int,
        movement: Movement,
        reason: str = "",
        request_id: str = "",
    ) -> ProductStock:
        """Receive (delta > 0) or adjust physical stock with a conditional update."""
        validate_product_id(product_id)
        if warehouse_id <= 0:
            raise InvalidArgument("warehouse_id", "must be a positive id")
        if movement == Movement.RECEIVE:
            if delta <= 0:
                raise InvalidArgument("quantity", "must be greater than zero")
            validate_adjust_delta(delta, "quantity")
        else:
            validate_adjust_delta(delta, "delta")
        if len(reason) > 200:
            raise InvalidArgument("reason", "must be at most 200 characters")
        request_id = _validate_request_id(request_id)
        async with transaction(self._pool) as conn:
            if not await store.warehouse_exists(conn, warehouse_id):
                raise UnknownWarehouse(warehouse_id)
            operation = f"{movement}:{product_id}:{warehouse_id}:{delta}"
            if request_id and not await store.claim_request(conn, request_id, operation):
                await _same_request(conn, request_id, operation)
                return await self._stock(conn, product_id)
            if delta > 0:
                await store.ensure_product(conn, product_id)
            field = "quantity" if movement == Movement.RECEIVE else "delta"
            try:
                row = await store.change_quantity(
                    conn, product_id=product_id, warehouse_id=warehouse_id, delta=delta
                )
            except NumericValueOutOfRange:  # the warehouse's own INT row, before the total is checked
                raise InvalidArgument(
                    field, f"would take the product past {MAX_PRODUCT_UNITS} units in all warehouses"
                ) from None
            if row is None:
                if not await store.stock_rows(conn, product_id):
                    raise UnknownProduct(product_id)
                raise StockBelowReserved(
                    f"delta: would leave warehouse {warehouse_id} below its reserved units",
                    metadata={"product_id": product_id, "warehouse_id": warehouse_id},
                )
            await store.add_ledger(
                conn,
                product_id=product_id,
                warehouse_id=warehouse_id,
                movement=movement,
                quantity_delta=delta,
                reserved_delta=0,
                reason=reason or None,
                actor=_actor(),
            )
            await audit(
                conn,
                service="inventory_svc",
                action=f"stock.{movement}",
                resource=f"stock/{product_id}",
                changes={
                    "warehouse_id": warehouse_id,
                    "quantity": {"before": row["quantity"] - delta, "after": row["quantity"]},
                    "reason": reason,
                },
            )
            await self._emit_stock_event(
                conn,
                product_id,
                movement,
                warehouse_id,
                changed_field=field if delta > 0 else "",
            )
            return await self._stock(conn, product_id)

    async def get_stock(self, product_id: int) -> ProductStock:
        validate_product_id(product_id)
        async with connection(self._pool) as conn:
            return await self._stock(conn, product_id)

    async def availability(self, product_ids: Sequence[int]) -> list[tuple[int, int]]:
        if not product_ids:  # REQUIRED in the proto
            raise InvalidArgument("product_ids", "at least one id is required")
        if len(product_ids) > MAX_BATCH_PRODUCT_IDS:
            raise InvalidArgument("product_ids", f"at most {MAX_BATCH_PRODUCT_IDS} ids")
        unique = list(dict.fromkeys(validate_product_id(p, "product_ids") for p in product_ids))
        async with connection(self._pool) as conn:
            found = await store.availability(conn, unique)
        return [(p, found.get(p, 0)) for p in unique]

    async def get_reservations(self, reservation_ids: Sequence[str]) -> list[Reservation]:
        ids = _parse_ids(reservation_ids)
        async with connection(self._pool) as conn:
            rows = await store.get_reservations(conn, ids)
        by_id = {row["id"]: row for row in rows}
        return [_reservation(by_id[i]) for i in ids if i in by_id]

    async def warehouses(self) -> list[dict[str, Any]]:
        async with connection(self._pool) as conn:
            return await store.list_warehouses(conn)

    # ---- helpers ------------------------------------------------------------------------------
    async def _stock(self, conn: AsyncConnection, product_id: int) -> ProductStock:
        rows = await store.stock_rows(conn, product_id)
        if not rows:
            raise UnknownProduct(product_id)
        return ProductStock(
            product_id, tuple(WarehouseStock(r["warehouse_id"], r["quantity"], r["reserved"]) for r in rows)
        )

    async def _emit_stock_event(
        self,
        conn: AsyncConnection,
        product_id: int,
        movement: Movement,
        warehouse_id: int = 0,
        *,
        changed_field: str = "",
    ) -> None:
        """`changed_field`: the request field of an increase, named if it takes the product past
        MAX_PRODUCT_UNITS (the totals are read after the version bump, which serializes the
        product's changes, so two concurrent receives cannot both pass)."""
        version = await store.bump_version(conn, product_id)
        totals = await store.product_totals(conn, product_id)
        if changed_field and totals["quantity"] > MAX_PRODUCT_UNITS:
            raise InvalidArgument(
                changed_field, f"would take the product past {MAX_PRODUCT_UNITS} units in all warehouses"
            )
        available = totals["quantity"] - totals["reserved"]
        event = events_pb2.InventoryEvent(
            event_id=str(uuid.uuid4()),
            product_id=product_id,
            version=version,
            stock_level_changed=events_pb2.StockLevelChanged(
                available=available,
                in_stock=available > 0,
                quantity=totals["quantity"],
                reserved=totals["reserved"],
                movement=_MOVEMENT_ENUM[movement],
                warehouse_id=warehouse_id,
            ),
        )
        event.occurred_at.GetCurrentTime()
        await add_event(
            conn,
            topic=self._topic,
            key=str(product_id),
            event_type=STOCK_EVENT,
            payload=event.SerializeToString(),
            event_id=uuid.UUID(event.event_id),
        )

    async def _emit_expired_event(self, conn: AsyncConnection, row: dict[str, Any], *, version: int) -> None:
        """`version`: one the caller already took with `store.bump_version(..., by=n)`."""
        event = events_pb2.InventoryEvent(
            event_id=str(uuid.uuid4()),
            product_id=row["product_id"],
            version=version,
            reservation_expired=events_pb2.ReservationExpired(
                reservation_id=str(row["id"]),
                owner=row["owner"],
                quantity=row["quantity"],
                warehouse_id=row["warehouse_id"],
            ),
        )
        event.occurred_at.GetCurrentTime()
        await add_event(
            conn,
            topic=self._topic,
            key=str(row["product_id"]),
            event_type=EXPIRED_EVENT,
            payload=event.SerializeToString(),
            event_id=uuid.UUID(event.event_id),
        )


def _validate_request_id(request_id: str) -> str:
    request_id = request_id.strip()
    if len(request_id) > 64:
        raise InvalidArgument("request_id", "must be at most 64 characters")
    return request_id


def _parse_ids(values: Sequence[str], field: str = "reservation_ids") -> list[uuid.UUID]:
    if not values:
        raise InvalidArgument(field, "at least one id is required")
    if len(values) > 1000:
        raise InvalidArgument(field, "at most 1000 ids")
    return list(dict.fromkeys(parse_reservation_id(v, field) for v in values))


def _parse_expected_units(values: Mapping[int, int] | None) -> dict[int, int] | None:
    if not values:
        return None
    if len(values) > 1000:
        raise InvalidArgument("expected_units", "at most 1000 products")
    for product_id, units in values.items():
        if product_id <= 0:
            raise InvalidArgument("expected_units", f"product id {product_id} must be positive")
        if units <= 0:
            raise InvalidArgument(
                "expected_units", f"units of product {product_id} must be greater than zero"
            )
    return dict(sorted(values.items()))


def _units_text(units: Mapping[int, int]) -> str:
    """'12:5,40:1': product id and units, by product id."""
    return ",".join(f"{product_id}:{n}" for product_id, n in sorted(units.items()))


def _require_all_found(ids: Sequence[uuid.UUID], rows: Sequence[dict[str, Any]]) -> None:
    found = {row["id"] for row in rows}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise _not_found(missing)


def _not_found(missing: Sequence[str]) -> NotFound:
    return NotFound(
        f"reservation_ids: unknown reservations {', '.join(missing)}",
        reason="RESERVATION_NOT_FOUND",
        metadata={"reservation_ids": ",".join(missing)},
    )


def _first_copies(requests: Sequence[ReserveRequest]) -> tuple[list[ReserveRequest], list[int]]:
    """The requests to send, each request id once, and per request the position in them of the
    one that answers it: its own, or that of the first request with its id."""
    first: dict[str, int] = {}
    sent: list[ReserveRequest] = []
    slot: list[int] = []
    for request in requests:
        if request.request_id and request.request_id in first:
            slot.append(first[request.request_id])
            continue
        if request.request_id:
            first[request.request_id] = len(sent)
        slot.append(len(sent))
        sent.append(request)
    return sent, slot


def _same_reserve(a: ReserveRequest, b: ReserveRequest) -> bool:
    return (a.owner, a.product_id, a.quantity) == (b.owner, b.product_id, b.quantity)


def _reserve_outcome(product_id: int, request: ReserveRequest, mine: list[dict[str, Any]]) -> Any:
    """One request's answer from its reserve_batch_v2 rows: its reservations, or the error instance."""
    if not mine:
        return DomainError("reserve batch returned no outcome")
    outcome = mine[0]["outcome"]
    if outcome == "insufficient":
        return InsufficientStock(product_id, request.quantity, mine[0]["available"])
    if outcome == "unknown_product":
        return UnknownProduct(product_id)
    if outcome == "reused":
        return _reused(request.request_id)
    return [
        Reservation(
            id=row["reservation_id"],
            owner=request.owner,
            product_id=product_id,
            warehouse_id=row["warehouse_id"],
            quantity=row["quantity"],
            status=ReservationStatus(row["status"]),
            expires_at=row["expires_at"],
        )
        for row in mine
    ]


def _reused(request_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        "request_id was already used for a different request",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


async def _same_request(conn: AsyncConnection, request_id: str, operation: str) -> None:
    """A replayed request_id must carry the request it was first used for (AIP-155). Before this
    check a reused id silently did nothing: adjusting product B with the id of an adjustment of A
    answered B's unchanged stock (or NOT_FOUND) as if it had been applied."""
    if await store.applied_operation(conn, request_id) != operation:
        raise _reused(request_id)
