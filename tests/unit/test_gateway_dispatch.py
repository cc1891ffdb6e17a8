"""The dispatcher's request pipeline with a recording upstream (no servers): what goes upstream."""

from __future__ import annotations

import secrets

import grpc
import jwt
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import order_pb2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from gateway.app import load_api_routes
from gateway.auth import InternalTokens, JwtVerifier
from gateway.dispatch import Dispatcher, query_pairs
from gateway.middleware import RequestContextMiddleware
from meshkit.auth import INTERNAL_TOKEN_HEADER, verify_internal_token
from meshkit.context import Principal

SECRET = "dispatch-test-jwt-secret-0123456789abcdef"
INTERNAL = "dispatch-test-internal-secret-0123456789ab"


class RecordingUpstream:
    def __init__(self, route, reply) -> None:
        self.route = route
        self.reply = reply
        self.calls: list[tuple[object, dict[str, str]]] = []

    async def invoke(self, message, metadata):
        self.calls.append((message, dict(metadata)))
        return self.reply, False


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    return provider


def dispatcher_for(upstream: RecordingUpstream) -> Dispatcher:
    return Dispatcher(
        upstreams=[upstream],
        verifier=JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh"),
        internal_tokens=InternalTokens(INTERNAL, ttl_seconds=60),
        limiter=None,
        max_body_bytes=1024,
        max_page_size=100,
    )


def client_for(upstream: RecordingUpstream) -> TestClient:
    dispatcher = dispatcher_for(upstream)

    async def api(request: Request):
        return await dispatcher(request)

    app = Starlette(
        routes=[Route("/{path:path}", api, methods=["GET", "POST"])],
        middleware=[Middleware(RequestContextMiddleware)],
    )
    return TestClient(app)


