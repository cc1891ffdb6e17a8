"""grpc.aio server bootstrap shared by every service (the composition root's runtime half).

`run_service` builds settings-driven resources (DB pool, Valkey), installs health, reflection, the
mesh interceptor and /metrics, calls the service's `setup(runtime, server)`, serves until SIGTERM,
then drains: health goes NOT_SERVING, in-flight RPCs get `shutdown_grace_seconds`, background tasks
stop, pools close. With `workers > 1` it forks that many processes before any gRPC object exists;
they share the port through SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
import valkey.asyncio as valkey_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg_pool import AsyncConnectionPool

from meshkit import metrics
from meshkit.access import access_policy
from meshkit.audit_service import AUDIT_SERVICE_DESCRIPTOR, register_audit_service
from meshkit.db import open_pool, pool_saturation
from meshkit.gc_tuning import tune_gc
from meshkit.interceptors import AccessCheck, MeshServerInterceptor
from meshkit.kafka import build_producer
from meshkit.logs import configure_logging
from meshkit.migrate import pending_migrations
from meshkit.outbox import OutboxRelay
from meshkit.settings import CommonSettings
from meshkit.tracing import configure_tracing, instrument_grpc

# a background task that ran this long before it crashed restarts after the shortest delay again
HEALTHY_RUN_SECONDS = 60.0
log = logging.getLogger("meshkit.server")
AUDIT_METHOD_PREFIX = f"/{AUDIT_SERVICE_DESCRIPTOR.full_name}/"


@dataclasses.dataclass
class Runtime:
    """Resources a service's setup receives. Built here, passed in; nothing global."""

    settings: CommonSettings
    pool: AsyncConnectionPool
    valkey: valkey_asyncio.Valkey
    worker_index: int = 0
    service_names: list[str] = dataclasses.field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    _closers: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)

    def spawn(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a background loop; if it crashes it is restarted with capped backoff."""

        async def supervised() -> None:
            delay = 0.5
            while True:
                started = time.monotonic()
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task crashed; restarting", extra={"task": name})
                    if time.monotonic() - started > HEALTHY_RUN_SECONDS:
                        delay = 0.5  # it ran well before this crash: not a crash loop
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

        self._tasks.append(asyncio.create_task(supervised(), name=name))

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    def start_outbox_relay(self) -> OutboxRelay:
        """The service's outbox relay (one active per service, elected by advisory lock), running."""
        settings = self.settings
        relay = OutboxRelay(
            pool=self.pool,
            database_url=settings.database_url,
            service=settings.service_name,
            producer_factory=lambda: build_producer(
                settings.kafka_bootstrap, client_id=settings.service_name
            ),
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
        )
        self.spawn("outbox-relay", relay.run)
        return relay


Setup = Callable[[Runtime, grpc.aio.Server], Awaitable[AccessCheck | None]]


async def _serve(
    settings: CommonSettings, *, schema: str, package: str, setup: Setup, worker_index: int
) -> None:
    pending = pending_migrations(settings.database_url, package)
    if pending:
        raise SystemExit(f"{package}: pending migrations {pending}; run `make migrate`")
    pool = await open_pool(
        settings.database_url,
        schema=schema,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        name=settings.service_name,
    )
    valkey_client = valkey_asyncio.from_url(
        settings.valkey_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=10
    )
    runtime = Runtime(settings=settings, pool=pool, valkey=valkey_client, worker_index=worker_index)

    access_holder: dict[str, AccessCheck | None] = {"check": None}

    def access_check(method: str, principal: Any) -> None:
        check = access_holder["check"]
        if check is not None:
            check(method, principal)

    server = grpc.aio.server(
        interceptors=[
            MeshServerInterceptor(
                internal_token_secret=settings.internal_token_secret,
                access_check=access_check,
                continue_trace=not settings.otlp_endpoint,  # else the instrumentation does it
                annotate_spans=bool(settings.otlp_endpoint),
            )
        ],
        options=[
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.keepalive_permit_without_calls", 1),
            # clients re-resolve DNS when a connection ages out, so round_robin reaches new pods
            ("grpc.max_connection_age_ms", 300_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
        maximum_concurrent_rpcs=2000,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # every service serves the audit trail of its own schema (admin only, from the proto option)
    register_audit_service(server, pool, runtime.service_names)
    audit_check = access_policy([AUDIT_SERVICE_DESCRIPTOR])
    service_check = await setup(runtime, server)

    def combined_check(method: str, principal: Any) -> None:
        if method.startswith(AUDIT_METHOD_PREFIX):
            audit_check(method, principal)
        elif service_check is not None:
            service_check(method, principal)

    access_holder["check"] = combined_check

    names = [*runtime.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if settings.metrics_port:
        metrics.serve_metrics(settings.grpc_host, settings.metrics_port + worker_index)

    async def sample_pool() -> None:
        while True:
            metrics.db_pool_saturation.labels(settings.service_name).set(pool_saturation(pool))
            metrics.db_pool_waiting.labels(settings.service_name).set(
                pool.get_stats().get("requests_waiting", 0)
            )
            await asyncio.sleep(2)

    runtime.spawn("db-pool-sampler", sample_pool)
    await server.start()
    tune_gc(settings)
    for name in ["", *runtime.service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"port": port, "worker": worker_index, "services": runtime.service_names})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("draining", extra={"grace_seconds": settings.shutdown_grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace_seconds)
    for task in runtime._tasks:
        task.cancel()
    for task in runtime._tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for closer in reversed(runtime._closers):
        with contextlib.suppress(Exception):
            await closer()
    await valkey_client.aclose()
    await pool.close()
    log.info("stopped")


def run_service(settings: CommonSettings, *, schema: str, package: str, setup: Setup) -> None:
    """Entry point used by each service's __main__."""
    configure_logging(settings.service_name, settings.log_level)
    if settings.workers <= 1:
        _run_worker(settings, schema=schema, package=package, setup=setup, worker_index=0)
        return
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # child: build everything after the fork
            _run_worker(settings, schema=schema, package=package, setup=setup, worker_index=index)
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)


def _run_worker(
    settings: CommonSettings, *, schema: str, package: str, setup: Setup, worker_index: int
) -> None:
    configure_tracing(settings.service_name, settings.otlp_endpoint)
    if settings.otlp_endpoint:  # spans cost CPU on every RPC: only when they go somewhere
        instrument_grpc()
    asyncio.run(_serve(settings, schema=schema, package=package, setup=setup, worker_index=worker_index))
