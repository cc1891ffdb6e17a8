"""HTTP -> request message transcoding and response JSON, on the real descriptors."""

from __future__ import annotations

import json

import pytest
from shop.catalog.v1 import catalog_pb2
from shop.order.v1 import order_pb2

from gateway.app import load_api_routes
from gateway.errors import GatewayError
from gateway.routes import Route
from gateway.transcode import build_request, response_json

ROUTES = {(route.http_method, route.path.template): route for route in load_api_routes()}


def route(method: str, template: str) -> Route:
    return ROUTES[(method, template)]


def transcode(r: Route, *, path=None, query=(), body=b"", headers=None, max_page_size=100):
    return build_request(
        r,
        path_params=path or {},
        query=list(query),
        body=body,
        headers=headers or {},
        max_page_size=max_page_size,
    )


def test_search_query_parameters_are_typed_and_repeatable() -> None:
    message = transcode(
        route("GET", "/v1/products:search"),
        query=[
            ("q", "running shoes"),
            ("brands", "acme"),
            ("brands", "zenith"),
            ("min_price", "10.5"),
            ("maxPrice", "99"),
            ("in_stock", "true"),
            ("page", "2"),
        ],
    )
    assert message == catalog_pb2.SearchProductsRequest(
        q="running shoes", brands=["acme", "zenith"], min_price=10.5, max_price=99, in_stock=True, page=2
    )
    assert message.HasField("min_price") and not message.HasField("min_rating")


@pytest.mark.parametrize(
    "query",
    [
        [("unknown", "1")],
        [("page", "two")],
        [("in_stock", "maybe")],
        [("page", "1"), ("page", "2")],
        [("min_price", "cheap")],
        # what int() and float() take besides ASCII numbers: were read as 10, 7, 5
        [("page", "1_0")],
        [("page", "\u0667")],
        [("page", "\t7")],
        [("min_price", "1_0")],
        [("min_price", " 5")],
    ],
)
def test_bad_query_parameters_are_400(query) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(route("GET", "/v1/products:search"), query=query)
    assert caught.value.http_status == 400


def test_path_variable_conversion_and_bad_ids() -> None:
    get = route("GET", "/v1/products/{product_id}")
    assert transcode(get, path={"product_id": "9007199254740993"}).product_id == 9007199254740993
    with pytest.raises(GatewayError) as caught:
        transcode(get, path={"product_id": "abc"})
    assert caught.value.http_status == 400
    for loose in ("1_0", "+7", "\u0667", " 7"):  # int() reads them as 10, 7, 7, 7
        with pytest.raises(GatewayError) as caught:
            transcode(get, path={"product_id": loose})
        assert caught.value.http_status == 400, loose
    assert transcode(get, path={"product_id": "-3"}).product_id == -3  # the service says what is wrong


def test_path_variable_cannot_also_come_from_the_query() -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(
            route("GET", "/v1/products/{product_id}"), path={"product_id": "1"}, query=[("product_id", "2")]
        )
    assert caught.value.http_status == 400


def test_body_star_with_path_variable_winning_over_the_body() -> None:
    message = transcode(
        route("POST", "/v1/products/{product_id}/stock:adjust"),
        path={"product_id": "7"},
        body=json.dumps({"productId": "99", "warehouseId": "2", "delta": -3, "reason": "damaged"}).encode(),
    )
    assert (message.product_id, message.warehouse_id, message.delta, message.reason) == (7, 2, -3, "damaged")


def test_body_field_plus_query_for_the_rest() -> None:
    message = transcode(
        route("PATCH", "/v1/products/{product_id}"),
        path={"product_id": "5"},
        query=[("update_mask", "title,price")],
        body=json.dumps(
            {"title": "New", "price": {"currencyCode": "USD", "units": "12", "nanos": 500000000}}
        ).encode(),
    )
    assert message.product_id == 5
    assert message.product.title == "New"
    assert message.product.price.units == 12
    assert list(message.update_mask.paths) == ["title", "price"]


