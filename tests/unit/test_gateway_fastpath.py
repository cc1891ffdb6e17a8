"""ApiFastPath takes exactly the requests Starlette's router would give the catch-all API route."""

from __future__ import annotations

import pytest
from starlette.routing import Match

from gateway.app import FIXED_PATHS, build_app
from gateway.config import GatewaySettings
from gateway.fastpath import ApiFastPath

PATHS = [
    "/v1/products/12",
    "/v1/products:search",
    "/v1/products/12:alsoBought",
    "/v1/orders",
    "/",
    "",
    "/healthz",
    "/healthz/",
    "/healthz\n",
    "/healthzx",
    "/metrics",
    "/openapi.json",
    "/openapi.json/x",
    "/docs",
    "/docs/",
    "/docs/static/swagger-ui.css",
    "/docsx",
    "/a\nb",
    "/a\n",
    "/\n",
    "/v1/products/1%0A2",
    "//double",
    "/ünï",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get"]


@pytest.fixture(scope="module")
def app():
    return build_app(GatewaySettings())


def starlette_picks_catch_all(app, scope: dict) -> bool:
    for route in app.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route is app.routes[-1]
        if match is Match.PARTIAL:
            return False  # 405 by Starlette's handler, unless a later route matches fully: none does
    return False


class Recorder:
    def __init__(self) -> None:
        self.took: list[str] = []

    async def endpoint(self, request):
        self.took.append("fast")

        async def response(scope, receive, send) -> None:
            return None

        return response

    async def fallback(self, scope, receive, send) -> None:
        self.took.append("starlette")


@pytest.mark.parametrize("method", METHODS)
async def test_fast_path_takes_what_the_router_gives_the_catch_all(app, method: str) -> None:
    recorder = Recorder()
    fast = ApiFastPath(
        recorder.fallback, route=app.routes[-1], endpoint=recorder.endpoint, reserved_prefixes=FIXED_PATHS
    )
    for path in PATHS:
        for root_path in ("", "/prefix"):
            scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": []}
            recorder.took.clear()
            await fast(scope, None, None)
            if recorder.took == ["fast"]:
                assert starlette_picks_catch_all(app, scope), (method, path, root_path)
            elif not root_path and path.startswith("/") and not path.startswith(FIXED_PATHS):
                # everything else falls through; only these may, and only when Starlette does not
                # pick the catch-all either
                assert not starlette_picks_catch_all(app, scope), (method, path)


async def test_lifespan_and_fixed_paths_go_through_starlette(app) -> None:
    recorder = Recorder()
    fast = ApiFastPath(
        recorder.fallback, route=app.routes[-1], endpoint=recorder.endpoint, reserved_prefixes=FIXED_PATHS
    )
    await fast({"type": "lifespan"}, None, None)
    await fast({"type": "http", "method": "GET", "path": "/healthz", "headers": []}, None, None)
    await fast({"type": "http", "method": "GET", "path": "/v1/products/1", "headers": []}, None, None)
    assert recorder.took == ["starlette", "starlette", "fast"]
