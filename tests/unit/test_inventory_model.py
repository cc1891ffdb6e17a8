import datetime as dt

import pytest

from inventory_svc.model import parse_reservation_id, validate_owner, validate_quantity, validate_ttl
from meshkit.errors import InvalidArgument


@pytest.mark.parametrize("quantity", [0, -1, 10_001])
def test_quantity_bounds(quantity):
    with pytest.raises(InvalidArgument) as caught:
        validate_quantity(quantity)
    assert caught.value.field == "quantity"


def test_ttl_default_and_bounds():
    default = dt.timedelta(minutes=30)
    assert validate_ttl(None, default) == default
    assert validate_ttl(dt.timedelta(minutes=5), default) == dt.timedelta(minutes=5)
    for bad in (dt.timedelta(milliseconds=10), dt.timedelta(days=2)):
        with pytest.raises(InvalidArgument):
            validate_ttl(bad, default)


def test_owner_and_ids():
    assert validate_owner("  u1 ") == "u1"
    with pytest.raises(InvalidArgument):
        validate_owner(" ")
    with pytest.raises(InvalidArgument):
        parse_reservation_id("nope")
