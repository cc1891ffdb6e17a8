"""gRPC channels to peer services: round-robin, retries only through the service config, and an
interceptor that attaches the internal token, the request id and a default deadline to every call."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from meshkit.auth import INTERNAL_TOKEN_HEADER
from meshkit.context import request_id_var
from meshkit.interceptors import REQUEST_ID_HEADER
from meshkit.tracing import inject_headers

# Retries only for UNAVAILABLE (connection refused / server draining), which is safe for every RPC
# here because all mutating RPCs are idempotent by request id, order id or reservation id.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


class _CallInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(
        self, token_provider: Callable[[], str], default_timeout: float, wait_for_ready: bool
    ) -> None:
        self._token = token_provider
        self._timeout = default_timeout
        self._wait_for_ready = wait_for_ready

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = list(client_call_details.metadata or [])
        if not any(k == INTERNAL_TOKEN_HEADER for k, _ in metadata):
            metadata.append((INTERNAL_TOKEN_HEADER, self._token()))
        request_id = request_id_var.get()
        if request_id and not any(k == REQUEST_ID_HEADER for k, _ in metadata):
            metadata.append((REQUEST_ID_HEADER, request_id))
        if not any(k == "traceparent" for k, _ in metadata):
            metadata.extend(inject_headers().items())
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=client_call_details.timeout if client_call_details.timeout is not None else self._timeout,
            metadata=metadata,
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready or self._wait_for_ready,
        )
        return await continuation(details, request)


def open_channel(
    address: str,
    *,
    token_provider: Callable[[], str],
    default_timeout: float,
    wait_for_ready: bool = False,
) -> grpc.aio.Channel:
    """A long-lived insecure channel (inside the mesh) with the defaults above.

    Reconnect backoff is kept short (100 ms .. 2 s) so a restarted peer is reachable again quickly;
    `wait_for_ready` makes calls wait for a connection (up to their deadline) instead of failing fast.
    """
    return grpc.aio.insecure_channel(
        address,
        interceptors=[_CallInterceptor(token_provider, default_timeout, wait_for_ready)],
        options=[
            ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30000),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )
