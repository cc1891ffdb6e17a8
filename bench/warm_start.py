"""Warm start: `python -m infra run-mesh` (what `make run` runs, minus `make install`) until every
service is healthy, i.e. until it prints "mesh: running".

Two set-ups, each started twice (the first start does one-time work, the second is the warm one):
- services only: the shared infrastructure is already running; a throwaway database, free ports and
  this run's own topics, search alias, cache prefix and consumer groups (as tests/e2e/test_make_run.py).
  The first start applies the migrations, the second finds none pending.
- whole stack: a second, independent infrastructure on free ports, with its own data folder and a
  copy of the artifact cache (.cache/kafka, .cache/opensearch), so nothing is downloaded. The first
  start initialises the data folder (initdb, Kafka storage format), the second is `make run` on a
  machine where it has run before. Ctrl-C (SIGINT) stops the services and that infrastructure.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import write_result
from meshkit.migrate import ROOT
from meshkit.settings import CommonSettings, load_settings
from tests.harness import free_port  # below the ephemeral range, like the tests

SERVICES = ("catalog", "inventory", "order")
SERVER_ENV = (
    "SHOPMESH_DATABASE_URL",
    "SHOPMESH_VALKEY_URL",
    "SHOPMESH_KAFKA_BOOTSTRAP",
    "SHOPMESH_OPENSEARCH_URL",
)


def _mesh_env(suffix: str) -> dict[str, str]:
    """Free ports and names of this run only, for the services run-mesh starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPMESH_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",  # the phase timestamps are taken when lines arrive
            "SHOPMESH_GATEWAY_PORT": str(free_port()),
            "SHOPMESH_INTERNAL_TOKEN_SECRET": secrets.token_hex(16),
            "SHOPMESH_TOPIC_INVENTORY_EVENTS": f"inventory-events-warm-{suffix}",
            "SHOPMESH_TOPIC_ORDER_EVENTS": f"order-events-warm-{suffix}",
            "SHOPMESH_TOPIC_CATALOG_EVENTS": f"catalog-events-warm-{suffix}",
            "SHOPMESH_TEST_SUFFIX": f"warm{suffix}",
            "SHOPMESH_SEARCH_INDEX_ALIAS": f"products-warm-{suffix}",
            "SHOPMESH_CACHE_KEY_PREFIX": f"warm-{suffix}:",
            "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-warm-{suffix}",
            "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-warm-{suffix}",
            "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"warm:{suffix}",
            "SHOPMESH_ORDER_ARCHIVE_DIR": str(
                Path(tempfile.gettempdir()) / f"shopmesh-warm-archive-{suffix}"
            ),
        }
    )
    for name in SERVICES:
        env[f"SHOPMESH_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
        env[f"SHOPMESH_{name.upper()}_METRICS_PORT"] = str(free_port())
    return env


def time_run_mesh(env: dict[str, str], *, timeout_s: float) -> dict[str, Any]:
    """Start run-mesh, time its phases until "mesh: running", then Ctrl-C it and time the stop."""
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra", "run-mesh"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic() - started, line.rstrip()) for line in proc.stdout),
        daemon=True,
    )
    reader.start()

    def first(pattern: str) -> float | None:
        return next((t for t, line in list(lines) if re.search(pattern, line)), None)

    try:
        while first(r"^mesh: running") is None:
            if proc.poll() is not None or time.monotonic() - started > timeout_s:
                tail = "\n".join(line for _, line in lines[-30:])
                raise RuntimeError(f"run-mesh not running after {time.monotonic() - started:.0f} s:\n{tail}")
            time.sleep(0.05)
    finally:
        stop_at = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        reader.join(timeout=5)
    if code != 0:
        raise RuntimeError(
            f"run-mesh exited with {code} after Ctrl-C:\n" + "\n".join(text for _, text in lines[-30:])
        )
    healthy = first(r"^infra: all of .* healthy")
    return {
        "infra_ready_s": round(healthy, 1) if healthy is not None else None,
        "first_service_started_s": round(first(r"^mesh: started ") or 0, 1),
        "all_healthy_s": round(first(r"^mesh: running") or 0, 1),
        "stop_s": round(time.monotonic() - stop_at, 1),
    }


