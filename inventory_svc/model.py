"""Inventory domain: types, validation rules and typed errors. Imports neither grpc nor SQL.

Allocation order (documented contract of ReserveStock): warehouses are filled greedily by ascending
`priority`, then id, each giving as much as it has available, so a line splits across warehouses
only when the first cannot fill it. A request is all-or-nothing: either every unit is reserved or
none is and the caller gets INSUFFICIENT_STOCK with the available quantity. The rule runs inside
the database (inventory.reserve_batch_v2) so no row lock is held across a network round trip.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid

from meshkit.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_QUANTITY_PER_REQUEST = 10_000
MAX_ADJUST_DELTA = 1_000_000
MAX_PRODUCT_UNITS = 2**31 - 1  # a product's units over all warehouses (int32 in ProductStock and events)
MIN_TTL = dt.timedelta(seconds=1)
MAX_TTL = dt.timedelta(hours=24)
MAX_OWNER_LENGTH = 255
MAX_BATCH_PRODUCT_IDS = 1000


class ReservationStatus(enum.StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class Movement(enum.StrEnum):
    RECEIVE = "receive"
    ADJUST = "adjust"
    RESERVE = "reserve"
    RELEASE = "release"
    EXPIRE = "expire"
    COMMIT = "commit"
    RESTOCK = "restock"


class InsufficientStock(FailedPrecondition):
    reason = "INSUFFICIENT_STOCK"

    def __init__(self, product_id: int, requested: int, available: int) -> None:
        super().__init__(
            f"product {product_id}: requested {requested}, available {available}",
            metadata={"product_id": product_id, "requested": requested, "available": available},
        )
        self.product_id = product_id
        self.requested = requested
        self.available = available


class ReservationNotActive(FailedPrecondition):
    reason = "RESERVATION_EXPIRED"

    def __init__(self, reservation_ids: list[str], status: str = "not active") -> None:
        super().__init__(
            f"reservations {', '.join(reservation_ids)} are {status}",
            metadata={"reservation_ids": ",".join(reservation_ids)},
        )
        self.reservation_ids = reservation_ids


class StockBelowReserved(FailedPrecondition):
    reason = "STOCK_BELOW_RESERVED"


class UnknownProduct(NotFound):
    reason = "PRODUCT_NOT_FOUND"

    def __init__(self, product_id: int) -> None:
        super().__init__(
            f"product_id: no stock known for product {product_id}", metadata={"product_id": product_id}
        )


class UnknownWarehouse(NotFound):
    reason = "WAREHOUSE_NOT_FOUND"

    def __init__(self, warehouse_id: int) -> None:
        super().__init__(
            f"warehouse_id: unknown warehouse {warehouse_id}", metadata={"warehouse_id": warehouse_id}
        )


@dataclasses.dataclass(frozen=True)
class ReserveRequest:
    owner: str
    product_id: int
    quantity: int
    ttl: dt.timedelta
    request_id: str = ""


@dataclasses.dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    owner: str
    product_id: int
    warehouse_id: int
    quantity: int
    status: ReservationStatus
    expires_at: dt.datetime
    order_id: str = ""


@dataclasses.dataclass(frozen=True)
class WarehouseStock:
    warehouse_id: int
    quantity: int
    reserved: int

    @property
    def available(self) -> int:
        return self.quantity - self.reserved


@dataclasses.dataclass(frozen=True)
class ProductStock:
    product_id: int
    warehouses: tuple[WarehouseStock, ...]

    @property
    def available(self) -> int:
        return sum(w.available for w in self.warehouses)


def validate_product_id(product_id: int, field: str = "product_id") -> int:
    if product_id <= 0:
        raise InvalidArgument(field, "must be a positive id")
    return product_id


def validate_quantity(quantity: int, field: str = "quantity") -> int:
    if quantity <= 0:
        raise InvalidArgument(field, "must be greater than zero")
    if quantity > MAX_QUANTITY_PER_REQUEST:
        raise InvalidArgument(field, f"must be at most {MAX_QUANTITY_PER_REQUEST}")
    return quantity


def validate_ttl(ttl: dt.timedelta | None, default: dt.timedelta, field: str = "ttl") -> dt.timedelta:
    if ttl is None:  # unset field: the default; an explicit zero is out of bounds like any other
        return default
    if ttl < MIN_TTL or ttl > MAX_TTL:
        raise InvalidArgument(
            field, f"must be between {int(MIN_TTL.total_seconds())}s and {int(MAX_TTL.total_seconds())}s"
        )
    return ttl


def validate_owner(owner: str, field: str = "owner") -> str:
    owner = owner.strip()
    if not owner:
        raise InvalidArgument(field, "is required")
    if len(owner) > MAX_OWNER_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_OWNER_LENGTH} characters")
    return owner


def parse_reservation_id(value: str, field: str = "reservation_id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(field, "must be a UUID") from None


def validate_order_id(order_id: str, field: str = "order_id") -> str:
    order_id = order_id.strip()
    if not order_id:
        raise InvalidArgument(field, "is required")
    if len(order_id) > 64:
        raise InvalidArgument(field, "must be at most 64 characters")
    return order_id


def validate_adjust_delta(delta: int, field: str = "delta") -> int:
    if delta == 0:
        raise InvalidArgument(field, "must not be zero")
    if abs(delta) > MAX_ADJUST_DELTA:
        raise InvalidArgument(field, f"must be within ±{MAX_ADJUST_DELTA}")
    return delta
