"""The gateway's composition root: settings -> routes, channels, verifier, limiter -> Starlette app.

Besides the transcoded API routes (one catch-all dispatcher driven by the descriptors), the only
endpoints are /healthz, /metrics, /openapi.json and /docs (with its static assets under /docs/static).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import valkey.asyncio as valkey_asyncio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.auth import ANONYMOUS, InternalTokens, JwtVerifier
from gateway.config import GatewaySettings
from gateway.dispatch import Dispatcher, FanoutUpstream, SingleCall, Upstream, json_response
from gateway.errors import GatewayError
from gateway.fanout import FanoutCall
from gateway.fastpath import ApiFastPath
from gateway.middleware import RequestContextMiddleware
from gateway.openapi import build_openapi
from gateway.protodoc import load_comments
from gateway.ratelimit import RateLimiter
from gateway.routes import Route as ApiRoute
from gateway.routes import (
    annotated_services,
    area_address,
    build_routes,
    import_generated_modules,
    upstream_address,
)
from meshkit.auth import TokenMinter
from meshkit.clients import open_channel
from meshkit.gc_tuning import tune_gc
from meshkit.logs import configure_logging
from meshkit.settings import load_settings
from meshkit.tracing import configure_tracing

log = logging.getLogger("gateway")

FIXED_PATHS = ("/healthz", "/metrics", "/openapi.json", "/docs")
DOCS_STATIC = "/docs/static"
CHECKOUT_CLASS = "checkout"

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Shopmesh API reference</title>
  <link rel="stylesheet" href="docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


def load_api_routes() -> list[ApiRoute]:
    return build_routes(annotated_services(import_generated_modules()))


def _upstream(route: ApiRoute, channels: dict[str, grpc.aio.Channel], settings: GatewaySettings) -> Upstream:
    """A route's gRPC side: one service, or (fanout_services) one channel per area, merged."""
    timeout = (
        settings.checkout_timeout_seconds
        if route.rate_limit_class == CHECKOUT_CLASS
        else settings.request_timeout_seconds
    )

    def callable_on(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
        return channel.unary_unary(
            route.grpc_path,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )

    if route.fanout_services:
        calls = {area: callable_on(channels[area]) for area in route.fanout_services}
        return FanoutUpstream(route=route, fanout=FanoutCall(route, calls, timeout))
    return SingleCall(route=route, call=callable_on(channels[route.service.full_name]), timeout=timeout)


def build_app(settings: GatewaySettings) -> Starlette:
    api_routes = load_api_routes()
    overrides = settings.upstream_overrides()
    addresses = {
        route.service.full_name: upstream_address(route.service, settings, overrides)
        for route in api_routes
        if not route.fanout_services
    }
    addresses.update(
        {area: area_address(area, settings) for route in api_routes for area in route.fanout_services}
    )
    comments = load_comments(Path(settings.protos_dir))
    openapi_body = json_response(200, build_openapi(api_routes, comments=comments)).body
    verifier = JwtVerifier(
        key=settings.jwt_verification_key(),
        algorithm=settings.jwt_algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway_seconds,
    )
    docs_dir = Path(settings.docs_assets_dir)
    state: dict[str, Dispatcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.uses_demo_secret:
            log.warning("SHOPMESH_JWT_SECRET is the public demo secret: set your own outside a demo")
        anonymous_minter = TokenMinter(settings.internal_token_secret, ANONYMOUS)
        by_address = {
            address: open_channel(
                address,
                token_provider=anonymous_minter.token,
                default_timeout=settings.request_timeout_seconds,
            )
            for address in sorted(set(addresses.values()))
        }  # one long-lived channel per upstream address, shared by its services
        channels = {name: by_address[address] for name, address in addresses.items()}
        valkey_client = valkey_asyncio.from_url(
            settings.valkey_url,
            socket_timeout=settings.rate_limit_valkey_timeout_seconds,
            socket_connect_timeout=settings.rate_limit_valkey_timeout_seconds,
        )
        limiter = None
        if settings.rate_limit_enabled:
            limiter = RateLimiter(
                valkey_client,
                buckets=settings.rate_limit_buckets(),
                default_bucket=settings.default_bucket(),
                retry_down_seconds=settings.rate_limit_retry_down_seconds,
                key_prefix=settings.rate_limit_key_prefix,
            )
        upstreams = [_upstream(route, channels, settings) for route in api_routes]
        state["dispatcher"] = Dispatcher(
            upstreams=upstreams,
            verifier=verifier,
            internal_tokens=InternalTokens(
                settings.internal_token_secret, ttl_seconds=settings.internal_token_ttl_seconds
            ),
            limiter=limiter,
            max_body_bytes=settings.max_body_bytes,
            max_page_size=settings.max_page_size,
        )
        tune_gc(settings)
        log.info(
            "gateway ready",
            extra={
                "routes": len(api_routes),
                "upstreams": dict(sorted(addresses.items())),
                "port": settings.gateway_port,
            },
        )
        try:
            yield
        finally:
            for channel in by_address.values():
                await channel.close(grace=None)
            if limiter is not None:
                limiter.close()
            await valkey_client.aclose()

    async def healthz(_request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def docs(_request: Request) -> Response:
        if not (docs_dir / "swagger-ui-bundle.js").is_file():
            error = GatewayError(
                503, grpc.StatusCode.UNAVAILABLE, "API reference assets missing: run `npm ci`"
            )
            return json_response(503, error.body())
        return HTMLResponse(DOCS_HTML)

    async def api(request: Request) -> Response:
        return await state["dispatcher"](request)

    async def unrouted(_request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405, e.g. for a path with an encoded newline, which the catch-all
        # pattern does not match: answered text/plain before, now the JSON error every route has
        status = getattr(exc, "status_code", 404)
        if status == 405:
            error = GatewayError(405, grpc.StatusCode.UNIMPLEMENTED, "method not allowed here")
        else:
            error = GatewayError(404, grpc.StatusCode.NOT_FOUND, "no such route", reason="NOT_FOUND")
        return json_response(error.http_status, error.body())

    api_route = Route(
        "/{path:path}", api, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    middleware = [Middleware(RequestContextMiddleware, fixed_paths=FIXED_PATHS, static_prefix=DOCS_STATIC)]
    origins = settings.cors_origin_list()
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                # traceparent/tracestate: a browser instrumented with OpenTelemetry sends them on
                # every call, and a preflight that refuses one fails the call
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "X-Request-Id",
                    "traceparent",
                    "tracestate",
                ],
                expose_headers=["X-Request-Id", "Retry-After", "Idempotent-Replayed"],
                max_age=600,
            )
        )
    # innermost, so CORS (when on) and the request context still wrap every API request
    middleware.append(Middleware(ApiFastPath, route=api_route, endpoint=api, reserved_prefixes=FIXED_PATHS))
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
            Route("/docs", docs),
            Mount(DOCS_STATIC, app=StaticFiles(directory=docs_dir, check_dir=False), name="docs-static"),
            api_route,
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: unrouted, 405: unrouted},
    )
    app.state.api_routes = api_routes
    return app


def create_app() -> Starlette:
    """Factory for uvicorn's multi-worker mode: each worker reads the settings itself."""
    settings = load_settings(GatewaySettings)
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    return build_app(settings)
