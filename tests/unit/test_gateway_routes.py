"""Every google.api.http rule in the descriptor pool has a route, and no other route exists.

The rules are enumerated independently of the gateway's own discovery: every generated *_pb2 file
under generated/shop is imported by path, and every rule (with its additional bindings) is read.
"""

from __future__ import annotations

import gc
import importlib
from pathlib import Path

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from shop.api.v1 import options_pb2
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from gateway.app import FIXED_PATHS, build_app
from gateway.config import GatewaySettings
from gateway.openapi import build_openapi
from gateway.routes import RouteConfigError, routes_for

GENERATED = Path(__file__).resolve().parents[2] / "generated"


def every_http_rule() -> set[tuple[str, str, str]]:
    rules = set()
    for path in sorted(GENERATED.glob("shop/**/*_pb2.py")):
        module = importlib.import_module(".".join(path.relative_to(GENERATED).with_suffix("").parts))
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(annotations_pb2.http):
                    continue
                rule = options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    kind = binding.WhichOneof("pattern")
                    verb, template = (
                        (binding.custom.kind, binding.custom.path)
                        if kind == "custom"
                        else (kind, getattr(binding, kind))
                    )
                    rules.add((verb.upper(), template, f"/{service.full_name}/{method.name}"))
    return rules


@pytest.fixture(scope="module")
def app():
    return build_app(GatewaySettings(gc_freeze=False))  # the test process's collector stays as it is


def test_start_up_freezes_its_heap_out_of_the_collector() -> None:
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(build_app(GatewaySettings(gc_freeze=True))):
            assert gc.get_freeze_count() > 10_000  # modules, descriptors, routes, converters
    finally:
        gc.unfreeze()
    with TestClient(build_app(GatewaySettings(gc_freeze=False))):
        assert gc.get_freeze_count() == 0


def test_every_http_rule_has_exactly_one_route(app) -> None:
    rules = every_http_rule()
    assert len(rules) >= 22  # the public REST surface of issue 6 (more as services add annotations)
    served = [(r.http_method, r.path.template, r.grpc_path) for r in app.state.api_routes]
    assert len(served) == len(set(served))
    assert set(served) == rules


def test_no_other_routes_exist(app) -> None:
    fixed = {r.path for r in app.routes if isinstance(r, StarletteRoute)}
    mounts = {r.path for r in app.routes if isinstance(r, Mount)}
    assert fixed == {*FIXED_PATHS, "/{path:path}"}  # the last one is the descriptor-driven dispatcher
    assert mounts == {"/docs/static"}
    with TestClient(app) as client:
        for path in [
            "/v1/nothing",
            "/shop.catalog.v1.CatalogService/BatchGetProducts",
            "/v1/products/1/extra",
        ]:
            reply = client.get(path)
            assert reply.status_code == 404, path
            assert reply.json()["error"]["status"] == "NOT_FOUND"
        reply = client.put("/v1/cart")
        assert reply.status_code == 405 and set(reply.headers["allow"].split(", ")) == {
            "GET",
            "HEAD",
            "DELETE",
        }


def test_the_public_paths_of_issue_6_are_served(app) -> None:
    served = {(r.http_method, r.path.template) for r in app.state.api_routes}
    expected = {
        ("GET", "/v1/products/{product_id}"),
        ("GET", "/v1/products"),
        ("GET", "/v1/products:search"),
        ("GET", "/v1/products/{product_id}:alsoBought"),
        ("GET", "/v1/categories"),
        ("GET", "/v1/products/{product_id}/stock"),
        ("POST", "/v1/products"),
        ("PATCH", "/v1/products/{product_id}"),
        ("DELETE", "/v1/products/{product_id}"),
        ("POST", "/v1/products/{product_id}/stock:adjust"),
        ("GET", "/v1/cart"),
        ("DELETE", "/v1/cart"),
        ("POST", "/v1/cart/items"),
        ("PATCH", "/v1/cart/items/{product_id}"),
        ("DELETE", "/v1/cart/items/{product_id}"),
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders"),
        ("GET", "/v1/orders/{order_id}"),
        ("POST", "/v1/orders/{order_id}:cancel"),
        ("POST", "/v1/orders/{order_id}:ship"),
        ("POST", "/v1/orders/{order_id}:deliver"),
        ("POST", "/v1/orders/{order_id}:refund"),
    }
    assert expected <= served


