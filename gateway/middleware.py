"""Per-request concerns for every response: request id, JSON access log, metrics, and the last-resort
500 (JSON, never a traceback). Pure ASGI, so it adds no task or body buffering per request."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import encode, internal_error_body
from meshkit.context import new_request_id, request_id_var

access_log = logging.getLogger("gateway.access")
log = logging.getLogger("gateway")

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
ROUTE_KEY = "shopmesh.route"  # scope keys the dispatcher fills in for the log and metrics
USER_KEY = "shopmesh.user"
_TRACE_HEADERS = (b"traceparent", b"tracestate")
_NO_PARENT = otel_context.Context()  # what propagate.extract gives for a request without trace headers
_tracer = trace.get_tracer("gateway")
_MAX_CACHED_SERIES = 4096  # methods are client input: bound the per-series cache below


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID_HEADER:
            if _SAFE_REQUEST_ID.fullmatch(value):
                return value.decode()
            break
    return new_request_id()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, fixed_paths: tuple[str, ...] = (), static_prefix: str = "") -> None:
        self.app = app
        self._fixed = frozenset(fixed_paths)
        self._static = static_prefix
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # prometheus children

    def _metrics(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """The request counter and duration histogram children of this series (labels() once)."""
        key = (route, method, status)
        children = self._series.get(key)
        if children is None:
            children = (
                metrics.http_requests_total.labels(route, method, str(status)),
                metrics.http_request_duration_seconds.labels(route, method),
            )
            if len(self._series) >= _MAX_CACHED_SERIES:
                self._series.clear()
            self._series[key] = children
        return children

    def _route_label(self, scope: Scope) -> str:
        """The template set by the dispatcher, else the fixed endpoint, else "unmatched"."""
        if ROUTE_KEY in scope:
            return scope[ROUTE_KEY]
        path = scope.get("path", "")
        if path in self._fixed:
            return path
        if self._static and path.startswith(self._static + "/"):
            return self._static
        return metrics.UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        # the HTTP server span: continues a caller's W3C trace; the dispatcher passes it on upstream
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in _TRACE_HEADERS
        }
        parent = propagate.extract(carrier) if carrier else _NO_PARENT
        span = _tracer.start_span(
            f"HTTP {scope.get('method', '')}", context=parent, kind=trace.SpanKind.SERVER
        )
        span_token = otel_context.attach(trace.set_span_in_context(span))
        state: dict[str, Any] = {"status": 500, "bytes": 0, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": scope.get("path")})
            if not state["started"]:
                body = encode(internal_error_body())
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": body})
            state["status"] = 500
        finally:
            elapsed = time.perf_counter() - started
            route = self._route_label(scope)
            method = scope.get("method", "")
            span.update_name(f"{method} {route}")
            span.set_attributes(
                {
                    "http.request.method": method,
                    "http.route": route,
                    "http.response.status_code": state["status"],
                }
            )
            if state["status"] >= 500:
                span.set_status(trace.StatusCode.ERROR)
            requests, duration = self._metrics(route, method, state["status"])
            requests.inc()
            duration.observe(elapsed)
            client = scope.get("client")
            access_log.info(
                "request",
                extra={
                    "http_method": method,
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": state["status"],
                    "duration_ms": round(elapsed * 1000, 3),
                    "bytes_out": state["bytes"],
                    "client": client[0] if client else "",
                    "user": scope.get(USER_KEY, ""),
                },
            )
            otel_context.detach(span_token)
            span.end()
            request_id_var.reset(token)
