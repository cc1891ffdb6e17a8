"""`make run` (python -m infra run-mesh) brings the whole mesh up, every gRPC service answers SERVING to
a real grpcurl health check, the gateway answers /healthz, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest

from meshkit.migrate import ROOT
from tests.harness import free_port

GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
SERVICES = ("catalog", "inventory", "order")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_database(infra_endpoints):
    name = f"shopmesh_run_{secrets.token_hex(4)}"
    with psycopg.connect(infra_endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield infra_endpoints.database_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(infra_endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_make_run_serves_every_service_and_stops_on_ctrl_c(run_database):
    assert GRPCURL.exists(), "grpcurl missing: run `make install` (infra/tools.sh installs it)"
    grpc_ports = {name: free_port() for name in SERVICES}
    gateway_port = free_port()
    suffix = secrets.token_hex(4)
    env = {
        **os.environ,
        "SHOPMESH_DATABASE_URL": run_database,
        "SHOPMESH_GATEWAY_PORT": str(gateway_port),
        "SHOPMESH_INTERNAL_TOKEN_SECRET": secrets.token_hex(16),
        "SHOPMESH_TOPIC_INVENTORY_EVENTS": f"inventory-events-run-{suffix}",
        "SHOPMESH_TOPIC_ORDER_EVENTS": f"order-events-run-{suffix}",
        "SHOPMESH_TOPIC_CATALOG_EVENTS": f"catalog-events-run-{suffix}",
        "SHOPMESH_TEST_SUFFIX": f"run{suffix}",
        "SHOPMESH_CACHE_KEY_PREFIX": f"run{suffix}:",
        "SHOPMESH_SEARCH_INDEX_ALIAS": f"products-run-{suffix}",
        "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-run-{suffix}",
        "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-run-{suffix}",
        "SHOPMESH_DEMO_PRODUCTS": "150",  # the step runs; a small catalog keeps the test short
    }
    for name, port in grpc_ports.items():
        env[f"SHOPMESH_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
        env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra", "run-mesh"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("mesh: running" in line for line in output):
            assert proc.poll() is None, "run-mesh exited early:\n" + "".join(output[-40:])
            assert time.monotonic() < deadline, "run-mesh not ready in 240 s:\n" + "".join(output[-40:])
            time.sleep(0.5)
        for name, port in grpc_ports.items():
            check = subprocess.run(
                [str(GRPCURL), "-plaintext", "-d", "{}", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert check.returncode == 0, f"{name}: {check.stderr}"
            assert '"status": "SERVING"' in check.stdout, f"{name}: {check.stdout}"
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/healthz", timeout=5).status_code == 200
        listed = httpx.get(f"http://127.0.0.1:{gateway_port}/v1/products?page_size=5", timeout=10)
        assert listed.status_code == 200 and len(listed.json().get("products", [])) == 5, listed.text
        assert any("demo user token" in line.lower() or "admin" in line.lower() for line in output)
        table = "".join(output)
        for name, port in grpc_ports.items():
            assert f"127.0.0.1:{port}" in table, f"{name}'s address is not printed"
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(timeout=90)
    assert code == 0, "".join(output[-40:])
    assert "mesh: stopped" in "".join(output)
    for name, port in [*grpc_ports.items(), ("gateway", gateway_port)]:
        assert not _port_open(port), f"{name} still listening on {port} after Ctrl-C"
