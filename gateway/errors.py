"""The one place where failures become HTTP: gRPC status (+ ErrorInfo reason) -> HTTP status and a
JSON body in the google.rpc.Status shape:

    {"error": {"code": 409, "status": "FAILED_PRECONDITION", "message": "...",
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "INSUFFICIENT_STOCK", "domain": "shopmesh.dev",
                            "metadata": {"product_id": "7"}}]}}

gRPC code -> HTTP status (HTTP_STATUS_BY_CODE): INVALID_ARGUMENT and OUT_OF_RANGE 400,
UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ABORTED and ALREADY_EXISTS 409,
FAILED_PRECONDITION 409 or 422 (below), RESOURCE_EXHAUSTED 429, CANCELLED 499, UNKNOWN, INTERNAL and
DATA_LOSS 500, UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504.

FAILED_PRECONDITION by ErrorInfo reason (FAILED_PRECONDITION_STATUS_BY_REASON):
  409 Conflict: the resource's current state stands in the way; the same request may succeed once
      that state changes (INSUFFICIENT_STOCK, IDEMPOTENCY_KEY_IN_PROGRESS, INVALID_ORDER_TRANSITION,
      RESERVATION_EXPIRED, STOCK_BELOW_RESERVED, and any reason not listed).
  422 Unprocessable: this request can never succeed as sent (IDEMPOTENCY_KEY_REUSED: the key belongs
      to another body; REQUEST_ID_REUSED: likewise a request id; CART_EMPTY; PRODUCT_INACTIVE;
      PAYMENT_DECLINED).

Messages of 5xx statuses and of failures without a rich status (transport errors, which can name
internal addresses) are replaced by a generic text; a Python traceback never reaches a client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
import orjson
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from meshkit.errors import ERROR_DOMAIN, status_of

HTTP_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

FAILED_PRECONDITION_STATUS_BY_REASON: dict[str, int] = {
    "INSUFFICIENT_STOCK": 409,
    "IDEMPOTENCY_KEY_IN_PROGRESS": 409,
    "INVALID_ORDER_TRANSITION": 409,
    "RESERVATION_EXPIRED": 409,
    "STOCK_BELOW_RESERVED": 409,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "REQUEST_ID_REUSED": 422,
    "CART_EMPTY": 422,
    "PRODUCT_INACTIVE": 422,
    "PAYMENT_DECLINED": 422,
}
FAILED_PRECONDITION_DEFAULT_STATUS = 409

GENERIC_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "the service is unavailable, retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time",
    grpc.StatusCode.CANCELLED: "the request was cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "not implemented",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too many requests",
}
INTERNAL_MESSAGE = "internal error"


class GatewayError(Exception):
    """A failure decided by the gateway itself (auth, rate limit, transcoding, routing)."""

    def __init__(
        self,
        http_status: int,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
        field: str | None = None,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.field = field
        self.description = description or message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        details: list[dict[str, object]] = []
        if self.reason:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": self.reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": self.metadata,
                }
            )
        if self.field:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": self.field, "description": self.description}],
                }
            )
        return error_body(self.http_status, self.code, self.message, details)


def bad_request(
    message: str,
    *,
    field: str | None = None,
    description: str | None = None,
    reason: str = "INVALID_ARGUMENT",
) -> GatewayError:
    """400. `field` names the offending field (ErrorInfo metadata and a BadRequest field violation);
    `description` is the violation's text when it differs from the message (default: the message)."""
    metadata = {"field": field} if field else None
    return GatewayError(
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        reason=reason,
        metadata=metadata,
        field=field,
        description=description,
    )


def error_body(
    http_status: int, code: grpc.StatusCode, message: str, details: list[dict[str, object]]
) -> dict[str, object]:
    return {"error": {"code": http_status, "status": code.name, "message": message, "details": details}}


def http_status_for(code: grpc.StatusCode, reason: str | None) -> int:
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FAILED_PRECONDITION_STATUS_BY_REASON.get(reason or "", FAILED_PRECONDITION_DEFAULT_STATUS)
    return HTTP_STATUS_BY_CODE.get(code, 500)


def _details_json(status: status_pb2.Status) -> list[dict[str, object]]:
    details = []
    for packed in status.details:
        try:
            details.append(json_format.MessageToDict(packed, preserving_proto_field_name=False))
        except (TypeError, KeyError, json_format.Error):
            continue  # a detail type this gateway does not know: leave it out rather than fail
    return details


def _reason(status: status_pb2.Status | None) -> str | None:
    if status is None:
        return None
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return info.reason
    return None


def from_rpc_error(error: grpc.RpcError) -> tuple[int, dict[str, object]]:
    """HTTP status and JSON body for a failed upstream call."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    try:
        status = status_of(error)
    except Exception:  # a malformed status detail must not turn into a 500 with a traceback
        status = None
    http_status = http_status_for(code, _reason(status))
    if http_status >= 500:
        # service messages of 5xx can carry driver errors or addresses; the ErrorInfo reason stays
        message = GENERIC_MESSAGES.get(code, INTERNAL_MESSAGE)
        keep_details = status is not None and code not in _OPAQUE_CODES
        details = _details_json(status) if keep_details else []  # type: ignore[arg-type]
    elif status is not None:
        message, details = status.message, _details_json(status)
    else:
        message, details = GENERIC_MESSAGES.get(code, code.name.lower().replace("_", " ")), []
    return http_status, error_body(http_status, code, message, details)


_OPAQUE_CODES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS)


def internal_error_body() -> dict[str, object]:
    return error_body(500, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, [])


def encode(body: object) -> bytes:
    """Compact UTF-8 JSON. orjson writes the same bytes as json.dumps(separators=(",", ":"),
    ensure_ascii=False) but for the notation of some floats (1e-05 is 0.00001: the same number),
    at a quarter of the CPU; what orjson refuses (ints past 64 bits, non-string keys) goes to json."""
    try:
        return orjson.dumps(body)
    except TypeError:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (a client's "\ud800" echoed in an error): \u-escaped
        return json.dumps(body, separators=(",", ":")).encode()
