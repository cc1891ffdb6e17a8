"""Page tokens are opaque to clients, so any string may come back: a crafted one is INVALID_ARGUMENT
naming page_token, never an INTERNAL from the decoder."""

from __future__ import annotations

import base64
import json

import pytest

from catalog_svc.model import decode_page_token as decode_catalog_token
from meshkit.errors import InvalidArgument
from order_svc.lifecycle import decode_page_token as decode_order_token


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HOSTILE = [
    '{"c":0,"t":"2024-01-01T00:00:00+00:00","i":Infinity}',
    '{"c":-Infinity,"t":"2024-01-01T00:00:00+00:00","i":1}',
    '{"c":NaN,"t":"2024-01-01T00:00:00+00:00","i":1}',
    '{"c":"2024-01-01T00:00:00+00:00","i":123}',
    '{"c":"2024-01-01T00:00:00+00:00","i":["x"]}',
    '{"c":{},"t":[],"i":null}',
    "[1, 2, 3]",
    '"just a string"',
    "1e999",
    "[" * 5000,  # json.loads raised RecursionError, an INTERNAL
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_crafted_catalog_page_token_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_catalog_token(_token(text), category_id=0)
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("text", HOSTILE)
def test_a_crafted_order_page_token_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_order_token(_token(text))
    assert caught.value.field == "page_token"


def test_the_tokens_the_services_issue_still_decode() -> None:
    good = {"c": "2024-01-01T00:00:00+00:00", "i": "5f0c6a8e-6f7e-4d9e-9a51-6a3f2a1c2b3d"}
    when, order_id = decode_order_token(_token(json.dumps(good)))
    assert (when.year, str(order_id)) == (2024, good["i"])
    cursor = decode_catalog_token(_token('{"c":3,"t":"2024-01-01T00:00:00+00:00","i":7}'), category_id=3)
    assert (cursor.category_id, cursor.product_id) == (3, 7)
