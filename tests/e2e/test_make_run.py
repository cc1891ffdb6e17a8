"""`make run` (python -m infra run-mesh) brings the whole mesh up, every gRPC service answers SERVING to
a real grpcurl health check, the gateway answers /healthz, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import contextlib
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

from infra.procs import is_running
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


def _run_mesh_env(database_url: str) -> tuple[dict[str, str], dict[str, int], int]:
    """Environment for a run-mesh of its own (database, ports, topics, index, cache keys), with its
    gRPC ports and the gateway's port."""
    grpc_ports = {name: free_port() for name in SERVICES}
    gateway_port = free_port()
    suffix = secrets.token_hex(4)
    env = {
        **os.environ,
        "SHOPMESH_DATABASE_URL": database_url,
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
    return env, grpc_ports, gateway_port


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_run_mesh(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """run-mesh started the way a script's background job (`make run &`) starts it: with SIGINT
    ignored, which Python then leaves ignored unless the program installs its own handler. Returns
    once it prints "mesh: running"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra", "run-mesh"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_ignore_sigint,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not any("mesh: running" in line for line in output):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(timeout=30)
            pytest.fail("run-mesh exited early or not ready in 240 s:\n" + "".join(output[-40:]))
        time.sleep(0.5)
    return proc, output


def test_make_run_serves_every_service_and_stops_on_ctrl_c(run_database):
    assert GRPCURL.exists(), "grpcurl missing: run `make install` (infra/tools.sh installs it)"
    env, grpc_ports, gateway_port = _run_mesh_env(run_database)
    proc, output = _start_run_mesh(env)
    try:
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
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            _kill_services(list(_services(output)))
            pytest.fail("run-mesh ignored Ctrl-C for 90 s:\n" + "".join(output[-40:]))
    assert code == 0, "".join(output[-40:])
    assert "mesh: stopped" in "".join(output)
    for name, port in [*grpc_ports.items(), ("gateway", gateway_port)]:
        assert not _port_open(port), f"{name} still listening on {port} after Ctrl-C"


def test_services_do_not_outlive_a_killed_run_mesh(run_database):
    """SIGKILL gives run-mesh no chance to stop its services (they run in sessions of their own, out
    of reach of the terminal's Ctrl-C); the kernel's parent-death signal must stop them instead."""
    env, grpc_ports, gateway_port = _run_mesh_env(run_database)
    proc, output = _start_run_mesh(env)
    services = _services(output)
    assert len(services) == len(SERVICES) + 1, "".join(output[-40:])
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 60  # each service's graceful shutdown, at most its grace period
    alive = [pid for pid, package in services.items() if is_running(pid, package)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [pid for pid, package in services.items() if is_running(pid, package)]
    _kill_services(alive)  # leave nothing behind for the next test, then fail
    assert not alive, f"services {alive} still running 60 s after run-mesh was killed"
    for name, port in [*grpc_ports.items(), ("gateway", gateway_port)]:
        assert not _port_open(port), f"{name} still listening on {port}"


def _services(output: list[str]) -> dict[int, str]:
    """pid -> package of what run-mesh printed as "mesh: started <package> (pid N), log ..."."""
    started = [line.split() for line in output if line.startswith("mesh: started ")]
    return {int(words[4].rstrip("),")): words[2] for words in started}


def _kill_services(pids: list[int]) -> None:
    for pid in pids:  # each service leads a process group of its own (its workers included)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
