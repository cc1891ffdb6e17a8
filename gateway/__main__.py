"""`python -m gateway`: serve the HTTP gateway with uvicorn (SHOPMESH_WORKERS processes)."""

from __future__ import annotations

import uvicorn

from gateway.app import build_app
from gateway.config import GatewaySettings
from gateway.http_protocol import BoundedHttpToolsProtocol
from meshkit.logs import configure_logging
from meshkit.settings import load_settings
from meshkit.tracing import configure_tracing


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    common = {
        "host": settings.gateway_host,
        "port": settings.gateway_port,
        "access_log": False,  # gateway.middleware writes the JSON access log
        "log_config": None,  # keep meshkit's JSON logging
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "server_header": False,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_proxies,
        # httptools (C parser; h11 costs ~15% more CPU per request), with the request target bounded
        "http": BoundedHttpToolsProtocol,
        "loop": "asyncio",  # grpc.aio runs on the standard asyncio loop
        # longer than clients' idle-connection expiry (httpx: 5 s, uvicorn's default too): otherwise the
        # server may close an idle keep-alive connection just as a client sends on it (a response-less
        # reset the client cannot tell from a crash)
        "timeout_keep_alive": 75,
    }
    if settings.workers > 1:
        # each worker process builds its own app (channels and pools must not cross a fork)
        uvicorn.run("gateway.app:create_app", factory=True, workers=settings.workers, **common)
        return
    uvicorn.run(build_app(settings), **common)


if __name__ == "__main__":
    main()
