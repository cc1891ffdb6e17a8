"""The one server interceptor: request id, internal-token auth and access, error mapping, RED metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import propagate

from meshkit import metrics
from meshkit.auth import INTERNAL_TOKEN_HEADER, InternalTokenError, verify_internal_token_until
from meshkit.context import Principal, new_request_id, principal_var, request_id_var
from meshkit.db import CONNECTION_ERRORS
from meshkit.errors import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    to_status,
)
from meshkit.tracing import annotate_span

log = logging.getLogger("meshkit.rpc")

REQUEST_ID_HEADER = "x-request-id"
UNGUARDED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")

# (method full name "/pkg.Service/Method", principal) -> None when allowed, or raises DomainError
AccessCheck = Callable[[str, Principal], None]


class _TokenCache:
    """Verified tokens by value until they expire: one HMAC check per token, not per call."""

    def __init__(self, secret: str, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._max = max_entries

    def principal(self, token: str) -> Principal:
        now = time.monotonic()
        hit = self._entries.get(token)
        if hit and hit[1] > now:
            return hit[0]
        principal, expires = verify_internal_token_until(self._secret, token)
        if len(self._entries) >= self._max:
            self._entries.clear()
        # re-verify every 20 s at most, and never trust a token past its own exp (they live a minute
        # or five: cached for a flat 20 s, one was accepted for up to 20 s after it expired)
        self._entries[token] = (principal, now + min(20.0, expires - time.time()))
        return principal


class _MethodStats:
    """The RED metric children of one method, resolved once instead of `.labels()` on every call."""

    def __init__(self, service: str, name: str) -> None:
        self._service = service
        self._name = name
        self.seconds = metrics.grpc_server_handling_seconds.labels(service, name)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = metrics.grpc_server_handled_total.labels(
                self._service, self._name, code.name
            )
        return child


class MeshServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        internal_token_secret: str,
        access_check: AccessCheck | None = None,
        continue_trace: bool = True,
        annotate_spans: bool = True,
    ) -> None:
        self._tokens = _TokenCache(internal_token_secret)
        self._access_check = access_check
        # with span export off there is no instrumentation to read `traceparent`; continuing the
        # caller's trace here still puts its trace id in logs, audit records and outbox headers
        self._continue_trace = continue_trace
        # without span export no span records, so looking for ids to put on it is wasted work
        self._annotate_spans = annotate_spans
        # method -> (the handler grpc resolved, the guarded handler built for it): the wrapper is
        # built once per method, not once per call
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = self._guard(method, handler)
        if handler is not None:
            self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None or method.startswith(UNGUARDED_PREFIXES):
            return handler
        if handler.unary_unary is None:
            # only unary calls get the token and access checks below: a streaming method would be
            # served unauthenticated, so none is served (UNIMPLEMENTED) until the guard covers it
            log.error(
                "streaming method refused: the interceptor guards unary methods only",
                extra={"method": method},
            )
            return None
        _, service, name = method.split("/")
        inner = handler.unary_unary
        stats = _MethodStats(service, name)
        tokens = self._tokens
        access_check = self._access_check
        continue_trace = self._continue_trace
        annotate = self._annotate_spans
        # most requests hold no string at all (ids, pages): the NUL scan is skipped for those types
        scan_strings: dict[Any, bool] = {}

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            token = ""
            request_id = ""
            carrier: dict[str, str] | None = None
            for key, value in context.invocation_metadata() or ():
                if key == INTERNAL_TOKEN_HEADER:
                    token = value
                elif key == REQUEST_ID_HEADER:
                    request_id = value[:128]
                elif key == "traceparent" or key == "tracestate":
                    if carrier is None:
                        carrier = {}
                    carrier[key] = value
            request_id_var.set(request_id or new_request_id())
            trace_token = (
                otel_context.attach(propagate.extract(carrier)) if carrier and continue_trace else None
            )
            try:
                if not token:
                    raise Unauthenticated("missing internal token", reason="MISSING_CREDENTIALS")
                try:
                    principal = tokens.principal(token)
                except InternalTokenError as exc:
                    raise Unauthenticated(
                        f"invalid internal token: {exc}", reason="INVALID_CREDENTIALS"
                    ) from exc
                principal_var.set(principal)
                if access_check is not None:
                    access_check(method, principal)
                descriptor = getattr(request, "DESCRIPTOR", None)
                scan = scan_strings.get(descriptor)
                if scan is None:
                    scan = scan_strings[descriptor] = descriptor is not None and may_hold_strings(descriptor)
                if scan:
                    bad = nul_field(request)
                    if bad:
                        raise InvalidArgument(bad, "must not contain NUL characters")
                if annotate:
                    annotate_span(request)
                response = await inner(request, context)
                if annotate:
                    annotate_span(response)
                return response
            except DomainError as error:
                code = error.code
                if code == grpc.StatusCode.INTERNAL:
                    log.error("rpc failed", extra={"method": method, "reason": error.reason})
                await context.abort_with_status(to_status(error))
            except CONNECTION_ERRORS as exc:
                code = grpc.StatusCode.UNAVAILABLE
                # the class name only, as meshkit.db says it: psycopg's text names hosts, ports, roles
                log.warning("database unavailable", extra={"method": method, "error": str(exc)[:300]})
                await context.abort_with_status(
                    to_status(Unavailable(f"database unavailable: {exc.__class__.__name__}"))
                )
            except (asyncio.CancelledError, grpc.aio.AbortError):
                code = context.code() or grpc.StatusCode.CANCELLED
                remaining = context.time_remaining()
                if code == grpc.StatusCode.CANCELLED and remaining is not None and remaining <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED  # count timeouts against the SLO
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error", extra={"method": method})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                if trace_token is not None:
                    otel_context.detach(trace_token)
                stats.handled(code).inc()
                stats.seconds.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def may_hold_strings(descriptor: Descriptor, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether a message of this type can carry a string anywhere (fields, maps, nested messages)."""
    if descriptor.full_name in _seen:
        return False
    seen = _seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            return True
        if field.type == field.TYPE_MESSAGE and may_hold_strings(field.message_type, seen):
            return True
    return False


def nul_field(message: Message, prefix: str = "") -> str:
    """The path of the first string field holding a NUL character, or "".

    PostgreSQL text cannot store NUL, so such a value reaching a query failed in the driver and
    answered INTERNAL (found by the fuzzers in audit filters and stock-adjustment reasons). No
    Shopmesh string may contain one; refusing it here covers every RPC and field at once.
    """
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == field.TYPE_STRING:
            if any("\x00" in item for item in (value if field.is_repeated else (value,))):
                return path
        elif field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if (isinstance(key, str) and "\x00" in key) or (isinstance(item, str) and "\x00" in item):
                    return path
                found = nul_field(item, f"{path}.") if isinstance(item, Message) else ""
                if found:
                    return found
        elif field.type == field.TYPE_MESSAGE:
            for item in value if field.is_repeated else (value,):
                found = nul_field(item, f"{path}.")
                if found:
                    return found
    return ""


def require_admin(principal: Principal | None) -> Principal:
    if principal is None or not principal.is_admin:
        raise PermissionDenied("admin role required", reason="ADMIN_REQUIRED")
    return principal