def test_principal_trace_and_request_id_go_upstream(provider) -> None:
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock:adjust")
    upstream = RecordingUpstream(route, inventory_pb2.AdjustStockResponse())
    token = jwt.encode(
        {"sub": "ops-1", "roles": ["admin"], "aud": "shopmesh", "exp": 9_999_999_999},
        SECRET,
        algorithm="HS256",
    )
    trace_id = secrets.token_hex(16)
    reply = client_for(upstream).post(
        "/v1/products/42/stock:adjust",
        json={"warehouseId": "2", "delta": 3},
        headers={
            "Authorization": f"Bearer {token}",
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
            "X-Request-Id": "req-1",
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "req-1"
    [(message, metadata)] = upstream.calls
    assert (message.product_id, message.warehouse_id, message.delta) == (42, 2, 3)
    assert verify_internal_token(INTERNAL, metadata[INTERNAL_TOKEN_HEADER]) == Principal("ops-1", ("admin",))
    assert metadata["traceparent"].split("-")[1] == trace_id  # the gateway's span, in the caller's trace


def test_anonymous_callers_go_upstream_as_anonymous(provider) -> None:
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock")
    upstream = RecordingUpstream(route, inventory_pb2.GetStockResponse())
    assert client_for(upstream).get("/v1/products/7/stock").status_code == 200
    [(_, metadata)] = upstream.calls
    assert verify_internal_token(INTERNAL, metadata[INTERNAL_TOKEN_HEADER]) == Principal(
        "anonymous", ("anonymous",)
    )


def test_requests_without_trace_context_start_new_traces_and_each_is_counted(provider) -> None:
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock")
    upstream = RecordingUpstream(route, inventory_pb2.GetStockResponse())
    labels = {"route": "/v1/products/{product_id}/stock", "method": "GET", "status": "200"}

    def counted() -> float:
        return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0

    def observed() -> float:
        return (
            REGISTRY.get_sample_value(
                "http_request_duration_seconds_count", {"route": labels["route"], "method": "GET"}
            )
            or 0.0
        )

    before, before_observed = counted(), observed()
    client = client_for(upstream)
    for product in (7, 8, 9):
        assert client.get(f"/v1/products/{product}/stock").status_code == 200
    assert counted() - before == 3 and observed() - before_observed == 3
    trace_ids = {metadata["traceparent"].split("-")[1] for _, metadata in upstream.calls}
    assert len(trace_ids) == 3 and "0" * 32 not in trace_ids  # a fresh, valid trace each time


class ExhaustedUpstream(RecordingUpstream):
    async def invoke(self, message, metadata):
        self.calls.append((message, dict(metadata)))
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            initial_metadata=grpc.aio.Metadata(),
            trailing_metadata=grpc.aio.Metadata(),
            details="concurrent RPC limit exceeded",
        )


def test_a_429_from_a_service_says_when_to_retry(provider) -> None:
    """The contract: an over-limit request gets 429 with Retry-After, also when the limit is a
    service's (its maximum of concurrent RPCs), not the gateway's own buckets."""
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock")
    reply = client_for(ExhaustedUpstream(route, None)).get("/v1/products/42/stock")
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def _search_upstream() -> RecordingUpstream:
    from shop.catalog.v1 import catalog_pb2

    route = next(r for r in load_api_routes() if r.path.template == "/v1/products:search")
    return RecordingUpstream(route, catalog_pb2.SearchProductsResponse())


def test_query_parameters_are_utf8_percent_encoded_or_raw_and_anything_else_is_a_400(provider) -> None:
    upstream = _search_upstream()
    client = client_for(upstream)
    assert client.get("/v1/products:search?q=caf%C3%A9&brands=%C3%9C").status_code == 200
    [(message, _)] = upstream.calls
    assert (message.q, list(message.brands)) == ("café", ["Ü"])
    # the decoding itself, on bytes as the HTTP parser hands them over
    assert query_pairs("q=café&x=1".encode()) == [("q", "café"), ("x", "1")]
    for target, field in (
        ("/v1/products:search?q=%FF", "q"),
        ("/v1/products:search?q=a&brands=%C3", "brands"),
    ):
        reply = client.get(target)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and field in error["message"], error
    assert len(upstream.calls) == 1  # nothing with replaced characters went upstream


def test_an_unpaired_surrogate_in_a_body_key_is_a_400_with_a_json_body(provider) -> None:
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock:adjust")
    upstream = RecordingUpstream(route, inventory_pb2.AdjustStockResponse())
    token = jwt.encode({"sub": "ops-1", "roles": ["admin"], "aud": "shopmesh", "exp": 9_999_999_999}, SECRET)
    reply = client_for(upstream).post(
        "/v1/products/42/stock:adjust",
        content=b'{"\\ud800": 1, "warehouseId": "2", "delta": 3}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 400, reply.text  # was a 500: the error echoing the key failed to encode
    assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "\\ud800" in reply.text and not upstream.calls


async def test_a_client_gone_before_its_body_is_a_499_not_a_server_error(provider) -> None:
    route = next(r for r in load_api_routes() if r.path.template == "/v1/products/{product_id}/stock:adjust")
    upstream = RecordingUpstream(route, inventory_pb2.AdjustStockResponse())
    dispatcher = dispatcher_for(upstream)
    token = jwt.encode({"sub": "ops-1", "roles": ["admin"], "aud": "shopmesh", "exp": 9_999_999_999}, SECRET)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/products/42/stock:adjust",
        "raw_path": b"/v1/products/42/stock:adjust",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
    }
    messages = [{"type": "http.request", "body": b'{"delta"', "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict:
        return messages.pop(0)

    response = await dispatcher(Request(scope, receive))
    assert response.status_code == 499 and not upstream.calls


def test_a_path_parameter_that_is_not_utf8_is_a_400_naming_it(provider) -> None:
    """unquote's default put U+FFFD in the order id, and the service answered 404 for it."""
    route = next(
        r for r in load_api_routes() if r.path.template == "/v1/orders/{order_id}" and r.http_method == "GET"
    )
    upstream = RecordingUpstream(route, order_pb2.GetOrderResponse())
    token = jwt.encode({"sub": "user-1", "aud": "shopmesh", "exp": 9_999_999_999}, SECRET)
    reply = client_for(upstream).get("/v1/orders/%FF", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "order_id" in error["message"], error
    assert not upstream.calls
