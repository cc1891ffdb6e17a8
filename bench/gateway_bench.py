"""The HTTP gateway's cost, measured in one run on the same mesh:

GET product through the gateway (wrk, one thread) against the same GetProduct made directly over gRPC
(ghz, one CPU), at the same concurrencies and over one connection each; then the gateway with two
worker processes; then checkout through the gateway (a Python async HTTP driver: each checkout needs
its own user and cart, which wrk cannot vary cheaply).

Each row also records the gateway's CPU time per request (utime+stime of its process over the wrk
run, or over the checkouts, divided by the requests): on a shared machine latency swings with the
neighbours' load, CPU per request much less.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import time
import uuid

import httpx
import jwt
import psycopg

from bench.common import bench_mesh, internal_token, run_ghz, write_result
from tests.harness import Mesh

CONCURRENCY = (1, 16, 64)
GENEROUS_BUCKETS = "browse=1000000/1000000,cart=1000000/1000000,orders=1000000/1000000,checkout=1000000/1000000,admin=1000000/1000000"
SHIPPING = {
    "name": "Bench",
    "line1": "1 Load St",
    "city": "Testville",
    "postalCode": "12345",
    "countryCode": "US",
}


@dataclasses.dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    requests: int
    command: str


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, *, concurrency: int, duration_s: int, threads: int = 1) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is missing: install the Debian package `wrk`")
    args = [wrk, f"-t{threads}", f"-c{concurrency}", f"-d{duration_s}s", "--latency", url]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([0-9.]+(?:us|ms|s|m))\s*$", out, flags=re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        command=f"wrk -t{threads} -c{concurrency} -d{duration_s}s --latency <gateway>/v1/products/<id>",
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bearer(mesh: Mesh, user: str, *roles: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user, "roles": list(roles), "aud": "shopmesh", "iat": now, "exp": now + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, mesh.jwt_secret, algorithm='HS256')}"}


async def _product(mesh: Mesh, client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        seller = conn.execute(
            "INSERT INTO catalog.sellers (name) VALUES ('bench seller') RETURNING id"
        ).fetchone()
    product = {
        "sellerId": str(seller[0]),  # type: ignore[index]
        "title": "Bench product",
        "price": {"currencyCode": "USD", "units": "19", "nanos": 990000000},
    }
    reply = (await client.post("/v1/products", json=product, headers=admin)).raise_for_status()
    product_id = reply.json()["product"]["id"]
    adjust = {"warehouseId": "1", "delta": 1_000_000}
    (
        await client.post(f"/v1/products/{product_id}/stock:adjust", json=adjust, headers=admin)
    ).raise_for_status()
    return product_id


async def _checkouts(
    mesh: Mesh, client: httpx.AsyncClient, product_id: str, *, count: int, concurrency: int, gateway_pid: int
) -> dict:
    users = [_bearer(mesh, f"bench-{uuid.uuid4().hex[:10]}") for _ in range(count)]
    semaphore = asyncio.Semaphore(16)

    async def fill(user: dict[str, str]) -> None:
        async with semaphore:
            body = {"productId": product_id, "quantity": 1}
            (await client.post("/v1/cart/items", json=body, headers=user)).raise_for_status()

    await asyncio.gather(*(fill(user) for user in users))
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for user in users:
        queue.put_nowait(user)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        while not queue.empty():
            user = queue.get_nowait()
            headers = {**user, "Idempotency-Key": uuid.uuid4().hex}
            started = time.perf_counter()
            reply = await client.post("/v1/orders", json={"shippingAddress": SHIPPING}, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1

    started = time.perf_counter()
    cpu_before = cpu_seconds(gateway_pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_ms = (cpu_seconds(gateway_pid) - cpu_before) * 1000
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "concurrency": concurrency,
        "checkouts": count,
        "per_s": round(count / elapsed, 1),
        "p50_ms": round(cuts[49], 1),
        "p99_ms": round(cuts[98], 1),
        "gateway_cpu_ms_per_checkout": round(cpu_ms / count, 3),
        "statuses": statuses,
    }


async def run(
    *, duration_s: int = 6, concurrency: tuple[int, ...] = CONCURRENCY, checkouts: int = 150
) -> dict:
    env = {"SHOPMESH_RATE_LIMITS": GENEROUS_BUCKETS}
    async with bench_mesh(extra_env=env) as mesh:
        for service in ("catalog_svc", "inventory_svc", "order_svc", "gateway"):
            await mesh.start(service)
        gateway_pid = mesh.procs["gateway"].proc.pid  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=60) as client:
            admin = _bearer(mesh, "bench-admin", "admin")
            product_id = await _product(mesh, client, admin)
            token = internal_token(mesh.internal_secret, "anonymous", ("anonymous",))
            url = f"{mesh.gateway_url}/v1/products/{product_id}"
            rows, commands = [], {}
            for c in concurrency:
                direct = await asyncio.to_thread(
                    run_ghz,
                    call="shop.catalog.v1.CatalogService.GetProduct",
                    address=mesh.addr("catalog_svc"),
                    proto="shop/catalog/v1/catalog.proto",
                    data={"product_id": product_id},
                    token=token,
                    concurrency=c,
                    duration_s=duration_s,
                )
                cpu_before = cpu_seconds(gateway_pid)
                via = await asyncio.to_thread(run_wrk, url, concurrency=c, duration_s=duration_s)
                gateway_cpu_ms = (cpu_seconds(gateway_pid) - cpu_before) * 1000
                rows.append(
                    {
                        "concurrency": c,
                        "grpc_rps": round(direct.rps),
                        "grpc_p50_ms": round(direct.p50_ms, 2),
                        "grpc_p99_ms": round(direct.p99_ms, 2),
                        "gateway_rps": round(via.rps),
                        "gateway_p50_ms": round(via.p50_ms, 2),
                        "gateway_p99_ms": round(via.p99_ms, 2),
                        "throughput_ratio": round(via.rps / direct.rps, 2),
                        "added_p50_ms": round(via.p50_ms - direct.p50_ms, 2),
                        "gateway_cpu_ms_per_request": round(gateway_cpu_ms / max(via.requests, 1), 3),
                        "errors": {**direct.errors, **({"non_2xx": via.non_2xx} if via.non_2xx else {})},
                    }
                )
                print(f"gateway c={c}: grpc {direct.rps:.0f} rps p50 {direct.p50_ms:.2f} ms | "
                      f"http {via.rps:.0f} rps p50 {via.p50_ms:.2f} ms, "
                      f"{gateway_cpu_ms / max(via.requests, 1):.3f} ms gateway CPU/request", flush=True)  # fmt: skip
                commands = {"grpc": direct.command, "gateway": via.command}
            checkout_rows = [
                await _checkouts(
                    mesh, client, product_id, count=checkouts, concurrency=k, gateway_pid=gateway_pid
                )
                for k in (1, 16)
            ]
        await mesh.restart("gateway", extra_env={"SHOPMESH_WORKERS": "2"})
        top = max(concurrency)
        two = await asyncio.to_thread(run_wrk, url, concurrency=top, duration_s=duration_s, threads=1)
    low, high = rows[0], rows[-1]
    goals = [
        {
            "goal": f"gateway throughput >= 50% of direct gRPC (c={high['concurrency']})",
            "measured": f"{high['throughput_ratio']:.2f}x",
            "met": high["throughput_ratio"] >= 0.5,
        },
        {
            "goal": f"added p50 latency <= 2 ms (c={low['concurrency']})",
            "measured": f"{low['added_p50_ms']:.2f} ms",
            "met": low["added_p50_ms"] <= 2.0,
        },
    ]
    result = {
        "title": "HTTP gateway: GET product via the gateway vs direct gRPC, and checkout",
        "rows": rows,
        "workers": {
            "gateway_workers": 2,
            "concurrency": top,
            "gateway_rps": round(two.rps),
            "gateway_p50_ms": round(two.p50_ms, 2),
            "vs_direct_grpc_1_worker": round(two.rps / high["grpc_rps"], 2),
        },
        "checkout": checkout_rows,
        "goals": goals,
        "commands": commands,
        "notes": [
            "Checkout through the gateway (each a fresh user with one cart line; Python httpx driver): "
            + "; ".join(
                f"{r['concurrency']} concurrent: {r['per_s']}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                f"gateway CPU {r['gateway_cpu_ms_per_checkout']} ms/checkout, statuses {r['statuses']}"
                for r in checkout_rows
            ),
            "Services run with SHOPMESH_LOG_LEVEL=WARNING (bench_mesh), so the gateway writes no access log "
            "lines here; rate limiting stays on (one Valkey round trip per request) with generous buckets.",
        ],
    }
    write_result("gateway", result)
    return result


def main(**kwargs: object) -> dict:
    return asyncio.run(run(**kwargs))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