def test_query_cannot_set_the_body_field() -> None:
    with pytest.raises(GatewayError):
        transcode(route("POST", "/v1/products"), query=[("product.title", "x")], body=b"{}")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"nope": 1}', b'{"quantity": "lots"}', b'{"productId": {"a": 1}}'],
)
def test_bad_bodies_are_400(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        transcode(route("POST", "/v1/cart/items"), body=body)
    assert caught.value.http_status == 400


def test_body_on_a_route_without_body_is_400_and_empty_body_is_an_empty_message() -> None:
    with pytest.raises(GatewayError):
        transcode(route("GET", "/v1/cart"), body=b'{"a": 1}')
    assert (
        transcode(route("POST", "/v1/orders/{order_id}:cancel"), path={"order_id": "o-1"}).order_id == "o-1"
    )


def test_body_star_takes_no_query_parameters() -> None:
    with pytest.raises(GatewayError):
        transcode(route("POST", "/v1/cart/items"), query=[("quantity", "1")], body=b'{"productId": "1"}')


def test_a_header_bound_field_comes_from_its_header_only() -> None:
    checkout = route("POST", "/v1/orders")
    body = json.dumps({"paymentToken": "tok_approve"}).encode()
    assert (
        transcode(checkout, body=body, headers={"idempotency-key": "from-header"}).idempotency_key
        == "from-header"
    )
    assert transcode(checkout, body=b"{}").idempotency_key == ""  # order_svc answers 400 for it
    # in the body it would let a client that forgot the header through (the OpenAPI body has no such field)
    for name in ("idempotencyKey", "idempotency_key"):
        keyed = json.dumps({name: "from-body", "paymentToken": "tok_approve"}).encode()
        for headers in ({}, {"idempotency-key": "from-header"}):
            with pytest.raises(GatewayError) as caught:
                transcode(checkout, body=keyed, headers=headers)
            assert caught.value.http_status == 400
            assert caught.value.metadata == {"field": "idempotency_key"}
            assert "Idempotency-Key header" in caught.value.message


def test_page_size_is_capped_and_negative_refused() -> None:
    listing = route("GET", "/v1/products")
    assert transcode(listing, query=[("page_size", "5000")], max_page_size=100).page_size == 100
    assert transcode(listing, query=[("pageSize", "7")]).page_size == 7
    with pytest.raises(GatewayError):
        transcode(listing, query=[("page_size", "-1")])


def test_response_uses_proto3_json_names_and_prints_defaults() -> None:
    reply = order_pb2.GetOrderResponse(order=order_pb2.Order(id="o1", user_id="u1", tracking_number=""))
    data = response_json(route("GET", "/v1/orders/{order_id}"), reply)
    assert data["order"]["id"] == "o1"
    assert data["order"]["userId"] == "u1"
    assert data["order"]["trackingNumber"] == ""
    assert data["order"]["status"] == "ORDER_STATUS_UNSPECIFIED"
    product = catalog_pb2.GetProductResponse(product=catalog_pb2.Product(id=12))
    assert response_json(route("GET", "/v1/products/{product_id}"), product)["product"]["id"] == "12"


RAW_VALUES = [
    "7",
    "0",
    "-0",
    "007",
    "-12",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "9" * 30,
    "9" * 5000,
    "",
    " 7",
    "7 ",
    "+7",
    "1e3",
    "1.0",
    "0x10",
    "٣",
    "abc",
    "ünï/:%",
    "order-1f3a",
    "\u00ff",
    "true",
]


def outcome(r: Route, path: dict, headers: dict):
    try:
        return transcode(r, path=path, headers=headers).SerializeToString(deterministic=True)
    except GatewayError as error:
        return (error.http_status, error.message, error.field)


@pytest.mark.parametrize(
    "r",
    [r for r in ROUTES.values() if r.path.variables or r.header_bindings],
    ids=lambda r: f"{r.http_method} {r.path.template}",
)
def test_path_and_header_values_set_directly_equal_parse_dict(r: Route, monkeypatch) -> None:
    import gateway.transcode as transcode_module

    for raw in RAW_VALUES:
        path = dict.fromkeys(r.path.variables, raw)
        headers = {b.header: raw for b in r.header_bindings}
        fast = outcome(r, path, headers)
        with monkeypatch.context() as patched:
            patched.setattr(transcode_module, "_assign_directly", lambda *args: False)
            assert fast == outcome(r, path, headers), (r.path.template, raw)


def test_plain_ids_and_keys_skip_parse_dict() -> None:
    from gateway.transcode import _assign_directly

    product = route("GET", "/v1/products/{product_id}")
    request = product.request_class()
    assert _assign_directly(request, product.method.input_type, {"product_id": "12"})
    assert request.product_id == 12
    assert not _assign_directly(request, product.method.input_type, {"product_id": "+12"})


@pytest.mark.parametrize(
    ("method", "template", "source", "field", "description"),
    [
        (
            "POST",
            "/v1/cart/items",
            {"body": b'{"productId": "1", "quantity": 2.5}'},
            "quantity",
            "must be a 32-bit integer",
        ),
        (
            "POST",
            "/v1/cart/items",
            {"body": b'{"quantity": 10000000000}'},
            "quantity",
            "must be a 32-bit integer",
        ),
        ("POST", "/v1/cart/items", {"body": b'{"quantity": true}'}, "quantity", "must be a 32-bit integer"),
        (
            "POST",
            "/v1/cart/items",
            {"body": b'{"productId": {"a": 1}}'},
            "product_id",
            "must be a 64-bit integer",
        ),
        (
            "POST",
            "/v1/cart/items",
            {"body": b'{"productId": "1", "qty": 1}'},
            "qty",
            "unknown field; known fields: productId, quantity, requestId",
        ),
        (
            "POST",
            "/v1/products",
            {"body": b'{"price": {"units": "ten"}}'},
            "product.price.units",
            "must be a 64-bit integer",
        ),
        (
            "POST",
            "/v1/products",
            {"body": b'{"attributes": [{"name": "a", "value": "b"}, {"name": 5}]}'},
            "product.attributes[1].name",
            "must be a string (valid Unicode)",
        ),
        (
            "POST",
            "/v1/products",
            {"body": b'{"attributes": [1]}'},
            "product.attributes[0]",
            "must be a JSON object",
        ),
        (
            "POST",
            "/v1/products",
            {"body": b'{"attributes": "a=b"}'},
            "product.attributes",
            "must be a JSON array",
        ),
        (
            "POST",
            "/v1/products",
            {"body": b'{"createTime": "yesterday"}'},
            "product.create_time",
            "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
        ),
        (
            "GET",
            "/v1/products/{product_id}",
            {"path": {"product_id": "abc"}},
            "product_id",
            "must be a 64-bit integer",
        ),
        ("GET", "/v1/products:search", {"query": [("minPrice", "cheap")]}, "min_price", "must be a number"),
        ("GET", "/v1/products:search", {"query": [("page", "two")]}, "page", "must be a 32-bit integer"),
    ],
)
def test_a_value_that_does_not_parse_is_named_with_what_its_field_accepts(
    method, template, source, field, description
) -> None:
    """Not ParseDict's "Failed to parse quantity field: invalid literal for int()...": the field's
    path (proto names, as the services' own violations use) and what it accepts."""
    with pytest.raises(GatewayError) as caught:
        transcode(route(method, template), **source)
    error = caught.value.body()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["message"] == f"{field}: {description}"
    (violations,) = [d["fieldViolations"] for d in error["details"] if "fieldViolations" in d]
    assert violations == [{"field": field, "description": description}]
    assert "int()" not in json.dumps(error) and "Failed to parse" not in json.dumps(error)


def _refusal(r: Route, body: bytes, **source) -> dict:
    with pytest.raises(GatewayError) as caught:
        transcode(r, body=body, **source)
    assert caught.value.http_status == 400
    return caught.value.body()["error"]


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"productId": "1", "quantity": 1, "quantity": 100}', "quantity"),
        (b'{"productId": "1", "productId": "2", "quantity": 1}', "product_id"),
    ],
)
def test_a_key_repeated_in_one_object_is_refused_not_last_one_wins(body: bytes, field: str) -> None:
    """json.loads kept the last copy: a proxy or audit log reading the first saw another request."""
    error = _refusal(route("POST", "/v1/cart/items"), body)
    assert error["message"] == f"{field}: given more than once in one object"


