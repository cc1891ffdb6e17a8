"""Path templates: exact matching, custom verbs, percent-encoding, bad templates refused."""

from __future__ import annotations

import pytest

from gateway.pathtemplate import PathValueError, TemplateError, parse_template


def test_variable_and_literal_segments() -> None:
    template = parse_template("/v1/products/{product_id}/stock")
    assert template.match("/v1/products/42/stock") == {"product_id": "42"}
    assert template.match("/v1/products/42") is None
    assert template.match("/v1/products/42/stock/") is None
    assert template.match("/v1/products//stock") is None


def test_custom_verb_after_variable_is_not_swallowed_by_the_variable() -> None:
    get = parse_template("/v1/products/{product_id}")
    also = parse_template("/v1/products/{product_id}:alsoBought")
    assert get.match("/v1/products/7:alsoBought") is None
    assert also.match("/v1/products/7:alsoBought") == {"product_id": "7"}
    assert also.match("/v1/products/7") is None
    assert also.match("/v1/products/7:alsoSold") is None


def test_custom_verb_after_literal() -> None:
    search = parse_template("/v1/products:search")
    assert search.verb == "search"
    assert search.match("/v1/products:search") == {}
    assert search.match("/v1/products") is None
    assert parse_template("/v1/products").match("/v1/products:search") is None


def test_values_are_percent_decoded_and_encoded_separators_stay_inside_one_segment() -> None:
    template = parse_template("/v1/orders/{order_id}")
    assert template.match("/v1/orders/a%2Fb%3Ac") == {"order_id": "a/b:c"}
    assert template.match("/v1/orders/a/b") is None


def test_nested_field_paths_and_bindings() -> None:
    template = parse_template("/v1/{book.name=shelves/*/books/*}:read")
    assert template.variables == ("book.name",)
    assert template.match("/v1/shelves/1/books/2:read") == {"book.name": "shelves/1/books/2"}
    assert template.match("/v1/shelves/1:read") is None
    assert template.openapi_path == "/v1/{book.name}:read"


def test_double_wildcard_spans_segments() -> None:
    template = parse_template("/v1/files/{path=**}")
    assert template.match("/v1/files/a/b/c") == {"path": "a/b/c"}


@pytest.mark.parametrize(
    "bad", ["v1/products", "/v1/{bad-name}", "/v1/x{id}", "/v1/{id}/{id}", "/v1/products:bad verb"]
)
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def test_a_path_variable_that_is_not_utf8_is_refused_not_replaced() -> None:
    """unquote's default put U+FFFD in the order id, and the service answered 404 for it."""
    template = parse_template("/v1/orders/{order_id}")
    assert template.match("/v1/orders/%C3%A9") == {"order_id": "é"}
    with pytest.raises(PathValueError) as caught:
        template.match("/v1/orders/%FF")
    assert caught.value.variable == "order_id"