def _services_only(*, timeout_s: float) -> list[dict[str, Any]]:
    admin_url = load_settings(CommonSettings).database_url
    name = f"shopmesh_warm_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = _mesh_env(secrets.token_hex(4))
        env["SHOPMESH_DATABASE_URL"] = admin_url.rsplit("/", 1)[0] + f"/{name}"
        for key in SERVER_ENV[1:]:
            if key in os.environ:
                env[key] = os.environ[key]
        return [
            {
                "setup": "services only (infrastructure running)",
                "start": label,
                **time_run_mesh(env, timeout_s=timeout_s),
            }
            for label in ("first: fresh database, migrations applied", "warm: database migrated")
        ]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _whole_stack(*, timeout_s: float) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="shopmesh-warm-"))
    env = _mesh_env(secrets.token_hex(4))  # without SERVER_ENV: run-mesh points services at this stack
    env.update(
        {
            "SHOPMESH_INFRA_DATA_DIR": str(workdir / "data"),
            "SHOPMESH_INFRA_CACHE_DIR": str(workdir / "cache"),
            "SHOPMESH_PG_PORT": str(free_port()),
            "SHOPMESH_VALKEY_PORT": str(free_port()),
            "SHOPMESH_KAFKA_PORT": str(free_port()),
            "SHOPMESH_KAFKA_CONTROLLER_PORT": str(free_port()),
            "SHOPMESH_OPENSEARCH_PORT": str(free_port()),
            "SHOPMESH_OPENSEARCH_TRANSPORT_PORT": str(free_port()),
        }
    )
    try:
        copied = time.monotonic()
        for folder in ("kafka", "opensearch"):
            shutil.copytree(ROOT / ".cache" / folder, workdir / "cache" / folder, symlinks=True)
        copy_s = round(time.monotonic() - copied, 1)
        rows = []
        for label in ("first: empty data folder (initdb, Kafka format)", "warm: data folder kept"):
            rows.append(
                {
                    "setup": "whole stack (second infrastructure)",
                    "start": label,
                    **time_run_mesh(env, timeout_s=timeout_s),
                }
            )
        rows[0]["cache_copy_s"] = copy_s
        return rows
    finally:
        # run-mesh stops what it started; this is the safety net if it could not
        subprocess.run(
            [sys.executable, "-m", "infra", "down"], env=env, cwd=ROOT, capture_output=True, check=False
        )
        shutil.rmtree(workdir, ignore_errors=True)


def run(*, whole_stack: bool = True, timeout_s: float = 300.0) -> dict:
    rows = _services_only(timeout_s=timeout_s)
    if whole_stack:
        rows += _whole_stack(timeout_s=timeout_s)
    for row in rows:
        print(
            f"warm start {row['setup']} / {row['start']}: healthy after {row['all_healthy_s']} s", flush=True
        )
    warm = [r for r in rows if r["start"].startswith("warm")]
    slowest = max(warm, key=lambda r: r["all_healthy_s"])
    return {
        "title": "Warm start: `make run` until every service is healthy",
        "rows": rows,
        "commands": {"start": "python -m infra run-mesh  (then Ctrl-C)"},
        "goals": [],  # the issue sets no time for it: measured and reported only
        "notes": [
            "Columns are seconds since the command started: infra_ready_s when PostgreSQL, Valkey, Kafka and "
            "OpenSearch all answer (checks only when they already run), first_service_started_s after the "
            "migrations, all_healthy_s when every gRPC service answers SERVING and the gateway /healthz "
            "(`mesh: running`); stop_s is Ctrl-C until the command exited.",
            f"The slowest warm start was {slowest['all_healthy_s']} s ({slowest['setup']}).",
        ],
    }


def main(whole_stack: bool = True) -> dict:
    result = run(whole_stack=whole_stack)
    write_result("warm_start", result)
    return result


if __name__ == "__main__":
    main(whole_stack="services_only" not in sys.argv[1:])