def test_route_behaviour_comes_from_the_method_options(app) -> None:
    by_key = {(r.http_method, r.path.template): r for r in app.state.api_routes}
    checkout = by_key[("POST", "/v1/orders")]
    assert checkout.success_status == 201
    assert checkout.rate_limit_class == "checkout"
    assert checkout.access == options_pb2.ACCESS_USER
    assert [(b.header, b.field) for b in checkout.header_bindings] == [("idempotency-key", "idempotency_key")]
    assert by_key[("GET", "/v1/products:search")].access == options_pb2.ACCESS_ANONYMOUS
    assert by_key[("POST", "/v1/orders/{order_id}:ship")].access == options_pb2.ACCESS_ADMIN


def test_a_rule_without_access_is_refused() -> None:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    for dependency in (
        "google/protobuf/descriptor.proto",
        "google/api/http.proto",
        "google/api/annotations.proto",
    ):
        file = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(dependency).CopyToProto(file)
        pool.Add(file)
    options_file = descriptor_pb2.FileDescriptorProto()
    options_pb2.DESCRIPTOR.CopyToProto(options_file)
    pool.Add(options_file)
    proto = descriptor_pb2.FileDescriptorProto(
        name="test/noaccess.proto",
        package="test.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )
    proto.message_type.add(name="Req")
    service = proto.service.add(name="NoAccess")
    method = service.method.add(name="Get", input_type=".test.v1.Req", output_type=".test.v1.Req")
    method.options.Extensions[annotations_pb2.http].get = "/v1/things"
    pool.Add(proto)
    with pytest.raises(RouteConfigError, match="access"):
        routes_for(pool.FindServiceByName("test.v1.NoAccess"))


def test_openapi_describes_every_route(app) -> None:
    document = build_openapi(app.state.api_routes)
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == {(r.http_method, r.path.openapi_path) for r in app.state.api_routes}
    search = document["paths"]["/v1/products:search"]["get"]
    params = {p["name"]: p for p in search["parameters"]}
    assert params["brands"]["schema"]["type"] == "array"
    assert params["min_price"]["schema"]["type"] == "number"
    checkout = document["paths"]["/v1/orders"]["post"]
    assert "201" in checkout["responses"]
    assert {p["name"]: p["in"] for p in checkout["parameters"]} == {"Idempotency-Key": "header"}
    body = checkout["requestBody"]["content"]["application/json"]["schema"]
    assert "idempotencyKey" not in body["properties"] and "shippingAddress" in body["properties"]
    assert checkout["security"] == [{"bearerAuth": []}]
    product = document["components"]["schemas"]["shop.catalog.v1.Product"]
    assert product["properties"]["id"]["readOnly"] is True
    assert product["properties"]["id"]["type"] == "string"  # int64 as a JSON string


def test_openapi_descriptions_come_from_the_proto_comments(app) -> None:
    from gateway.config import REPO_ROOT
    from gateway.protodoc import load_comments, parse_file

    comments = load_comments(REPO_ROOT / "protos")
    document = build_openapi(app.state.api_routes, comments=comments)
    get_product = document["paths"]["/v1/products/{product_id}"]["get"]
    assert get_product["description"].startswith("Returns one product.")
    product = document["components"]["schemas"]["shop.catalog.v1.Product"]
    assert product["description"].startswith("A product")
    assert product["properties"]["price"]["allOf"] == [{"$ref": "#/components/schemas/shop.common.v1.Money"}]
    assert product["properties"]["price"]["description"] == "Unit price (USD, whole cents)."
    brands = next(
        p for p in document["paths"]["/v1/products:search"]["get"]["parameters"] if p["name"] == "brands"
    )
    assert "repeat the parameter" in brands["description"]
    nested = parse_file(
        "package a.v1;\n// Outer doc.\nmessage Outer {\n  // Inner doc.\n  message Inner { int32 x = 1; }\n"
        "  // Field doc.\n  Inner inner = 1;\n}\n// Svc.\nservice S {\n  // Call doc.\n"
        '  rpc Call(Outer) returns (Outer) {\n    option (google.api.http) = {get: "/v1/x"};\n  }\n}\n'
    )
    assert nested == {
        "a.v1.Outer": "Outer doc.",
        "a.v1.Outer.Inner": "Inner doc.",
        "a.v1.Outer.inner": "Field doc.",
        "a.v1.S": "Svc.",
        "a.v1.S.Call": "Call doc.",
    }
