"""The mixed flash-sale scenario, through the HTTP gateway, checked for correctness afterwards.

N virtual users (asyncio tasks sharing one pooled httpx.AsyncClient, each with its own JWT) browse
(search, product pages), add some of the same 20 hot SKUs to their carts and check out with an
Idempotency-Key, retrying the same key on 409 IDEMPOTENCY_KEY_IN_PROGRESS, 429, 5xx and timeouts.
The hot SKUs hold less stock than the users want, so INSUFFICIENT_STOCK must occur; a user who got
nothing tries again after thinking, a user with an order goes on browsing, and a few abandon their
cart. After the deadline bench/flash_sale_checks.py checks the databases and Kafka; its checks are
goals marked `correctness`, and `python -m bench` fails when one of them is not met.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
import resource
import time
import uuid
from typing import Any

import httpx
import jwt
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from bench.common import (
    bench_mesh,
    load_demo_catalog,
    own_consumer_groups,
    wait_for_search_index,
    write_result,
)
from bench.flash_sale_checks import Ack, verify
from tests.harness import Mesh

SEARCH_TERMS = (
    "laptop",
    "running shoes",
    "headphones",
    "coffee maker",
    "tent",
    "yoga mat",
    "mystery novel",
    "board game",
    "rain jacket",
    "monitor",
    "flash deal",
    "wireless keyboard",
)
SHIPPING = {
    "name": "Flash Buyer",
    "line1": "1 Sale Street",
    "city": "Springfield",
    "postalCode": "12345",
    "countryCode": "US",
}
RETRYABLE_REASONS = {"IDEMPOTENCY_KEY_IN_PROGRESS"}
MAX_ATTEMPTS = 6


@dataclasses.dataclass
class Sale:
    hot: dict[int, int]  # hot product id -> units received
    catalog_ids: list[int]


@dataclasses.dataclass
class Recorder:
    latencies: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    acks: list[Ack] = dataclasses.field(default_factory=list)
    retries: int = 0
    # (completion time, latency) of every HTTP request, for latency against load over the sale
    timed: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def add(self, kind: str, ms: float, outcome: str) -> None:
        self.latencies[kind].append(ms)
        self.outcomes[f"{kind} {outcome}"] += 1
        if kind != "checkout_with_retries":
            self.timed.append((time.monotonic(), ms))


def _reason(reply: httpx.Response) -> str:
    try:
        details = reply.json()["error"].get("details", [])
    except (ValueError, KeyError, AttributeError, TypeError):
        return ""
    return next((d.get("reason", "") for d in details if str(d.get("@type", "")).endswith("ErrorInfo")), "")


async def _call(
    client: httpx.AsyncClient, rec: Recorder, kind: str, method: str, url: str, **kwargs: Any
) -> tuple[int, str, httpx.Response | None]:
    """One HTTP request, timed; transport failures and timeouts are outcomes, not exceptions."""
    started = time.perf_counter()
    try:
        reply = await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        rec.add(kind, (time.perf_counter() - started) * 1000, "timeout")
        return 0, "timeout", None
    except httpx.TransportError as exc:
        rec.add(kind, (time.perf_counter() - started) * 1000, type(exc).__name__)
        return 0, type(exc).__name__, None
    reason = _reason(reply) if reply.status_code >= 400 else ""
    rec.add(kind, (time.perf_counter() - started) * 1000, f"{reply.status_code} {reason}".strip())
    return reply.status_code, reason, reply


def _retryable(status: int, reason: str) -> bool:
    return status == 0 or status == 429 or status >= 500 or (status == 409 and reason in RETRYABLE_REASONS)


async def _backoff(attempt: int, reply: httpx.Response | None) -> None:
    after = reply.headers.get("Retry-After") if reply is not None else None
    delay = float(after) if after and after.isdigit() else min(4.0, 0.2 * 2**attempt)
    await asyncio.sleep(delay * random.uniform(0.8, 1.2))


async def _add_to_cart(client: httpx.AsyncClient, rec: Recorder, auth: dict[str, str], product: int) -> str:
    """Add one unit; the same requestId on every retry, so a retried add is applied once."""
    body = {"productId": str(product), "quantity": 1, "requestId": str(uuid.uuid4())}
    for attempt in range(MAX_ATTEMPTS):
        status, reason, reply = await _call(
            client, rec, "add_to_cart", "POST", "/v1/cart/items", json=body, headers=auth
        )
        if status == 200:
            return "ok"
        if not _retryable(status, reason):
            return reason or str(status)
        rec.retries += 1
        await _backoff(attempt, reply)
    return "gave_up"


async def _checkout(client: httpx.AsyncClient, rec: Recorder, user: str, auth: dict[str, str]) -> str:
    """Check out with one Idempotency-Key, retried as it is until a final answer."""
    key = str(uuid.uuid4())
    headers = {**auth, "Idempotency-Key": key}
    body = {"shippingAddress": SHIPPING, "paymentToken": "tok_approve"}
    started = time.perf_counter()
    outcome = "gave_up"
    for attempt in range(MAX_ATTEMPTS):
        status, reason, reply = await _call(
            client, rec, "checkout", "POST", "/v1/orders", json=body, headers=headers
        )
        if status == 201 and reply is not None:
            rec.acks.append(Ack(user=user, key=key, order_id=reply.json()["order"]["id"]))
            outcome = "201"
            break
        if not _retryable(status, reason):
            outcome = f"{status} {reason}".strip()
            break
        rec.retries += 1
        await _backoff(attempt, reply)
    rec.add("checkout_with_retries", (time.perf_counter() - started) * 1000, outcome)
    return outcome


async def _virtual_user(
    client: httpx.AsyncClient,
    rec: Recorder,
    sale: Sale,
    *,
    user: str,
    token: str,
    deadline: float,
    think_s: float,
    abandon_ratio: float,
) -> None:
    rng = random.Random(user)
    auth = {"Authorization": f"Bearer {token}"}
    hot = list(sale.hot)
    bought = abandoned = False

    async def think() -> None:
        await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))

    await asyncio.sleep(rng.uniform(0, think_s))  # users arrive over the first second, not at once
    while time.monotonic() < deadline:
        await _call(
            client,
            rec,
            "search",
            "GET",
            "/v1/products:search",
            params={"q": rng.choice(SEARCH_TERMS)},
            headers=auth,
        )
        await _call(
            client, rec, "product", "GET", f"/v1/products/{rng.choice(sale.catalog_ids)}", headers=auth
        )
        if bought or abandoned:
            await think()
            continue
        await _call(client, rec, "product", "GET", f"/v1/products/{rng.choice(hot)}", headers=auth)
        await think()
        if time.monotonic() >= deadline:
            break
        wanted = rng.sample(hot, 2 if rng.random() < 0.3 else 1)
        added = [p for p in wanted if await _add_to_cart(client, rec, auth, p) == "ok"]
        if not added:
            await think()
            continue
        if rng.random() < abandon_ratio:
            abandoned = True  # leaves the reservation to expire
            continue
        await think()
        outcome = await _checkout(client, rec, user, auth)
        bought = outcome == "201"
        if not bought:
            await _call(client, rec, "clear_cart", "DELETE", "/v1/cart", headers=auth)


def _user_token(mesh: Mesh, user: str, ttl_s: int, roles: tuple[str, ...] = ()) -> str:
    """A JWT the mesh's gateway accepts (its claims: sub, roles, aud, iat, exp)."""
    now = int(time.time())
    claims = {"sub": user, "roles": list(roles), "aud": "shopmesh", "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, mesh.jwt_secret, algorithm="HS256")


async def _create_hot_skus(
    mesh: Mesh, client: httpx.AsyncClient, *, count: int, stock_per_sku: int
) -> dict[int, int]:
    admin = {"Authorization": f"Bearer {_user_token(mesh, 'flash-admin', 3600, ('admin',))}"}
    inventory = inventory_pb2_grpc.InventoryServiceStub(
        mesh.channel("inventory_svc", "flash-setup", ("service",))
    )
    hot: dict[int, int] = {}
    for i in range(count):
        product = {
            "sellerId": "1",
            "title": f"Flash Deal Headphones #{i} {mesh.suffix}",
            "brand": "Sonara",
            "description": "Limited stock flash deal.",
            "categoryId": "0",
            "price": {"currencyCode": "USD", "units": str(49 + i), "nanos": 990000000},
        }
        reply = await client.post("/v1/products", json=product, headers=admin)
        reply.raise_for_status()
        product_id = int(reply.json()["product"]["id"])
        east = stock_per_sku // 2 + stock_per_sku % 2  # both warehouses: reservations may split
        for warehouse, units in ((1, east), (2, stock_per_sku - east)):
            if units:
                await inventory.ReceiveStock(
                    inventory_pb2.ReceiveStockRequest(
                        product_id=product_id,
                        warehouse_id=warehouse,
                        quantity=units,
                        reference="flash sale",
                        request_id=str(uuid.uuid4()),
                    )
                )
        hot[product_id] = stock_per_sku
    return hot


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize(rec: Recorder, load_s: float) -> list[dict[str, Any]]:
    rows = []
    for kind, values in rec.latencies.items():
        rows.append(
            {
                "request": kind,
                "count": len(values),
                "per_s": round(len(values) / load_s, 1),
                "p50_ms": round(percentile(values, 0.50), 1),
                "p99_ms": round(percentile(values, 0.99), 1),
                "p99_9_ms": round(percentile(values, 0.999), 1),
            }
        )
    return sorted(rows, key=lambda r: -r["count"])


def timeline(rec: Recorder, *, windows: int = 20) -> list[dict[str, float]]:
    """Requests per second and latency percentiles per time window of the sale."""
    if not rec.timed:
        return []
    start = min(t for t, _ in rec.timed)
    width = max(1.0, (max(t for t, _ in rec.timed) - start) / windows)
    buckets: dict[int, list[float]] = collections.defaultdict(list)
    for t, ms in rec.timed:
        buckets[int((t - start) // width)].append(ms)
    return [
        {
            "t_s": round((i + 1) * width, 1),
            "per_s": round(len(v) / width, 1),
            "p50_ms": round(percentile(v, 0.5), 1),
            "p99_ms": round(percentile(v, 0.99), 1),
        }
        for i, v in sorted(buckets.items())
    ]


async def drive(
    mesh: Mesh,
    sale: Sale,
    *,
    users: int,
    duration_s: float,
    think_s: float,
    abandon_ratio: float,
    max_connections: int,
) -> tuple[Recorder, float, float]:
    """Run the virtual users until the deadline (plus their last in-flight requests); returns the
    recorder, the load's wall time and the driver's own CPU seconds."""
    rec = Recorder()
    # idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under our feet
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=2.0
    )
    timeout = httpx.Timeout(30.0, connect=10.0, pool=60.0)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    deadline = started + duration_s
    async with httpx.AsyncClient(base_url=mesh.gateway_url, limits=limits, timeout=timeout) as client:
        ttl = int(duration_s) + 900
        await asyncio.gather(
            *(
                _virtual_user(
                    client,
                    rec,
                    sale,
                    user=f"flash-{mesh.suffix}-{i}",
                    token=_user_token(mesh, f"flash-{mesh.suffix}-{i}", ttl),
                    deadline=deadline,
                    think_s=think_s,
                    abandon_ratio=abandon_ratio,
                )
                for i in range(users)
            )
        )
    wall = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return rec, wall, (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)


async def prepare(mesh: Mesh, *, products: int, hot_skus: int, stock_per_sku: int) -> tuple[Sale, dict]:
    """Services, gateway, demo catalog, hot SKUs with stock, and a caught-up search index."""
    mesh.env.update(own_consumer_groups(mesh))
    mesh.env["SHOPMESH_RATE_LIMIT_KEY_PREFIX"] = f"bench:{mesh.suffix}"
    for name in ("catalog_svc", "inventory_svc", "order_svc", "gateway"):
        await mesh.start(name)
    loaded = await load_demo_catalog(mesh, products=products)
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30.0) as client:
        hot = await _create_hot_skus(mesh, client, count=hot_skus, stock_per_sku=stock_per_sku)
    indexed = await wait_for_search_index(mesh, expected=products + hot_skus)
    return Sale(hot=hot, catalog_ids=list(range(1, products + 1))), {**loaded, "indexed": indexed}


async def run(
    *,
    users: int = 1000,
    duration_s: float = 75.0,
    products: int = 2000,
    hot_skus: int = 20,
    stock_per_sku: int | None = None,
    think_s: float = 1.0,
    abandon_ratio: float = 0.1,
    max_connections: int = 500,
) -> dict:
    stock = stock_per_sku or max(1, users // (2 * hot_skus))  # about half a unit per user
    async with bench_mesh() as mesh:
        sale, loaded = await prepare(mesh, products=products, hot_skus=hot_skus, stock_per_sku=stock)
        print(
            f"flash sale: {users} users for {duration_s:.0f} s on {hot_skus} hot SKUs x {stock} units "
            f"(catalog {loaded['seconds']} s, {loaded['indexed']} indexed)",
            flush=True,
        )
        rec, wall, driver_cpu = await drive(
            mesh,
            sale,
            users=users,
            duration_s=duration_s,
            think_s=think_s,
            abandon_ratio=abandon_ratio,
            max_connections=min(max_connections, users),
        )
        print(
            f"flash sale: load done in {wall:.0f} s, {len(rec.acks)} orders acknowledged; checking",
            flush=True,
        )
        goals, details = await verify(mesh, hot=sale.hot, acks=rec.acks, outcomes=rec.outcomes)
    total = sum(len(v) for kind, v in rec.latencies.items() if kind != "checkout_with_retries")
    return {
        "title": f"Flash sale through the gateway ({users} virtual users, {hot_skus} hot SKUs)",
        "rows": summarize(rec, wall),
        "timeline": timeline(rec),
        "throughput": {
            "http_requests_per_s": round(total / wall, 1),
            "orders_acknowledged": len(rec.acks),
            "orders_per_s": round(len(rec.acks) / wall, 2),
            "retries": rec.retries,
            "load_seconds": round(wall, 1),
            "driver_cpu_cores": round(driver_cpu / wall, 2),
        },
        "error_mix": dict(sorted(rec.outcomes.items(), key=lambda kv: -kv[1])),
        "checks": details,
        "commands": {"scenario": f"python -m bench.flash_sale users={users} duration_s={duration_s:.0f}"},
        "goals": goals,
        "notes": [
            f"{users} virtual users (think time {think_s} s, {abandon_ratio:.0%} abandon their cart) against "
            f"{hot_skus} hot SKUs with {stock} units each ({hot_skus * stock} units in all, split over two "
            f"warehouses), a demo catalog of {products} products to browse. Every request goes through the "
            "gateway with the user's JWT and the gateway's default rate limits (per user).",
            f"The load generator runs on the same 2 cores: it used {driver_cpu / wall:.2f} cores on average.",
            "checkout = each attempt; checkout_with_retries = from the first attempt to the final answer.",
        ],
    }


def main(users: int = 1000, duration_s: float = 75.0, products: int = 2000) -> dict:
    result = asyncio.run(run(users=users, duration_s=duration_s, products=products))
    write_result("flash_sale", result)
    return result


if __name__ == "__main__":
    import sys

    args = dict(arg.split("=", 1) for arg in sys.argv[1:])
    main(
        users=int(args.get("users", 1000)),
        duration_s=float(args.get("duration_s", 75.0)),
        products=int(args.get("products", 2000)),
    )
