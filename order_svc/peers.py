"""Calls to inventory_svc and catalog_svc, translated to order_svc's domain types and errors.

A peer's rich error (ErrorInfo reason + metadata) is passed through unchanged, so INSUFFICIENT_STOCK
reaches the cart's caller as inventory sent it; an unreachable peer is DEPENDENCY_UNAVAILABLE.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal

import grpc
from google.protobuf import duration_pb2
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from meshkit.errors import DomainError, error_info_of
from order_svc.model import DependencyUnavailable, ProductInfo

_UNREACHABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
}


class PeerError(DomainError):
    """A peer's domain error, passed through with its code, reason and metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.code = code


def peer_error(exc: grpc.aio.AioRpcError, dependency: str) -> DomainError:
    code = exc.code()
    if code in _UNREACHABLE:
        return DependencyUnavailable(dependency, f"{code.name}: {exc.details() or ''}"[:200])
    info = error_info_of(exc)
    reason = info.reason if info is not None else code.name
    metadata = dict(info.metadata) if info is not None else {}
    return PeerError(code, exc.details() or reason, reason, metadata)


@dataclasses.dataclass(frozen=True)
class Held:
    """An inventory reservation as order_svc sees it."""

    id: uuid.UUID
    product_id: int
    quantity: int
    status: str  # active | committed | released | expired
    expires_at: dt.datetime
    order_id: str


def _held(r: inventory_pb2.Reservation) -> Held:
    return Held(
        id=uuid.UUID(r.id),
        product_id=r.product_id,
        quantity=r.quantity,
        status=inventory_pb2.ReservationStatus.Name(r.status).removeprefix("RESERVATION_STATUS_").lower(),
        expires_at=r.expires_at.ToDatetime(tzinfo=dt.UTC),
        order_id=r.order_id,
    )


@functools.lru_cache(maxsize=32)
def _duration(seconds: float) -> duration_pb2.Duration:
    """The TTLs are a few settings: built once each (a field assignment copies it, never mutated)."""
    d = duration_pb2.Duration()
    d.FromTimedelta(dt.timedelta(seconds=seconds))
    return d


class InventoryClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    async def reserve(
        self, *, owner: str, product_id: int, quantity: int, ttl_seconds: float, request_id: str
    ) -> list[Held]:
        request = inventory_pb2.ReserveStockRequest(
            owner=owner,
            product_id=product_id,
            quantity=quantity,
            ttl=_duration(ttl_seconds),
            request_id=request_id,
        )
        try:
            response = await self._stub.ReserveStock(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc
        return [_held(r) for r in response.reservations]

    async def extend(self, reservation_ids: Sequence[uuid.UUID], *, ttl_seconds: float) -> list[Held]:
        if not reservation_ids:
            return []
        request = inventory_pb2.ExtendReservationsRequest(
            reservation_ids=[str(r) for r in reservation_ids], ttl=_duration(ttl_seconds)
        )
        try:
            response = await self._stub.ExtendReservations(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc
        return [_held(r) for r in response.reservations]

    async def release(self, reservation_id: uuid.UUID, *, quantity: int = 0, request_id: str = "") -> Held:
        request = inventory_pb2.ReleaseReservationRequest(
            reservation_id=str(reservation_id), quantity=quantity, request_id=request_id
        )
        try:
            response = await self._stub.ReleaseReservation(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc
        return _held(response.reservation)

    async def commit(
        self, order_id: uuid.UUID, reservation_ids: Sequence[uuid.UUID], expected_units: Mapping[int, int]
    ) -> None:
        """All or nothing; an error (RESERVATION_EXPIRED, RESERVATION_QUANTITY_MISMATCH when they do
        not hold exactly `expected_units` per product, ORDER_RESTOCKED...) when not committed.
        The reservations in the answer are not converted: no caller needs them."""
        request = inventory_pb2.CommitReservationsRequest(
            order_id=str(order_id),
            reservation_ids=[str(r) for r in reservation_ids],
            expected_units=expected_units,
        )
        try:
            await self._stub.CommitReservations(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc

    async def restock(self, order_id: uuid.UUID, *, reason: str) -> int:
        request = inventory_pb2.RestockOrderRequest(order_id=str(order_id), reason=reason)
        try:
            response = await self._stub.RestockOrder(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc
        return response.quantity_restocked

    async def batch_get(self, reservation_ids: Sequence[uuid.UUID]) -> list[Held]:
        if not reservation_ids:
            return []
        request = inventory_pb2.BatchGetReservationsRequest(reservation_ids=[str(r) for r in reservation_ids])
        try:
            response = await self._stub.BatchGetReservations(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "inventory") from exc
        return [_held(r) for r in response.reservations]


def _price(money: object) -> Decimal:
    units = getattr(money, "units", 0)
    nanos = getattr(money, "nanos", 0)
    return Decimal(units) + Decimal(nanos) / Decimal(10**9)


class CatalogClient:
    """BatchGetProducts. Checkout always asks the catalog (`products`); the cart's existence check and
    display may use answers up to `cache_seconds` old (`recent_products`), which spares the catalog
    a call per cart change. A product withdrawn meanwhile can still be added for that long; checkout
    then refuses it (PRODUCT_INACTIVE), since it prices from a fresh answer."""

    def __init__(
        self, channel: grpc.aio.Channel, *, cache_seconds: float = 10.0, cache_size: int = 10_000
    ) -> None:
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self._cache_seconds = cache_seconds
        self._cache_size = cache_size
        self._recent: dict[int, tuple[float, ProductInfo]] = {}

    async def products(self, product_ids: Sequence[int]) -> dict[int, ProductInfo]:
        """Products found (active or not), by id; unknown ids are simply absent."""
        if not product_ids:
            return {}
        request = catalog_pb2.BatchGetProductsRequest(product_ids=list(dict.fromkeys(product_ids)))
        try:
            response = await self._stub.BatchGetProducts(request)
        except grpc.aio.AioRpcError as exc:
            raise peer_error(exc, "catalog") from exc
        found = {
            p.id: ProductInfo(product_id=p.id, title=p.title, price=_price(p.price), is_active=p.is_active)
            for p in response.products
        }
        if len(self._recent) + len(found) > self._cache_size:
            self._recent.clear()
        now = time.monotonic()
        self._recent.update({pid: (now, info) for pid, info in found.items()})
        return found

    async def recent_products(self, product_ids: Sequence[int]) -> dict[int, ProductInfo]:
        """Like `products`, answering from answers younger than `cache_seconds` when it can."""
        now = time.monotonic()
        known = {
            pid: hit[1]
            for pid in product_ids
            if (hit := self._recent.get(pid)) is not None and now - hit[0] < self._cache_seconds
        }
        missing = [pid for pid in product_ids if pid not in known]
        return {**known, **(await self.products(missing))} if missing else known