def test_a_repeated_key_in_a_nested_object_is_refused_too() -> None:
    body = b'{"title": "x", "price": {"currencyCode": "USD", "units": "1", "units": "900"}}'
    error = _refusal(route("PATCH", "/v1/products/{product_id}"), body, path={"product_id": "5"})
    assert error["message"] == "product.price.units: given more than once in one object"
    body = b'{"title": "x", "attributes": [{"name": "a", "value": "1"}, {"name": "b", "value": "2", "name": "c"}]}'
    error = _refusal(route("PATCH", "/v1/products/{product_id}"), body, path={"product_id": "5"})
    assert error["message"] == "product.attributes[1].name: given more than once in one object"


@pytest.mark.parametrize("word", [b"NaN", b"Infinity", b"-Infinity"])
def test_bare_nan_and_infinity_are_not_json(word: bytes) -> None:
    error = _refusal(route("POST", "/v1/cart/items"), b'{"productId": "1", "quantity": ' + word + b"}")
    assert error["message"] == "request body is not valid JSON"


@pytest.mark.parametrize("loose", ["1_0", " 7", "7 ", "\t7", "\u0667", "+7", "0x10"])
def test_number_strings_in_a_body_are_plain_ascii_as_in_paths(loose: str) -> None:
    """ParseDict's int() took "1_0" as 10 and U+0667 as 7: a cart line of 10 from a body that said "1_0"."""
    body = json.dumps({"productId": "1", "quantity": loose}).encode()
    error = _refusal(route("POST", "/v1/cart/items"), body)
    assert error["message"] == "quantity: must be a 32-bit integer"
    body = json.dumps({"productId": loose, "quantity": 1}).encode()
    assert (
        _refusal(route("POST", "/v1/cart/items"), body)["message"] == "product_id: must be a 64-bit integer"
    )


