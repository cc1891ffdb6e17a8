"""The public REST surface and the route options, read from the generated descriptors.

The expected routes are the gateway issue's public contract: a change here is a breaking change for
clients and must be deliberate.
"""

import importlib
import pkgutil
from pathlib import Path

import pytest
import shop
from google.api import annotations_pb2
from google.protobuf import descriptor
from shop.api.v1 import options_pb2
from shop.common.v1 import errors_pb2

PROTOS = Path(__file__).resolve().parents[2] / "protos"

ANON, USER, ADMIN = options_pb2.ACCESS_ANONYMOUS, options_pb2.ACCESS_USER, options_pb2.ACCESS_ADMIN

# (HTTP method, path) -> (RPC, access, success status)
PUBLIC_ROUTES = {
    ("GET", "/v1/products/{product_id}"): ("shop.catalog.v1.CatalogService.GetProduct", ANON, 200),
    ("GET", "/v1/products"): ("shop.catalog.v1.CatalogService.ListProducts", ANON, 200),
    ("GET", "/v1/products:search"): ("shop.catalog.v1.CatalogService.SearchProducts", ANON, 200),
    ("GET", "/v1/products/{product_id}:alsoBought"): (
        "shop.catalog.v1.CatalogService.GetAlsoBought",
        ANON,
        200,
    ),
    ("GET", "/v1/categories"): ("shop.catalog.v1.CatalogService.ListCategories", ANON, 200),
    ("GET", "/v1/products/{product_id}/stock"): ("shop.inventory.v1.InventoryService.GetStock", ANON, 200),
    ("POST", "/v1/products"): ("shop.catalog.v1.CatalogService.CreateProduct", ADMIN, 201),
    ("PATCH", "/v1/products/{product_id}"): ("shop.catalog.v1.CatalogService.UpdateProduct", ADMIN, 200),
    ("DELETE", "/v1/products/{product_id}"): ("shop.catalog.v1.CatalogService.DeleteProduct", ADMIN, 200),
    ("POST", "/v1/products/{product_id}/stock:adjust"): (
        "shop.inventory.v1.InventoryService.AdjustStock",
        ADMIN,
        200,
    ),
    ("GET", "/v1/cart"): ("shop.order.v1.CartService.GetCart", USER, 200),
    ("DELETE", "/v1/cart"): ("shop.order.v1.CartService.ClearCart", USER, 200),
    ("POST", "/v1/cart/items"): ("shop.order.v1.CartService.AddCartItem", USER, 200),
    ("PATCH", "/v1/cart/items/{product_id}"): ("shop.order.v1.CartService.UpdateCartItem", USER, 200),
    ("DELETE", "/v1/cart/items/{product_id}"): ("shop.order.v1.CartService.RemoveCartItem", USER, 200),
    ("POST", "/v1/orders"): ("shop.order.v1.OrderService.Checkout", USER, 201),
    ("GET", "/v1/orders"): ("shop.order.v1.OrderService.ListOrders", USER, 200),
    ("GET", "/v1/orders/{order_id}"): ("shop.order.v1.OrderService.GetOrder", USER, 200),
    ("POST", "/v1/orders/{order_id}:cancel"): ("shop.order.v1.OrderService.CancelOrder", USER, 200),
    ("POST", "/v1/orders/{order_id}:ship"): ("shop.order.v1.OrderService.ShipOrder", ADMIN, 200),
    ("POST", "/v1/orders/{order_id}:deliver"): ("shop.order.v1.OrderService.DeliverOrder", ADMIN, 200),
    ("POST", "/v1/orders/{order_id}:refund"): ("shop.order.v1.OrderService.RefundOrder", ADMIN, 200),
    ("GET", "/v1/audit"): ("shop.audit.v1.AuditService.ListAuditRecords", ADMIN, 200),
}

# Fields the public contract names for bodies and query strings: they must exist on the request.
CONTRACT_FIELDS = {
    "shop.catalog.v1.CatalogService.ListProducts": {"category_id", "page_size", "page_token"},
    "shop.catalog.v1.CatalogService.SearchProducts": {
        "q",
        "category_path",
        "min_price",
        "max_price",
        "brands",
        "min_rating",
        "in_stock",
        "page",
    },
    "shop.catalog.v1.CatalogService.UpdateProduct": {"product", "update_mask"},
    "shop.inventory.v1.InventoryService.AdjustStock": {"warehouse_id", "delta"},
    "shop.order.v1.CartService.AddCartItem": {"product_id", "quantity"},
    "shop.order.v1.CartService.UpdateCartItem": {"quantity"},
    "shop.order.v1.OrderService.Checkout": {"shipping_address", "billing_address", "payment_token"},
    "shop.order.v1.OrderService.ShipOrder": {"tracking_number"},
    "shop.audit.v1.AuditService.ListAuditRecords": {"resource", "actor", "page_size", "page_token"},
}

# Reasons other code (gateway error table, services) relies on by name.
REQUIRED_REASONS = {
    "INSUFFICIENT_STOCK",
    "IDEMPOTENCY_KEY_IN_PROGRESS",
    "IDEMPOTENCY_KEY_REUSED",
    "IDEMPOTENCY_KEY_MISSING",
    "INVALID_ORDER_TRANSITION",
    "RESERVATION_EXPIRED",
    "PAYMENT_DECLINED",
    "CART_EMPTY",
    # meshkit's internal-token interceptor
    "MISSING_CREDENTIALS",
    "INVALID_CREDENTIALS",
    "ADMIN_REQUIRED",
    # meshkit.errors defaults (the gRPC code name)
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "ABORTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
}

