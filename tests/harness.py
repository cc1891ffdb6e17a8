"""Real service processes for integration, e2e and fault tests.

`mesh` (session fixture): a fresh database (root conftest's `test_database`) with every service's
migrations applied, unique Kafka topic names, and the services started lazily as real processes
(`python -m <package>`) on free ports: `await mesh.start("inventory_svc")`. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaAdminClient

from meshkit.auth import TokenMinter
from meshkit.clients import open_channel
from meshkit.context import Principal
from meshkit.kafka import ensure_topics
from meshkit.migrate import ROOT, SERVICE_SCHEMAS, apply_migrations
from meshkit.settings import CommonSettings, load_settings

GRPC_SERVICES = ("catalog_svc", "inventory_svc", "order_svc")
ADDR_ENV = {
    "catalog_svc": "SHOPMESH_CATALOG_ADDR",
    "inventory_svc": "SHOPMESH_INVENTORY_ADDR",
    "order_svc": "SHOPMESH_ORDER_ADDR",
}
START_TIMEOUT = 60.0


def free_port() -> int:
    """A free port below the kernel's ephemeral range, so an outgoing connection cannot take it
    between now and the moment the service binds it."""
    for _ in range(200):
        port = random.randint(20_000, 32_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found in 20000-32000")


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.name], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return None if self.proc is None else self.proc.poll()


class Mesh:
    def __init__(self, database_url: str, workdir: Path) -> None:
        suffix = secrets.token_hex(4)
        self.database_url = database_url
        self.workdir = workdir
        self.topics = {
            "SHOPMESH_TOPIC_INVENTORY_EVENTS": f"inventory-events-{suffix}",
            "SHOPMESH_TOPIC_ORDER_EVENTS": f"order-events-{suffix}",
            "SHOPMESH_TOPIC_CATALOG_EVENTS": f"catalog-events-{suffix}",
        }
        self.ports = {name: free_port() for name in GRPC_SERVICES}
        self.metrics_ports = {name: free_port() for name in GRPC_SERVICES}
        self.gateway_port = free_port()
        self.internal_secret = secrets.token_hex(16)
        self.jwt_secret = secrets.token_hex(16)
        self.suffix = suffix
        base = {k: v for k, v in os.environ.items() if not k.startswith("SHOPMESH_")}
        self.env: dict[str, str] = {
            **base,
            "SHOPMESH_DATABASE_URL": database_url,
            "SHOPMESH_INTERNAL_TOKEN_SECRET": self.internal_secret,
            "SHOPMESH_JWT_SECRET": self.jwt_secret,
            "SHOPMESH_GATEWAY_PORT": str(self.gateway_port),
            "SHOPMESH_SHUTDOWN_GRACE_SECONDS": "2",
            "SHOPMESH_LOG_LEVEL": "INFO",
            "SHOPMESH_TEST_SUFFIX": suffix,
            # no scheduled search reconcile (by default 5 s after catalog_svc starts): tests feed stock
            # events that disagree with the real inventory on purpose, and a reconcile checking in_stock
            # against inventory "repaired" documents mid-test; the reconcile tests run it themselves
            "SHOPMESH_RECONCILE_FIRST_DELAY_SECONDS": "86400",
            # a test that writes an old-style document (no price_cents) sends every catalog_svc back
            # to the float price filters until its next check: keep that short (30 s by default)
            "SHOPMESH_PRICE_CENTS_CHECK_SECONDS": "0.5",
            # consumer groups of this session alone (a shared group name rebalances across sessions)
            "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-{suffix}",
            "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-{suffix}",
            # catalog: its own search alias and Valkey key namespace, away from `make run` data
            "SHOPMESH_SEARCH_INDEX_ALIAS": f"products-test-{suffix}",
            "SHOPMESH_CACHE_KEY_PREFIX": f"test-{suffix}:",
            **self.topics,
            **{ADDR_ENV[name]: f"127.0.0.1:{port}" for name, port in self.ports.items()},
        }
        self.procs: dict[str, ServiceProcess] = {}
        self._channels: dict[tuple[str, str, tuple[str, ...]], grpc.aio.Channel] = {}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def metrics_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[name]}/metrics"

    def env_for(self, name: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(self.env)
        if name in self.ports:
            env["SHOPMESH_GRPC_PORT"] = str(self.ports[name])
            env["SHOPMESH_METRICS_PORT"] = str(self.metrics_ports[name])
        env.update(extra_env or {})
        return env

    async def start(self, name: str, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        """Start a service (idempotent) and wait until it is healthy; fail with its log tail if not."""
        current = self.procs.get(name)
        if current is not None and current.running:
            return current
        if not (ROOT / name / "__main__.py").exists():
            pytest.fail(f"{name} has no __main__.py: it cannot be started")
        proc = ServiceProcess(name, self.env_for(name, extra_env), self.workdir / f"{name}.log")
        proc.spawn()
        self.procs[name] = proc
        await self._wait_healthy(proc)
        return proc

    async def _wait_healthy(self, proc: ServiceProcess) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not proc.running:
                pytest.fail(f"{proc.name} exited with {proc.proc and proc.proc.poll()}:\n{proc.log_tail()}")
            if await self._healthy(proc.name):
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"{proc.name} not healthy after {START_TIMEOUT}s:\n{proc.log_tail()}")

    async def _healthy(self, name: str) -> bool:
        if name == "gateway":
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{self.gateway_url}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False
        async with grpc.aio.insecure_channel(self.addr(name)) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def stop(self, name: str, timeout: float = 15.0) -> None:
        proc = self.procs.get(name)
        if proc is None or not proc.running:
            return
        proc.signal(signal.SIGTERM)
        if await proc.wait_exit(timeout) is None:
            proc.signal(signal.SIGKILL)
            await proc.wait_exit(5)

    async def kill(self, name: str) -> None:
        """SIGKILL: the crash case."""
        proc = self.procs.get(name)
        if proc is not None and proc.running:
            proc.signal(signal.SIGKILL)
            await proc.wait_exit(10)

    async def restart(self, name: str, extra_env: dict[str, str] | None = None) -> ServiceProcess:
        await self.stop(name)
        return await self.start(name, extra_env)

    def channel(self, name: str, subject: str = "test-user", roles: tuple[str, ...] = ()) -> grpc.aio.Channel:
        """A channel to a service whose calls carry an internal token for (subject, roles).

        Channels are cached (and so kept alive: a garbage-collected aio channel closes mid-call)."""
        key = (name, subject, tuple(roles))
        if key not in self._channels:
            minter = TokenMinter(self.internal_secret, Principal(subject, tuple(roles)))
            self._channels[key] = open_channel(
                self.addr(name), token_provider=minter.token, default_timeout=10.0, wait_for_ready=True
            )
        return self._channels[key]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        await asyncio.gather(*(self.stop(name) for name in list(self.procs)))


def delete_session_kafka_state(bootstrap: str, suffix: str) -> tuple[list[str], list[str]]:
    """Delete the topics and consumer groups whose names carry this session's suffix.

    A broker re-reads every partition it holds after an unclean stop: with each session's topics left
    behind, a Kafka restart after SIGKILL grew from seconds to 14-84 s. Services must be stopped first
    (a group with live members cannot be deleted). Returns (topics, groups) deleted.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","), client_id="shopmesh-test-cleanup", request_timeout_ms=30_000
    )
    try:
        topics = sorted(t for t in admin.list_topics() if suffix in t)
        if topics:
            admin.delete_topics(topics, timeout_ms=30_000, raise_errors=False)
        groups = sorted(g["group_id"] for g in admin.list_groups() if suffix in g["group_id"])
        if groups:
            admin.delete_groups(groups)
        return topics, groups
    finally:
        admin.close()


