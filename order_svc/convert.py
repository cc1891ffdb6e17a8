"""proto <-> model translation for order_svc, and the stored checkout outcome codec.

The checkout outcome is a serialized google.rpc.Status: code OK with the CheckoutResponse packed in
its details, or the error's code, message and ErrorInfo. The same bytes are stored in PostgreSQL and
Valkey and replayed, so a retried checkout gets exactly the original answer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from shop.common.v1 import address_pb2, errors_pb2, money_pb2
from shop.order.v1 import cart_pb2, order_pb2

from meshkit.errors import ERROR_DOMAIN, DomainError
from order_svc.model import (
    CURRENCY,
    Address,
    Cart,
    CartLine,
    Order,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    ProductInfo,
    to_cents,
)


def money(amount: Decimal) -> money_pb2.Money:
    amount = to_cents(amount)
    units = int(amount)
    nanos = int((amount - units) * 10**9)
    return money_pb2.Money(currency_code=CURRENCY, units=units, nanos=nanos)


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def address_in(message: address_pb2.Address | None) -> Address | None:
    if message is None:
        return None
    return Address(
        name=message.name,
        line1=message.line1,
        line2=message.line2,
        city=message.city,
        region=message.region,
        postal_code=message.postal_code,
        country_code=message.country_code,
    )


def address_out(address: Address) -> address_pb2.Address:
    return address_pb2.Address(
        name=address.name,
        line1=address.line1,
        line2=address.line2,
        city=address.city,
        region=address.region,
        postal_code=address.postal_code,
        country_code=address.country_code,
    )


def order_status(status: OrderStatus) -> int:
    return order_pb2.OrderStatus.Value(status.wire_name)


def order_line_out(line: OrderLine) -> order_pb2.OrderLine:
    return order_pb2.OrderLine(
        product_id=line.product_id,
        title=line.title,
        unit_price=money(line.unit_price),
        quantity=line.quantity,
        line_total=money(line.line_total),
    )


def order_out(order: Order) -> order_pb2.Order:
    message = order_pb2.Order(
        id=str(order.id),
        user_id=order.user_id,
        status=order_status(order.status),
        lines=[order_line_out(line) for line in order.lines],
        total=money(order.total),
        notes=order.notes,
        payment=order_pb2.PaymentInfo(
            status=order_pb2.PaymentStatus.Value(
                f"PAYMENT_STATUS_{PaymentStatus(order.payment_status).name}"
            ),
            provider=order.payment_provider,
            provider_reference=order.payment_reference,
            amount=money(order.total),
            decline_code=order.decline_code,
        ),
        tracking_number=order.tracking_number,
        create_time=timestamp(order.created_at),
        update_time=timestamp(order.updated_at),
    )
    if order.shipping is not None:
        message.shipping_address.CopyFrom(address_out(order.shipping))
    elif order.shipping_anonymized:
        message.shipping_address.CopyFrom(address_pb2.Address(name="anonymized"))
    if order.billing is not None:
        message.billing_address.CopyFrom(address_out(order.billing))
    if order.failure is not None:
        reason = f"ERROR_REASON_{order.failure.reason}"
        message.failure.CopyFrom(
            order_pb2.OrderFailure(
                reason=errors_pb2.ErrorReason.Value(reason) if reason in errors_pb2.ErrorReason.keys() else 0,
                message=order.failure.message,
                product_ids=list(order.failure.product_ids),
            )
        )
    return message


def cart_out(cart: Cart, products: dict[int, ProductInfo], now: dt.datetime) -> cart_pb2.Cart:
    subtotal = Decimal("0")
    items = []
    for line in cart.lines:
        item = cart_line_out(line, products.get(line.product_id), now)
        info = products.get(line.product_id)
        if info is not None:
            subtotal += info.price * line.quantity
        items.append(item)
    message = cart_pb2.Cart(user_id=cart.user_id, items=items, subtotal=money(subtotal))
    if cart.updated_at is not None:
        message.update_time.CopyFrom(timestamp(cart.updated_at))
    return message


def cart_line_out(line: CartLine, info: ProductInfo | None, now: dt.datetime) -> cart_pb2.CartItem:
    state = cart_pb2.RESERVATION_STATE_EXPIRED if line.is_expired(now) else cart_pb2.RESERVATION_STATE_ACTIVE
    item = cart_pb2.CartItem(
        product_id=line.product_id,
        quantity=line.quantity,
        reservation_state=state,
        add_time=timestamp(line.added_at),
    )
    expires = line.expires_at
    if expires is not None:
        item.expires_at.CopyFrom(timestamp(expires))
    if info is not None:
        item.title = info.title
        item.unit_price.CopyFrom(money(info.price))
    return item


def refresh_cart_states(cart: cart_pb2.Cart, now: dt.datetime) -> cart_pb2.Cart:
    """Read-time expiry check on a cached cart: a line past its expires_at shows as EXPIRED."""
    now_ts = timestamp(now)
    for item in cart.items:
        if item.reservation_state == cart_pb2.RESERVATION_STATE_ACTIVE and (
            not item.HasField("expires_at") or item.expires_at.ToNanoseconds() <= now_ts.ToNanoseconds()
        ):
            item.reservation_state = cart_pb2.RESERVATION_STATE_EXPIRED
    return cart


# --- checkout outcome codec -----------------------------------------------------------------------


def encode_success(order: Order) -> bytes:
    packed = any_pb2.Any()
    packed.Pack(order_pb2.CheckoutResponse(order=order_out(order)))
    return status_pb2.Status(code=code_pb2.OK, details=[packed]).SerializeToString(deterministic=True)


def encode_error(error: DomainError) -> bytes:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[packed])
    return status.SerializeToString(deterministic=True)


class ReplayedError(DomainError):
    """An error outcome read back from the idempotency record."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.code = code


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def decode_outcome(raw: bytes) -> order_pb2.CheckoutResponse:
    """The stored response, or raise the stored error."""
    status = status_pb2.Status.FromString(raw)
    if status.code == code_pb2.OK:
        response = order_pb2.CheckoutResponse()
        status.details[0].Unpack(response)
        return response
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    raise ReplayedError(
        _CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message, info.reason, dict(info.metadata)
    )


def outcome_order_id(raw: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(decode_outcome(raw).order.id)
    except DomainError as error:
        value = error.metadata.get("order_id")
        return uuid.UUID(value) if value else None
