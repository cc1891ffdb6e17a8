"""Order and cart domain: types, the order state machine, validation and pricing rules, typed errors.

Imports neither grpc nor SQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from meshkit.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable

CURRENCY = "USD"
CENT = Decimal("0.01")
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_NOTES_LENGTH = 1000
MAX_REASON_LENGTH = 500
MAX_TRACKING_LENGTH = 100
MAX_ADDRESS_FIELD_LENGTH = 200
MAX_PAYMENT_TOKEN_LENGTH = 255
MAX_ORDER_TOTAL = Decimal("9999999999.99")  # orders.total NUMERIC(12,2)
DEFAULT_PAYMENT_TOKEN = "tok_approve"
# A fixed namespace for deterministic request ids sent to inventory (uuid5), so retries dedupe.
REQUEST_NAMESPACE = uuid.UUID("6f1c8f2e-4b7a-4d55-9a3e-2c1d0b9e8a71")


class OrderStatus(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    FAILED = "failed"

    @property
    def wire_name(self) -> str:
        return f"ORDER_STATUS_{self.name}"


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    CAPTURED = "captured"
    DECLINED = "declined"
    FAILED = "failed"
    REFUNDED = "refunded"


# The order state machine (see docs/ARCHITECTURE.md, "Checkout state machine").
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED, OrderStatus.REFUNDED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED, OrderStatus.REFUNDED}),
    OrderStatus.DELIVERED: frozenset({OrderStatus.REFUNDED}),
}
# terminal states; FAILED too (the seed lists the first three): a declined or abandoned checkout holds
# the same addresses and notes, and was kept in the live table, unanonymized, for ever
ARCHIVABLE = (OrderStatus.DELIVERED, OrderStatus.CANCELLED, OrderStatus.REFUNDED, OrderStatus.FAILED)


# --- errors ---------------------------------------------------------------------------------------


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_ORDER_TRANSITION"

    def __init__(
        self, order_id: uuid.UUID, current: OrderStatus, target: OrderStatus, *, archived: bool = False
    ) -> None:
        why = " (it is archived: its record is final)" if archived else ""
        super().__init__(
            f"order {order_id} cannot go from {current.value} to {target.value}{why}",
            metadata={"order_id": order_id, "from_status": current.wire_name, "to_status": target.wire_name},
        )


class OrderNotFound(NotFound):
    reason = "ORDER_NOT_FOUND"

    def __init__(self, order_id: object) -> None:
        super().__init__(f"order {order_id} not found", metadata={"order_id": order_id})


class CartEmpty(FailedPrecondition):
    reason = "CART_EMPTY"

    def __init__(self) -> None:
        super().__init__("the cart is empty")


class CartItemNotFound(NotFound):
    reason = "CART_ITEM_NOT_FOUND"

    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} is not in the cart", metadata={"product_id": product_id})


class CheckoutInProgress(Aborted):
    """A cart change would release units an unfinished checkout of this cart has claimed, or reserve
    more of a product it is selling."""

    reason = "CHECKOUT_IN_PROGRESS"

    def __init__(self, product_id: int) -> None:
        super().__init__(
            f"a checkout of this cart holds product {product_id}; retry when it has finished",
            metadata={"product_id": product_id},
        )


class ProductNotFound(NotFound):
    reason = "PRODUCT_NOT_FOUND"

    def __init__(self, product_ids: Sequence[int]) -> None:
        ids = ",".join(str(p) for p in product_ids)
        super().__init__(f"unknown products: {ids}", metadata={"product_id": ids})
        self.product_ids = list(product_ids)


class ProductInactive(FailedPrecondition):
    reason = "PRODUCT_INACTIVE"

    def __init__(self, product_ids: Sequence[int]) -> None:
        ids = ",".join(str(p) for p in product_ids)
        super().__init__(f"products no longer sold: {ids}", metadata={"product_id": ids})
        self.product_ids = list(product_ids)


class OrderOutOfStock(FailedPrecondition):
    """Checkout could not hold every line: names the lines (product ids) at fault."""

    reason = "INSUFFICIENT_STOCK"

    def __init__(self, order_id: uuid.UUID, product_ids: Sequence[int], detail: str) -> None:
        ids = ",".join(str(p) for p in product_ids)
        super().__init__(
            f"not enough stock for products {ids}: {detail}",
            metadata={"order_id": order_id, "product_id": ids, "product_ids": ids},
        )
        self.product_ids = list(product_ids)


class PaymentDeclined(FailedPrecondition):
    reason = "PAYMENT_DECLINED"

    def __init__(self, order_id: uuid.UUID, decline_code: str) -> None:
        super().__init__(
            f"payment declined ({decline_code})",
            metadata={"order_id": order_id, "decline_code": decline_code},
        )


class PaymentUnavailable(Unavailable):
    reason = "PAYMENT_UNAVAILABLE"

    def __init__(self, order_id: uuid.UUID, detail: str) -> None:
        super().__init__(
            f"payment provider did not answer ({detail}); retry with the same idempotency key",
            metadata={"order_id": order_id},
        )


class CheckoutAbandoned(FailedPrecondition):
    reason = "CHECKOUT_ABANDONED"

    def __init__(self, order_id: uuid.UUID, status: OrderStatus) -> None:
        super().__init__(
            f"checkout of order {order_id} was interrupted and compensated (order {status.value});"
            " nothing was charged",
            metadata={"order_id": order_id, "status": status.wire_name},
        )


class DependencyUnavailable(Unavailable):
    reason = "DEPENDENCY_UNAVAILABLE"

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}", metadata={"dependency": dependency})


class IdempotencyKeyMissing(InvalidArgument):
    reason = "IDEMPOTENCY_KEY_MISSING"

    def __init__(self) -> None:
        super().__init__("idempotency_key", "required (Idempotency-Key header)")


# --- money ----------------------------------------------------------------------------------------


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# --- addresses and checkout input -----------------------------------------------------------------

ADDRESS_FIELDS = ("name", "line1", "line2", "city", "region", "postal_code", "country_code")
REQUIRED_ADDRESS_FIELDS = ("name", "line1", "city", "postal_code", "country_code")
_ADDRESS_JSON = {"postal_code": "postalCode", "country_code": "countryCode"}


@dataclasses.dataclass(frozen=True)
class Address:
    name: str = ""
    line1: str = ""
    line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country_code: str = ""

    def to_json(self) -> dict[str, str]:
        """proto3 JSON form (lowerCamelCase, empty fields left out), as stored in JSONB."""
        return {_ADDRESS_JSON.get(f, f): getattr(self, f) for f in ADDRESS_FIELDS if getattr(self, f)}

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> Address | None:
        if not data or data.get("anonymized"):
            return None
        return cls(**{f: str(data.get(_ADDRESS_JSON.get(f, f), "")) for f in ADDRESS_FIELDS})


def validate_address(address: Address | None, field: str, *, required: bool) -> Address | None:
    if address is None or address == Address():
        if required:
            raise InvalidArgument(field, "required")
        return None
    for name in ADDRESS_FIELDS:
        value = getattr(address, name)
        if name in REQUIRED_ADDRESS_FIELDS and not value.strip():
            raise InvalidArgument(f"{field}.{name}", "required")
        if len(value) > MAX_ADDRESS_FIELD_LENGTH:
            raise InvalidArgument(f"{field}.{name}", f"at most {MAX_ADDRESS_FIELD_LENGTH} characters")
    if len(address.country_code) != 2 or not address.country_code.isalpha():
        raise InvalidArgument(f"{field}.country_code", "an ISO 3166-1 alpha-2 code such as US")
    return address


@dataclasses.dataclass(frozen=True)
class CheckoutInput:
    user_id: str
    idempotency_key: str
    shipping: Address
    billing: Address | None
    payment_token: str
    notes: str
    request_id: str = ""  # client correlation id: logged, not part of the hash

    def request_hash(self) -> str:
        """Hash of the body the key is bound to (request_id takes no part, as the contract says)."""
        body = {
            "shipping": self.shipping.to_json(),
            "billing": self.billing.to_json() if self.billing else None,
            "payment_token": self.payment_token,
            "notes": self.notes,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def validate_checkout(
    *,
    user_id: str,
    idempotency_key: str,
    shipping: Address | None,
    billing: Address | None,
    payment_token: str,
    notes: str,
    request_id: str = "",
) -> CheckoutInput:
    if not idempotency_key:
        raise IdempotencyKeyMissing()
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidArgument("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if not idempotency_key.isprintable():
        raise InvalidArgument("idempotency_key", "must be printable characters")
    shipping_ok = validate_address(shipping, "shipping_address", required=True)
    assert shipping_ok is not None
    billing_ok = validate_address(billing, "billing_address", required=False)
    if len(payment_token) > MAX_PAYMENT_TOKEN_LENGTH:
        raise InvalidArgument("payment_token", f"at most {MAX_PAYMENT_TOKEN_LENGTH} characters")
    if len(notes) > MAX_NOTES_LENGTH:
        raise InvalidArgument("notes", f"at most {MAX_NOTES_LENGTH} characters")
    if len(request_id) > 128:
        raise InvalidArgument("request_id", "at most 128 characters")
    return CheckoutInput(
        user_id=user_id,
        idempotency_key=idempotency_key,
        shipping=shipping_ok,
        billing=billing_ok,
        payment_token=payment_token or DEFAULT_PAYMENT_TOKEN,
        notes=notes,
        request_id=request_id,
    )


def validate_product_id(product_id: int) -> int:
    if product_id <= 0:
        raise InvalidArgument("product_id", "must be a positive id")
    return product_id


def validate_quantity(quantity: int, maximum: int, field: str = "quantity") -> int:
    if quantity <= 0:
        raise InvalidArgument(field, "must be at least 1")
    if quantity > maximum:
        raise InvalidArgument(field, f"must be at most {maximum}")
    return quantity


def validate_text(value: str, field: str, maximum: int, *, required: bool = False) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "required")
    if len(value) > maximum:
        raise InvalidArgument(field, f"at most {maximum} characters")
    return value


def parse_order_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument("order_id", "must be a UUID") from None


def check_transition(order_id: uuid.UUID, current: OrderStatus, target: OrderStatus) -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        raise InvalidTransition(order_id, current, target)


def derived_request_id(*parts: object) -> str:
    """A deterministic UUID for an inventory call, so a retried step reuses the same request id."""
    return str(uuid.uuid5(REQUEST_NAMESPACE, ":".join(str(p) for p in parts)))


# --- catalog pricing ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProductInfo:
    product_id: int
    title: str
    price: Decimal
    is_active: bool


@dataclasses.dataclass(frozen=True)
class OrderLine:
    product_id: int
    title: str
    unit_price: Decimal
    quantity: int

    @property
    def line_total(self) -> Decimal:
        return to_cents(self.unit_price * self.quantity)


def price_lines(wanted: Iterable[tuple[int, int]], products: Mapping[int, ProductInfo]) -> list[OrderLine]:
    """Order lines priced from the catalog; names every unknown or inactive product at once."""
    wanted = list(wanted)
    unknown = [pid for pid, _ in wanted if pid not in products]
    if unknown:
        raise ProductNotFound(unknown)
    inactive = [pid for pid, _ in wanted if not products[pid].is_active]
    if inactive:
        raise ProductInactive(inactive)
    return [
        OrderLine(
            product_id=pid, title=products[pid].title, unit_price=to_cents(products[pid].price), quantity=qty
        )
        for pid, qty in wanted
    ]


def order_total(lines: Iterable[OrderLine]) -> Decimal:
    """The lines' sum; FAILED_PRECONDITION over what an order holds (a price can be $99,999,999.99
    and a cart 100 lines of 100 units, so a cart can add up to more: an INTERNAL before)."""
    total = to_cents(sum((line.line_total for line in lines), Decimal("0")))
    if total > MAX_ORDER_TOTAL:
        raise FailedPrecondition(
            f"the cart's total {total} is more than one order can hold ({MAX_ORDER_TOTAL}); "
            "check out fewer items at a time",
            metadata={"total": total, "max_total": MAX_ORDER_TOTAL},
        )
    return total


# --- orders ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    product_ids: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Order:
    id: uuid.UUID
    user_id: str
    status: OrderStatus
    lines: tuple[OrderLine, ...]
    total: Decimal
    shipping: Address | None
    shipping_anonymized: bool
    billing: Address | None
    notes: str
    payment_status: PaymentStatus
    payment_provider: str
    payment_reference: str
    decline_code: str
    tracking_number: str
    failure: Failure | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    stock_committed: bool = False
    payment_attempted: bool = False
    transition_to: OrderStatus | None = None
    transition_restock: bool = True  # whether the recorded cancel/refund puts the units back
    transition_reason: str = ""  # the reason given for it
    # a cancel of this PENDING order was asked for (and its reason): whoever drives it ends it CANCELLED
    cancel_requested: bool = False
    cancel_reason: str = ""
    archived: bool = False


# --- cart -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CartReservation:
    reservation_id: uuid.UUID
    quantity: int
    expires_at: dt.datetime
    active: bool


@dataclasses.dataclass(frozen=True)
class CartLine:
    product_id: int
    quantity: int
    added_at: dt.datetime
    reservations: tuple[CartReservation, ...]

    @property
    def held(self) -> int:
        return sum(r.quantity for r in self.reservations if r.active)

    @property
    def expires_at(self) -> dt.datetime | None:
        """The earliest expiry of the line's live reservations (None when nothing is held)."""
        live = [r.expires_at for r in self.reservations if r.active]
        return min(live) if live else None

    def is_expired(self, now: dt.datetime) -> bool:
        """Expired unless every unit is held by a live reservation that has not passed its expiry."""
        expires = self.expires_at
        return self.held < self.quantity or expires is None or expires <= now


@dataclasses.dataclass(frozen=True)
class Cart:
    user_id: str
    lines: tuple[CartLine, ...]
    updated_at: dt.datetime | None
    version: int = 0


def plan_release(reservations: Sequence[CartReservation], amount: int) -> list[tuple[uuid.UUID, int, bool]]:
    """Which live reservations give back `amount` units: newest first. (id, units, releases whole)."""
    plan: list[tuple[uuid.UUID, int, bool]] = []
    left = amount
    for reservation in reversed([r for r in reservations if r.active]):
        if left <= 0:
            break
        take = min(left, reservation.quantity)
        plan.append((reservation.reservation_id, take, take == reservation.quantity))
        left -= take
    return plan
