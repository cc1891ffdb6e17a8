"""Pure rules of order_svc: state machine, validation, pricing, request hash, cart line expiry, outcome codec."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from meshkit.errors import DomainError, InvalidArgument
from order_svc import archive_store, convert
from order_svc.failpoints import Failpoints
from order_svc.model import (
    ARCHIVABLE,
    Address,
    CartLine,
    CartReservation,
    IdempotencyKeyMissing,
    InvalidTransition,
    Order,
    OrderStatus,
    PaymentDeclined,
    PaymentStatus,
    ProductInactive,
    ProductInfo,
    ProductNotFound,
    check_transition,
    derived_request_id,
    order_total,
    plan_release,
    price_lines,
    validate_checkout,
    validate_quantity,
)

HOME = Address(name="Ada", line1="1 Road", city="London", postal_code="N1", country_code="GB")
NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def _checkout(**overrides):
    fields = dict(user_id="u1", idempotency_key="k1", shipping=HOME, billing=None, payment_token="", notes="")
    fields.update(overrides)
    return validate_checkout(**fields)


@pytest.mark.parametrize(
    ("current", "allowed"),
    [
        (OrderStatus.PENDING, {OrderStatus.PAID, OrderStatus.FAILED, OrderStatus.CANCELLED}),
        (OrderStatus.PAID, {OrderStatus.SHIPPED, OrderStatus.CANCELLED, OrderStatus.REFUNDED}),
        (OrderStatus.SHIPPED, {OrderStatus.DELIVERED, OrderStatus.REFUNDED}),
        (OrderStatus.DELIVERED, {OrderStatus.REFUNDED}),
        (OrderStatus.FAILED, set()),
        (OrderStatus.CANCELLED, set()),
        (OrderStatus.REFUNDED, set()),
    ],
)
def test_state_machine(current, allowed):
    for target in OrderStatus:
        if target in allowed:
            check_transition(uuid.uuid4(), current, target)
        else:
            with pytest.raises(InvalidTransition) as caught:
                check_transition(uuid.uuid4(), current, target)
            assert caught.value.reason == "INVALID_ORDER_TRANSITION"
            assert caught.value.metadata["from_status"] == current.wire_name


def test_checkout_validation_rejects_bad_keys_addresses_and_notes():
    with pytest.raises(IdempotencyKeyMissing):
        _checkout(idempotency_key="")
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        _checkout(idempotency_key="k" * 256)
    assert _checkout(idempotency_key="k" * 255).idempotency_key == "k" * 255
    with pytest.raises(InvalidArgument, match="shipping_address: required"):
        _checkout(shipping=None)
    for missing in ("name", "line1", "city", "postal_code", "country_code"):
        with pytest.raises(InvalidArgument, match=rf"shipping_address\.{missing}"):
            _checkout(shipping=Address(**{**HOME.__dict__, missing: " "}))
    with pytest.raises(InvalidArgument, match=r"billing_address\.city"):
        _checkout(billing=Address(name="B", line1="x", postal_code="1", country_code="US"))
    with pytest.raises(InvalidArgument, match="country_code"):
        _checkout(shipping=Address(**{**HOME.__dict__, "country_code": "GBR"}))
    with pytest.raises(InvalidArgument, match="notes"):
        _checkout(notes="n" * 1001)
    assert _checkout().payment_token == "tok_approve"


def test_request_hash_covers_the_body_but_not_the_correlation_id():
    base = _checkout()
    assert base.request_hash() == _checkout().request_hash()
    assert base.request_hash() != _checkout(notes="x").request_hash()
    assert base.request_hash() != _checkout(payment_token="tok_decline").request_hash()
    assert base.request_hash() != _checkout(billing=HOME).request_hash()
    # an empty token means the sandbox's approving token: the same body
    assert base.request_hash() == _checkout(payment_token="tok_approve").request_hash()


def test_pricing_names_every_unknown_then_every_inactive_product():
    products = {
        1: ProductInfo(1, "A", Decimal("19.99"), True),
        2: ProductInfo(2, "B", Decimal("0.333"), True),
        3: ProductInfo(3, "C", Decimal("5"), False),
    }
    with pytest.raises(ProductNotFound) as unknown:
        price_lines([(1, 1), (8, 1), (9, 2)], products)
    assert unknown.value.product_ids == [8, 9]
    with pytest.raises(ProductInactive) as inactive:
        price_lines([(1, 1), (3, 1)], products)
    assert inactive.value.product_ids == [3]
    lines = price_lines([(1, 3), (2, 3)], products)
    assert [line.unit_price for line in lines] == [Decimal("19.99"), Decimal("0.33")]
    assert order_total(lines) == Decimal("60.96")


def test_a_total_beyond_what_an_order_holds_is_failed_precondition_not_an_overflow():
    dearest = {1: ProductInfo(1, "Yacht", Decimal("99999999.99"), True)}
    fits = price_lines([(1, 100)], dearest)
    assert order_total(fits) == Decimal("9999999999.00")
    with pytest.raises(DomainError) as too_much:
        order_total(price_lines([(1, 100), (1, 1)], dearest))
    assert too_much.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert too_much.value.metadata == {"total": "10099999998.99", "max_total": "9999999999.99"}


def test_quantity_bounds():
    for bad in (0, -1, 101):
        with pytest.raises(InvalidArgument):
            validate_quantity(bad, 100)
    assert validate_quantity(100, 100) == 100


def _reservation(quantity: int, minutes: int, active: bool = True) -> CartReservation:
    return CartReservation(uuid.uuid4(), quantity, NOW + dt.timedelta(minutes=minutes), active)


def test_a_line_is_expired_unless_every_unit_is_held_until_later():
    held = CartLine(1, 3, NOW, (_reservation(2, 10), _reservation(1, 5)))
    assert not held.is_expired(NOW) and held.expires_at == NOW + dt.timedelta(minutes=5)
    assert held.is_expired(NOW + dt.timedelta(minutes=5))
    partly = CartLine(1, 3, NOW, (_reservation(2, 10), _reservation(1, 10, active=False)))
    assert partly.is_expired(NOW)
    assert CartLine(1, 1, NOW, ()).is_expired(NOW)


def test_releases_come_from_the_newest_reservations_first():
    old, new = _reservation(3, 1), _reservation(2, 2)
    gone = _reservation(5, 3, active=False)
    assert plan_release((old, new, gone), 3) == [
        (new.reservation_id, 2, True),
        (old.reservation_id, 1, False),
    ]
    assert plan_release((old, new), 1) == [(new.reservation_id, 1, False)]


def test_derived_request_ids_are_stable_and_distinct():
    assert derived_request_id("u", 3, 7, "add") == derived_request_id("u", 3, 7, "add")
    assert derived_request_id("u", 3, 7, "add") != derived_request_id("u", 4, 7, "add")
    assert len(derived_request_id("x" * 300)) == 36


def _order(**overrides) -> Order:
    fields = dict(
        id=uuid.uuid4(),
        user_id="u1",
        status=OrderStatus.PAID,
        lines=tuple(price_lines([(1, 2)], {1: ProductInfo(1, "A", Decimal("2.50"), True)})),
        total=Decimal("5.00"),
        shipping=HOME,
        shipping_anonymized=False,
        billing=None,
        notes="",
        payment_status=PaymentStatus.CAPTURED,
        payment_provider="sandbox",
        payment_reference="ch_1",
        decline_code="",
        tracking_number="",
        failure=None,
        version=2,
        created_at=NOW,
        updated_at=NOW,
    )
    fields.update(overrides)
    return Order(**fields)


def test_outcome_codec_replays_success_and_errors_exactly():
    order = _order()
    response = convert.decode_outcome(convert.encode_success(order))
    assert response.order.id == str(order.id) and response.order.total.units == 5
    assert convert.outcome_order_id(convert.encode_success(order)) == order.id

    raw = convert.encode_error(PaymentDeclined(order.id, "card_declined"))
    with pytest.raises(DomainError) as caught:
        convert.decode_outcome(raw)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "PAYMENT_DECLINED"
    assert caught.value.metadata == {"order_id": str(order.id), "decline_code": "card_declined"}
    assert convert.outcome_order_id(raw) == order.id


def test_money_keeps_units_and_nanos_signs_equal():
    assert (convert.money(Decimal("19.99")).units, convert.money(Decimal("19.99")).nanos) == (19, 990_000_000)
    negative = convert.money(Decimal("-0.50"))
    assert (negative.units, negative.nanos) == (0, -500_000_000)


def test_unknown_failpoints_are_refused_at_start():
    with pytest.raises(ValueError, match="after_lunch"):
        Failpoints("after_commit, after_lunch")
    Failpoints("after_order_created,after_commit,after_payment,after_restock").hit("not-enabled")


def test_the_archive_query_and_its_partial_index_name_exactly_the_archivable_statuses():
    """The batch query spells the statuses out so PostgreSQL can match the partial index to it (a
    parameter would not); both must say what model.ARCHIVABLE says, or the batch scans the table
    (index predicate differs) or archives the wrong orders."""

    def statuses(sql: str) -> set[str]:
        (listed,) = re.findall(r"status IN \(([^)]*)\)", sql)
        return {s.strip().strip("'") for s in listed.split(",")}

    index_sql = (
        Path(archive_store.__file__).parent / "migrations" / "0009_archive_failed_orders.sql"
    ).read_text()
    wanted = {s.value for s in ARCHIVABLE}
    assert statuses(archive_store.ARCHIVE_BATCH_SQL) == wanted
    assert statuses(index_sql) == wanted