HTTP_VERBS = ("get", "put", "post", "delete", "patch")


def _shop_files() -> list[descriptor.FileDescriptor]:
    files = []
    for info in pkgutil.walk_packages(shop.__path__, prefix="shop."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    return files


def _methods() -> list[descriptor.MethodDescriptor]:
    return [m for f in _shop_files() for s in f.services_by_name.values() for m in s.methods]


def _rules(method: descriptor.MethodDescriptor) -> list[tuple[str, str, str]]:
    """(HTTP method, path, body) for the method's google.api.http rule and its additional bindings."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    top = options.Extensions[annotations_pb2.http]
    rules = []
    for rule in [top, *top.additional_bindings]:
        kind = rule.WhichOneof("pattern")
        if kind == "custom":
            rules.append((rule.custom.kind.upper(), rule.custom.path, rule.body))
        else:
            rules.append((kind.upper(), getattr(rule, kind), rule.body))
    return rules


def _enums(files: list[descriptor.FileDescriptor]) -> list[descriptor.EnumDescriptor]:
    def nested(message: descriptor.Descriptor) -> list[descriptor.EnumDescriptor]:
        found = list(message.enum_types)
        for inner in message.nested_types:
            found += nested(inner)
        return found

    enums = []
    for f in files:
        enums += f.enum_types_by_name.values()
        for message in f.message_types_by_name.values():
            enums += nested(message)
    return enums


def test_every_proto_is_generated() -> None:
    generated = {f.name for f in _shop_files()}
    sources = {str(p.relative_to(PROTOS)) for p in (PROTOS / "shop").rglob("*.proto")}
    assert generated == sources


def test_http_rules_are_exactly_the_public_routes() -> None:
    routes = {}
    for method in _methods():
        for verb, path, _ in _rules(method):
            assert (verb, path) not in routes, f"{verb} {path} bound twice"
            routes[(verb, path)] = method.full_name
    assert set(routes) == set(PUBLIC_ROUTES)
    assert routes == {route: expected[0] for route, expected in PUBLIC_ROUTES.items()}


@pytest.mark.parametrize("route", sorted(PUBLIC_ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_options(route: tuple[str, str]) -> None:
    rpc, access, status = PUBLIC_ROUTES[route]
    method = next(m for m in _methods() if m.full_name == rpc)
    options = method.GetOptions()
    assert options.Extensions[options_pb2.access] == access
    assert options.Extensions[options_pb2.success_status] == status
    assert options.Extensions[options_pb2.rate_limit_class], f"{rpc} has no rate_limit_class"


def test_every_annotated_rpc_sets_access() -> None:
    for method in _methods():
        if _rules(method):
            assert method.GetOptions().Extensions[options_pb2.access] != options_pb2.ACCESS_UNSPECIFIED, (
                f"{method.full_name} has an http rule but no (shop.api.v1.access)"
            )


def test_unannotated_rpcs_set_no_route_options() -> None:
    for method in _methods():
        if not _rules(method):
            options = method.GetOptions()
            for ext in (options_pb2.access, options_pb2.rate_limit_class, options_pb2.success_status):
                assert not options.HasExtension(ext), f"internal {method.full_name} sets {ext.name}"


def test_path_variables_and_bodies_name_request_fields() -> None:
    for method in _methods():
        fields = method.input_type.fields_by_name
        for verb, path, body in _rules(method):
            for segment in path.split("/"):
                if segment.startswith("{"):
                    assert segment[1 : segment.index("}")] in fields, f"{verb} {path}"
            assert body in ("", "*") or body in fields, f"{verb} {path} body {body!r}"
            if verb in ("GET", "DELETE"):
                assert body == "", f"{verb} {path} has a body"


def test_contract_fields_exist() -> None:
    by_name = {m.full_name: m for m in _methods()}
    for rpc, names in CONTRACT_FIELDS.items():
        missing = names - set(by_name[rpc].input_type.fields_by_name)
        assert not missing, f"{rpc} lacks {missing}"


def test_checkout_binds_idempotency_key_header() -> None:
    method = next(m for m in _methods() if m.full_name == "shop.order.v1.OrderService.Checkout")
    bindings = method.GetOptions().Extensions[options_pb2.header_bindings]
    assert [(b.header, b.field) for b in bindings] == [("Idempotency-Key", "idempotency_key")]
    assert "idempotency_key" in method.input_type.fields_by_name
    others = [m.full_name for m in _methods() if m.GetOptions().Extensions[options_pb2.header_bindings]]
    assert others == [method.full_name]


def test_enum_zero_values_are_unspecified() -> None:
    enums = _enums(_shop_files())
    assert len(enums) >= 8
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), f"{enum.full_name} zero value is {zero.name}"


def test_error_reasons_named_by_the_services_exist() -> None:
    names = {v.name.removeprefix("ERROR_REASON_") for v in errors_pb2.ErrorReason.DESCRIPTOR.values}
    assert REQUIRED_REASONS <= names
