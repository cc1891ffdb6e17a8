"""The API's way past Starlette's routing: the innermost middleware hands a request the catch-all API
route would get straight to its endpoint.

Starlette's exception middleware, router scan (every fixed route's regex first) and endpoint wrappers
cost about a tenth of the gateway's CPU per request and do nothing for the API: the dispatcher turns
all of its own failures into responses. Only requests that can match nothing but the catch-all take
this way: a path outside the fixed endpoints' prefixes that the catch-all's own regex matches, with
a method it serves, and no root_path. Everything else (the fixed endpoints, /docs assets, unmatched
paths and methods, lifespan) goes through Starlette as before. Unhandled exceptions propagate to
RequestContextMiddleware exactly as they did through Starlette's wrappers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class ApiFastPath:
    def __init__(
        self,
        app: ASGIApp,
        *,
        route: Route,
        endpoint: Callable[[Request], Awaitable[Response]],
        reserved_prefixes: tuple[str, ...],
    ) -> None:
        self.app = app
        self._regex = route.path_regex
        self._methods = frozenset(route.methods or ())
        self._endpoint = endpoint
        self._reserved = reserved_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and not scope.get("root_path")
            and scope["method"] in self._methods
            and not scope["path"].startswith(self._reserved)
            and self._regex.match(scope["path"])
        ):
            response = await self._endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
