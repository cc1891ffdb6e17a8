"""One transcoded call: match -> authenticate -> authorize -> rate-limit -> transcode -> gRPC -> JSON.

The order is deliberate: nothing is read from the body and no upstream is called for a caller who
may not use the route or is over its limit. A refused caller still spends a token (a bad token its
IP's bucket of refusals, a missing one its IP's bucket, a missing role its own), so refusals are
rate-limited too. An IP whose bad tokens emptied its bucket of refusals of a route class is answered
429 for that class until a token is back, before any token is checked: a valid token from it is not
told apart from a forged one (no oracle for guessing), and a flood of forged tokens costs neither a
signature check nor a Valkey round trip.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import parse_qsl, unquote

import grpc
from google.protobuf.message import Message
from opentelemetry import propagate
from shop.api.v1 import options_pb2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway import metrics
from gateway.auth import ANONYMOUS, InternalTokens, JwtVerifier
from gateway.errors import GatewayError, bad_request, encode, from_rpc_error
from gateway.fanout import FanoutCall
from gateway.middleware import ROUTE_KEY, USER_KEY
from gateway.pathtemplate import PathValueError
from gateway.ratelimit import RateLimiter
from gateway.routes import Route
from gateway.transcode import build_request, response_json
from meshkit.auth import INTERNAL_TOKEN_HEADER
from meshkit.context import Principal

REPLAYED_METADATA_KEY = "x-idempotent-replayed"  # set by order_svc (initial or trailing metadata)
REPLAYED_HEADER = "Idempotent-Replayed"
JSON = "application/json"
UPSTREAM_RETRY_AFTER_SECONDS = "1"  # Retry-After of a 429 a service answered (RESOURCE_EXHAUSTED)
MAX_REFUSING = 10_000  # (class, IP) pairs held back for their refusals, per process
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client closed the connection


class Upstream(Protocol):
    route: Route

    async def invoke(self, message: Message, metadata: Sequence[tuple[str, str]]) -> tuple[Message, bool]:
        """The reply and whether the service says it replayed a stored response."""
        ...


@dataclasses.dataclass
class SingleCall:
    route: Route
    call: grpc.aio.UnaryUnaryMultiCallable
    timeout: float

    async def invoke(self, message: Message, metadata: Sequence[tuple[str, str]]) -> tuple[Message, bool]:
        call = self.call(message, metadata=metadata, timeout=self.timeout)
        reply = await call
        replayed = bool(self.route.header_bindings) and replayed_flag(
            await call.initial_metadata(), await call.trailing_metadata()
        )
        return reply, replayed


@dataclasses.dataclass
class FanoutUpstream:
    route: Route
    fanout: FanoutCall

    async def invoke(self, message: Message, metadata: Sequence[tuple[str, str]]) -> tuple[Message, bool]:
        return await self.fanout(message, metadata), False


@dataclasses.dataclass
class Dispatcher:
    upstreams: list[Upstream]
    verifier: JwtVerifier
    internal_tokens: InternalTokens
    limiter: RateLimiter | None
    max_body_bytes: int
    max_page_size: int
    # (rate-limit class, client IP) -> monotonic time until which it is answered 429 unchecked
    _refusing: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except GatewayError as error:
            return json_response(error.http_status, error.body(), error.headers)
        except ClientDisconnect:
            # the client went away before its body was in: nobody to answer, and not a server error
            # (it was logged and counted as a 500, feeding the error-rate alerts); nginx's 499
            return Response(status_code=CLIENT_CLOSED_REQUEST)

    def match(self, method: str, raw_path: str) -> tuple[Upstream, dict[str, str]]:
        """HEAD is a GET whose body the server does not send (RFC 9110 9.3.2; uvicorn drops it)."""
        wanted = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        for upstream in self.upstreams:
            try:
                params = upstream.route.path.match(raw_path)
            except PathValueError as error:
                raise bad_request(str(error), field=error.variable) from None
            if params is None:
                continue
            if upstream.route.http_method == wanted:
                return upstream, params
            allowed.append(upstream.route.http_method)
            if upstream.route.http_method == "GET":
                allowed.append("HEAD")
        if allowed:
            raise GatewayError(
                405,
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {method} not allowed here",
                headers={"Allow": ", ".join(sorted(set(allowed)))},
            )
        raise GatewayError(404, grpc.StatusCode.NOT_FOUND, "no such route", reason="NOT_FOUND")

    async def _dispatch(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        upstream, path_params = self.match(request.method, raw_path.decode("utf-8", "replace"))
        route = upstream.route
        request.scope[ROUTE_KEY] = route.path.template
        client = request.client.host if request.client else "unknown"
        self._refuse_if_held_back(route, client)
        # a refused request costs a bucket too, or guessing tokens (or hammering with a bad one) would
        # be free. A bad token: the client IP's bucket of refusals, apart from its anonymous traffic
        # (which must not get an IP held back); no token where one is needed: the IP's, like any
        # anonymous request; a missing admin role (403): the user's
        try:
            verified = self.verifier.principal(request.headers.get("authorization"))
        except GatewayError:
            await self._limit(route, f"refused:{client}", hold_back=client)
            raise
        identity = f"ip:{client}" if verified is None else f"user:{verified.subject}"
        try:
            principal = self._authorize(route, verified)
        except GatewayError:
            await self._limit(route, identity)
            raise
        request.scope[USER_KEY] = "" if principal is ANONYMOUS else principal.subject
        await self._limit(route, identity)
        body = await self._read_body(request) if route.body else b""
        message = build_request(
            route,
            path_params=path_params,
            query=query_pairs(request.scope.get("query_string", b"")),
            body=body,
            headers=request.headers,
            max_page_size=self.max_page_size,
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # traceparent of the HTTP span, so service spans join the trace
        metadata = ((INTERNAL_TOKEN_HEADER, self.internal_tokens.token_for(principal)), *carrier.items())
        try:
            reply, replayed = await upstream.invoke(message, metadata)
        except grpc.aio.AioRpcError as error:
            metrics.upstream_errors_total.labels(route.service.name, error.code().name).inc()
            status, error_json = from_rpc_error(error)
            error_headers = {}
            if replayed_flag(error.initial_metadata(), error.trailing_metadata()):
                error_headers[REPLAYED_HEADER] = "true"
            if status == 429:  # a service at its concurrency cap: every 429 says when to come back
                error_headers["Retry-After"] = UPSTREAM_RETRY_AFTER_SECONDS
            return json_response(status, error_json, error_headers or None)
        headers = {REPLAYED_HEADER: "true"} if replayed else None
        return json_response(route.success_status, response_json(route, reply), headers)

    async def _limit(self, route: Route, identity: str, *, hold_back: str = "") -> None:
        """429 when `identity` is over its bucket of the route's class. `hold_back`: a client IP
        whose bad token this is; over its bucket of refusals, it is held back (see the module doc)."""
        if self.limiter is None:
            return
        decision = await self.limiter.check(route.rate_limit_class, identity)
        if not decision.allowed:
            if hold_back:
                self._hold_back(route.rate_limit_class, hold_back, decision.retry_after_seconds)
            raise _rate_limited(route, decision.retry_after_seconds)

    def _refuse_if_held_back(self, route: Route, client: str) -> None:
        key = (route.rate_limit_class, client)
        until = self._refusing.get(key)
        if until is None:
            return
        left = until - time.monotonic()
        if left <= 0:
            del self._refusing[key]
            return
        raise _rate_limited(route, max(1, math.ceil(left)))

    def _hold_back(self, rate_limit_class: str, client: str, seconds: int) -> None:
        now = time.monotonic()
        if len(self._refusing) >= MAX_REFUSING:
            # bounded, and amortized: the expired go, then the oldest tenth, so the next many hold
            # backs scan nothing (an attacker rotating addresses fills it at one scan per 1,000)
            for key in [k for k, until in self._refusing.items() if until <= now]:
                del self._refusing[key]
            if len(self._refusing) >= MAX_REFUSING:
                for key in list(itertools.islice(self._refusing, MAX_REFUSING // 10)):
                    del self._refusing[key]
        self._refusing[(rate_limit_class, client)] = now + seconds

    def _authorize(self, route: Route, principal: Principal | None) -> Principal:
        if route.access == options_pb2.ACCESS_ANONYMOUS:
            return principal or ANONYMOUS
        if principal is None:
            raise GatewayError(
                401,
                grpc.StatusCode.UNAUTHENTICATED,
                "a bearer token is required",
                reason="MISSING_CREDENTIALS",
                headers={"WWW-Authenticate": 'Bearer realm="shopmesh"'},
            )
        if route.access == options_pb2.ACCESS_ADMIN and not principal.is_admin:
            raise GatewayError(
                403, grpc.StatusCode.PERMISSION_DENIED, "admin role required", reason="ADMIN_REQUIRED"
            )
        return principal

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        content_type = request.headers.get("content-type", JSON).split(";")[0].strip().lower()
        if content_type and content_type != JSON and not content_type.endswith("+json"):
            raise GatewayError(
                415,
                grpc.StatusCode.INVALID_ARGUMENT,
                "request body must be application/json",
                reason="INVALID_ARGUMENT",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


def _rate_limited(route: Route, retry_after_seconds: int) -> GatewayError:
    metrics.rate_limited_total.labels(route.rate_limit_class).inc()
    return GatewayError(
        429,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate limit exceeded, retry later",
        reason="RATE_LIMITED",
        metadata={"rate_limit_class": route.rate_limit_class, "retry_after_seconds": retry_after_seconds},
        headers={"Retry-After": str(retry_after_seconds)},
    )


def _too_large(limit: int) -> GatewayError:
    error = bad_request(f"request body larger than {limit} bytes")
    error.http_status = 413
    error.metadata = {"max_body_bytes": str(limit)}
    return error


def replayed_flag(*metadata_sets: object) -> bool:
    for metadata in metadata_sets:
        for key, value in metadata or ():  # type: ignore[attr-defined]
            if key == REPLAYED_METADATA_KEY and str(value).lower() == "true":
                return True
    return False


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(content=encode(body), status_code=status, headers=headers, media_type=JSON)


def query_pairs(raw: bytes) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, percent-decoded as UTF-8; a parameter that is not
    UTF-8 is a 400 naming it. Bad sequences (`q=%FF`) used to become U+FFFD, and the search ran on
    that and answered 200. (Raw non-ASCII bytes in the target are refused by the HTTP parser.)"""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        pass
    for part in raw.split(b"&"):  # which parameter
        try:
            parse_qsl(part.decode("utf-8"), errors="strict")
        except UnicodeDecodeError:
            name = unquote(part.split(b"=", 1)[0].decode("utf-8", "replace"), errors="replace")
            raise bad_request(f"query parameter {name!r} is not valid UTF-8", field=name or "query") from None
    raise bad_request("the query string is not valid UTF-8", field="query")