def test_loose_number_strings_are_refused_in_nested_messages_and_plain_ones_still_parse() -> None:
    r = route("PATCH", "/v1/products/{product_id}")
    body = json.dumps({"title": "x", "price": {"currencyCode": "USD", "units": "1_2", "nanos": 0}}).encode()
    error = _refusal(r, body, path={"product_id": "5"})
    assert error["message"] == "product.price.units: must be a 64-bit integer"
    body = json.dumps({"title": "x", "price": {"currencyCode": "USD", "units": "-12", "nanos": "5"}}).encode()
    message = transcode(r, path={"product_id": "5"}, body=body)
    assert (message.product.price.units, message.product.price.nanos) == (-12, 5)
    cart = transcode(route("POST", "/v1/cart/items"), body=b'{"productId": "42", "quantity": "3"}')
    assert (cart.product_id, cart.quantity) == (42, 3)


def test_integer_strings_with_a_fraction_or_exponent_naming_a_whole_number_are_read_exactly() -> None:
    """Proto3 JSON allows "1e2" and "10.0" for integers; ParseDict read them through a float, so a
    64-bit id past 2^53 came out as its float neighbour."""
    r = route("POST", "/v1/cart/items")
    cart = transcode(r, body=b'{"productId": "9007199254740993.0", "quantity": "1e2"}')
    assert (cart.product_id, cart.quantity) == (9007199254740993, 100)
    cart = transcode(r, body=b'{"productId": "12.5e1", "quantity": "-0"}')
    assert (cart.product_id, cart.quantity) == (125, 0)
    for loose in ["1.5", "1e100000000", "1e-2", "10.", ".5e1"]:
        body = json.dumps({"productId": "1", "quantity": loose}).encode()
        assert _refusal(r, body)["message"] == "quantity: must be a 32-bit integer", loose


def test_integer_json_numbers_with_a_fraction_or_exponent_are_read_exactly_too() -> None:
    """The same as number strings: json.loads made 9007199254740993.0 a float (…992), another
    product in the cart, silently."""
    r = route("POST", "/v1/cart/items")
    cart = transcode(r, body=b'{"productId": 9007199254740993.0, "quantity": 1e1}')
    assert (cart.product_id, cart.quantity) == (9007199254740993, 10)
    cart = transcode(r, body=b'{"productId": 9.007199254740993e15, "quantity": 1}')
    assert cart.product_id == 9007199254740993
    for loose in [b"1.5", b"1e400", b"1e-2"]:
        error = _refusal(r, b'{"productId": 1, "quantity": ' + loose + b"}")
        assert "quantity" in error["message"], (loose, error)


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"productId": 7, "product_id": 8, "quantity": 1}', "product_id"),
        (b'{"product_id": 7, "quantity": 1, "productId": 8}', "product_id"),
    ],
)
def test_one_field_under_its_json_and_its_proto_name_is_refused(body: bytes, field: str) -> None:
    """The last of the two won silently (product 8 in the cart): the ambiguity a repeated key is
    refused for, a proxy or log reading the other name."""
    error = _refusal(route("POST", "/v1/cart/items"), body)
    assert error["message"].startswith(f"{field}: given more than once"), error


@pytest.mark.parametrize(
    "body",
    [
        b'{"\xed\xa0\x80": 1, "productId": "2", "quantity": 3}',  # a lone surrogate as raw bytes
        b'{"productId": "2", "quantity": 3, "note": "\xff"}',  # not UTF-8 at all
        '{"\\ud800": 1}'.encode("utf-16-le"),  # UTF-16: json.loads guessed it
    ],
)
def test_a_body_that_is_not_utf8_is_a_400_not_a_500(body: bytes) -> None:
    """json.loads of bytes decoded with surrogatepass (and guessed UTF-16/32), so a lone surrogate
    reached the field lookups, which raised SystemError: a 500 on any route with a body."""
    error = _refusal(route("POST", "/v1/cart/items"), body)
    assert error["status"] == "INVALID_ARGUMENT", error


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    cart = transcode(route("POST", "/v1/cart/items"), body=b'\xef\xbb\xbf{"productId": "2", "quantity": 3}')
    assert (cart.product_id, cart.quantity) == (2, 3)
