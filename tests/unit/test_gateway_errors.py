"""gRPC status -> HTTP status and google.rpc.Status JSON: the issue's table, in one place."""

from __future__ import annotations

import json

import grpc
import pytest

from gateway.errors import encode, from_rpc_error, http_status_for
from meshkit.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, to_status


def rpc_error(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), status.details
    )


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNKNOWN, 500),
    ],
)
def test_code_table(code: grpc.StatusCode, http: int) -> None:
    assert http_status_for(code, None) == http


@pytest.mark.parametrize(
    ("reason", "http"),
    [
        ("INSUFFICIENT_STOCK", 409),
        ("IDEMPOTENCY_KEY_REUSED", 422),
        ("REQUEST_ID_REUSED", 422),
        ("IDEMPOTENCY_KEY_IN_PROGRESS", 409),
        ("INVALID_ORDER_TRANSITION", 409),
        ("SOMETHING_NEW", 409),
    ],
)
def test_failed_precondition_by_reason(reason: str, http: int) -> None:
    assert http_status_for(grpc.StatusCode.FAILED_PRECONDITION, reason) == http


def test_body_carries_code_status_message_and_error_info() -> None:
    error = FailedPrecondition(
        "only 2 left", reason="INSUFFICIENT_STOCK", metadata={"product_id": 7, "available": 2}
    )
    status, body = from_rpc_error(rpc_error(to_status(error)))
    assert status == 409
    assert body["error"]["code"] == 409
    assert body["error"]["status"] == "FAILED_PRECONDITION"
    assert body["error"]["message"] == "only 2 left"
    [info] = body["error"]["details"]
    assert info == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "INSUFFICIENT_STOCK",
        "domain": "shopmesh.dev",
        "metadata": {"product_id": "7", "available": "2"},
    }


def test_idempotency_key_reused_is_422_through_the_whole_path() -> None:
    error = FailedPrecondition(
        "key reused", reason="IDEMPOTENCY_KEY_REUSED", metadata={"idempotency_key": "k"}
    )
    status, body = from_rpc_error(rpc_error(to_status(error)))
    assert status == 422 and body["error"]["details"][0]["reason"] == "IDEMPOTENCY_KEY_REUSED"


def test_invalid_argument_keeps_the_field_violation() -> None:
    status, body = from_rpc_error(rpc_error(to_status(InvalidArgument("quantity", "must be >= 1"))))
    assert status == 400
    types = {detail["@type"] for detail in body["error"]["details"]}
    assert types == {"type.googleapis.com/google.rpc.ErrorInfo", "type.googleapis.com/google.rpc.BadRequest"}
    bad = next(d for d in body["error"]["details"] if d["@type"].endswith("BadRequest"))
    assert bad["fieldViolations"] == [{"field": "quantity", "description": "must be >= 1"}]


def test_not_found_message_passes_through() -> None:
    status, body = from_rpc_error(
        rpc_error(to_status(NotFound("product 9 not found", reason="PRODUCT_NOT_FOUND")))
    )
    assert (status, body["error"]["message"]) == (404, "product 9 not found")


def test_5xx_messages_never_leak_internals() -> None:
    leaky = grpc.aio.AioRpcError(
        grpc.StatusCode.UNKNOWN,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        'Exception calling application: Traceback (most recent call last): File "/srv/x.py"',
    )
    status, body = from_rpc_error(leaky)
    assert status == 500 and body["error"]["message"] == "internal error" and body["error"]["details"] == []
    transport = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "failed to connect to all addresses; last error: 127.0.0.1:15051",
    )
    status, body = from_rpc_error(transport)
    assert status == 503 and "127.0.0.1" not in body["error"]["message"]
    db = to_status(
        Unavailable(
            "database unavailable: connection to 10.0.0.5:5432 refused", reason="DEPENDENCY_UNAVAILABLE"
        )
    )
    status, body = from_rpc_error(rpc_error(db))
    assert status == 503 and "10.0.0.5" not in body["error"]["message"]
    assert body["error"]["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"


def test_encode_is_compact_utf8_json_and_falls_back_for_what_orjson_refuses() -> None:
    body = {"a": [1, 2.5, None, True], "text": 'ünï "q" \\ \n\u2028😀', "nested": {"x": ""}}
    assert encode(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(encode({"small": 1e-05})) == {"small": 1e-05}
    assert encode({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert encode({1: "int key"}) == b'{"1":"int key"}'