async def delete_mesh_state(the_mesh: Mesh, *, opensearch_url: str, bootstrap: str) -> None:
    """Drop what a mesh's services made outside its database, once they are stopped: its search
    indexes (catalog_svc made them; a benchmark's 1M-product index is over a gigabyte, and every
    index left behind keeps refreshing) and its topics and consumer groups. Best effort."""
    with contextlib.suppress(Exception):
        async with httpx.AsyncClient(timeout=30) as client:
            await client.delete(f"{opensearch_url}/{the_mesh.env['SHOPMESH_SEARCH_INDEX_ALIAS']}-*")
    with contextlib.suppress(Exception):
        await asyncio.to_thread(delete_session_kafka_state, bootstrap, the_mesh.suffix)


@pytest_asyncio.fixture(scope="session")
async def mesh(test_database: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    for package in SERVICE_SCHEMAS:
        if (ROOT / package / "migrations").is_dir():
            apply_migrations(test_database, package)
    workdir = tmp_path_factory.mktemp("mesh")
    the_mesh = Mesh(test_database, workdir)
    # the servers this run uses (infra exec exports them; defaults = make infra-up), for every service
    infra = load_settings(CommonSettings)
    bootstrap = infra.kafka_bootstrap
    the_mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"] = bootstrap
    the_mesh.env["SHOPMESH_VALKEY_URL"] = infra.valkey_url
    the_mesh.env["SHOPMESH_OPENSEARCH_URL"] = infra.opensearch_url
    await asyncio.to_thread(ensure_topics, bootstrap, list(the_mesh.topics.values()))
    try:
        yield the_mesh
    finally:
        with contextlib.suppress(Exception):
            await the_mesh.close()
        await delete_mesh_state(the_mesh, opensearch_url=infra.opensearch_url, bootstrap=bootstrap)
