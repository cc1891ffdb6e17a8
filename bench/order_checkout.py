"""Checkout end to end over gRPC (add to cart, then checkout) against the database's limit.

ours: N concurrent shoppers, each in a loop: AddCartItem (reserve through inventory_svc), then
  Checkout with a fresh idempotency key (price via catalog_svc, extend + commit via inventory_svc,
  sandbox payment, PAID, cart cleared, events through the outbox). Every server on this machine.
limit: pgbench running the bare SQL of one checkout (order insert, line insert, stock update) at
  the same concurrency: what PostgreSQL alone allows. The ratio ours/limit is the cost of the mesh.
Afterwards every order is checked PAID, with one capture each, and stock moved once per order.
At the goal levels (8 and 32 clients) ours and the pgbench limit run in 3 interleaved rounds and each
figure is the median; every round also records the CPU per checkout of each service, of PostgreSQL
and of the whole machine, which is what bounds the rate on two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import time
import uuid
from collections import Counter

import grpc
import psycopg
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.common.v1 import address_pb2, money_pb2
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from bench.common import (
    PG_BIN,
    bench_mesh,
    closed_loop_floor_note,
    internal_token,
    process_cpu_seconds,
    process_tree,
    run_pgbench,
    write_result,
)
from infra.control import Infra
from infra.settings import load_infra_settings
from meshkit.auth import INTERNAL_TOKEN_HEADER
from meshkit.migrate import ROOT

CONCURRENCY = (8, 32, 64)
GOAL_LEVELS = (8, 32)  # throughput is best at 8 clients, the p99 goal is read at 32
# interleaved (ours, pgbench, ours, ...) and medians, so one noisy minute cannot decide a goal
ROUNDS_AT_GOAL_LEVELS = 3
PRODUCTS = 100
PGBENCH_DIR = ROOT / "bench" / "pgbench"
ADDRESS = address_pb2.Address(
    name="Bench", line1="1 Road", city="London", postal_code="N1", country_code="GB"
)
# the servers get the machine; quiet logs, and no background jobs competing during the runs
ENV = {
    "SHOPMESH_EXPIRY_INTERVAL_SECONDS": "3600",
    "SHOPMESH_INVARIANT_CHECK_INTERVAL_SECONDS": "3600",
    "SHOPMESH_RECOVERY_INTERVAL_SECONDS": "3600",
    "SHOPMESH_DB_POOL_MAX": "40",
}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _products(mesh) -> list[int]:
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        seller = conn.execute(
            "INSERT INTO catalog.sellers (name) VALUES ('bench-seller') ON CONFLICT (name)"
            " DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ).fetchone()[0]
    catalog = catalog_pb2_grpc.CatalogServiceStub(mesh.channel("catalog_svc", "bench-admin", ("admin",)))
    inventory = inventory_pb2_grpc.InventoryServiceStub(
        mesh.channel("inventory_svc", "bench-admin", ("admin",))
    )
    ids = []
    for n in range(PRODUCTS):
        created = await catalog.CreateProduct(
            catalog_pb2.CreateProductRequest(
                product=catalog_pb2.Product(
                    seller_id=seller,
                    title=f"Checkout bench item {n}",
                    price=money_pb2.Money(currency_code="USD", units=19, nanos=990_000_000),
                )
            )
        )
        await inventory.ReceiveStock(
            inventory_pb2.ReceiveStockRequest(
                product_id=created.product.id, warehouse_id=1, quantity=1_000_000
            )
        )
        ids.append(created.product.id)
    return ids


async def _load(mesh, products: list[int], *, concurrency: int, duration_s: float) -> dict:
    """Closed loop: each shopper adds one item and checks out, again and again, for duration_s."""
    channels = [
        grpc.aio.insecure_channel(mesh.addr("order_svc"), options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(min(4, concurrency))
    ]
    pairs: list[float] = []
    checkouts: list[float] = []
    errors: Counter[str] = Counter()
    order_ids: list[str] = []
    started = time.monotonic()
    stop = started + duration_s

    async def shopper(index: int) -> None:
        user = f"bench-{uuid.uuid4().hex[:8]}-{index}"
        metadata = [(INTERNAL_TOKEN_HEADER, internal_token(mesh.internal_secret, user, ()))]
        channel = channels[index % len(channels)]
        cart = cart_pb2_grpc.CartServiceStub(channel)
        order = order_pb2_grpc.OrderServiceStub(channel)
        while time.monotonic() < stop:
            begin = time.perf_counter()
            try:
                await cart.AddCartItem(
                    cart_pb2.AddCartItemRequest(product_id=random.choice(products), quantity=1),
                    metadata=metadata,
                    timeout=10,
                )
                middle = time.perf_counter()
                reply = await order.Checkout(
                    order_pb2.CheckoutRequest(idempotency_key=str(uuid.uuid4()), shipping_address=ADDRESS),
                    metadata=metadata,
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                continue
            end = time.perf_counter()
            pairs.append((end - begin) * 1000)
            checkouts.append((end - middle) * 1000)
            order_ids.append(reply.order.id)

    try:
        await asyncio.gather(*(shopper(i) for i in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    elapsed = time.monotonic() - started
    return {
        "checkouts_per_s": round(len(pairs) / elapsed, 1),
        "p50_ms": round(statistics.median(pairs), 1) if pairs else 0.0,
        "p99_ms": round(_percentile(pairs, 0.99), 1),
        "checkout_p50_ms": round(statistics.median(checkouts), 1) if checkouts else 0.0,
        "checkout_p99_ms": round(_percentile(checkouts, 0.99), 1),
        "errors": dict(errors),
        "order_ids": order_ids,
    }


def _service_cpu(mesh) -> dict[str, float]:
    return {name: process_cpu_seconds(proc.proc.pid) for name, proc in mesh.procs.items() if proc.running}


def _machine_busy_seconds() -> float:
    """Every core's non-idle time so far (/proc/stat): per checkout, the whole cost of one, services,
    PostgreSQL, Valkey, Kafka, OpenSearch's background work and this driver alike."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal, less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds(postmaster: int) -> float:
    """CPU time so far of the project's PostgreSQL: the postmaster and all its children (backends)."""
    total = 0.0
    for pid in process_tree(postmaster):
        with contextlib.suppress(OSError):  # a backend that exited meanwhile
            total += process_cpu_seconds(pid)
    return total


def _cpu_counters(mesh, postmaster: int) -> dict[str, float]:
    """CPU seconds so far: each service process, PostgreSQL, and the whole machine."""
    return {
        **_service_cpu(mesh),
        "postgres": _postgres_cpu_seconds(postmaster),
        "whole_machine": _machine_busy_seconds(),
    }


def _median_cpu(rounds: list[dict]) -> dict[str, float]:
    return {name: statistics.median(r["cpu"][name] for r in rounds) for name in rounds[0]["cpu"]}


def _median_row(c: int, rounds: list[dict]) -> dict:
    """Per-figure medians over the rounds; vs_db_limit is the median of the per-round ratios."""
    med = statistics.median
    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r["ours"]["errors"])
    return {
        "concurrency": c,
        **{
            key: round(med(r["ours"][key] for r in rounds), 1)
            for key in ("checkouts_per_s", "p50_ms", "p99_ms", "checkout_p50_ms", "checkout_p99_ms")
        },
        "errors": dict(errors) or "-",
        "db_limit_tps": round(med(r["limit_tps"] for r in rounds)),
        "vs_db_limit": round(med(r["ours"]["checkouts_per_s"] / r["limit_tps"] for r in rounds), 3),
        "rate_rounds": ", ".join(f"{r['ours']['checkouts_per_s']}" for r in rounds),
        "p99_rounds": ", ".join(f"{r['ours']['p99_ms']}" for r in rounds),
    }


def _audit(database_url: str, order_ids: list[str], products: list[int]) -> dict:
    """Every order PAID with exactly one capture; stock moved by exactly the units sold."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM orders.orders GROUP BY status").fetchall())
        charges = conn.execute(
            "SELECT count(*) FROM orders.sandbox_charges WHERE status = 'captured'"
        ).fetchone()[0]
        sold = conn.execute("SELECT coalesce(sum(quantity), 0) FROM orders.order_lines").fetchone()[0]
        stock = conn.execute(
            "SELECT coalesce(sum(quantity), 0), coalesce(sum(reserved), 0) FROM inventory.stock"
            " WHERE product_id = ANY(%s)",
            (products,),
        ).fetchone()
    return {
        "orders_by_status": statuses,
        "captures": charges,
        "units_sold": sold,
        "stock_quantity": stock[0],
        "stock_reserved": stock[1],
        "expected_quantity": len(products) * 1_000_000 - sold,
        "answered_orders": len(set(order_ids)),
    }


async def run(*, duration_s: int = 10, concurrency: tuple[int, ...] = CONCURRENCY) -> dict:
    postmaster = Infra(load_infra_settings()).servers["postgres"].pid()
    if postmaster is None:
        raise RuntimeError("postgres not running (python -m infra up)")
    async with bench_mesh(extra_env=ENV) as mesh:
        for service in ("inventory_svc", "catalog_svc", "order_svc"):
            await mesh.start(service)
        products = await _products(mesh)
        await asyncio.to_thread(
            subprocess.run,
            [
                str(PG_BIN / "psql"),
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(PGBENCH_DIR / "order_checkout_setup.sql"),
                mesh.database_url,
            ],
            check=True,
            capture_output=True,
        )
        await _load(
            mesh, products, concurrency=8, duration_s=2
        )  # warm-up: connections, caches, JIT-free paths
        rows, all_orders = [], []
        limit = None
        cpu_per_checkout: dict[str, float] = {}
        load_before = os.getloadavg()[0]
        for c in concurrency:
            rounds = []
            for _ in range(ROUNDS_AT_GOAL_LEVELS if c in GOAL_LEVELS else 1):
                cpu_before = _cpu_counters(mesh, postmaster)
                ours = await _load(mesh, products, concurrency=c, duration_s=duration_s)
                cpu_after = _cpu_counters(mesh, postmaster)
                done = max(1, len(ours["order_ids"]))
                cpu_here = {
                    name: round((cpu_after[name] - cpu_before[name]) * 1000 / done, 1) for name in cpu_after
                }
                all_orders += ours.pop("order_ids")
                limit = await asyncio.to_thread(
                    run_pgbench,
                    mesh.database_url,
                    PGBENCH_DIR / "order_checkout.sql",
                    concurrency=c,
                    duration_s=duration_s,
                )
                rounds.append({"ours": ours, "limit_tps": limit.tps, "cpu": cpu_here})
            if c == 32 or not cpu_per_checkout:
                cpu_per_checkout = _median_cpu(rounds)
            row = _median_row(c, rounds)
            rows.append(row)
            print(
                f"checkout c={c}: {row['checkouts_per_s']}/s p99 {row['p99_ms']} ms | pgbench"
                f" {row['db_limit_tps']} tps (median of {len(rounds)} rounds: {row['rate_rounds']}/s) | CPU ms"
                " per pair: " + ", ".join(f"{name} {ms}" for name, ms in _median_cpu(rounds).items()),
                flush=True,
            )
        # multi-core serving: order_svc as 2 worker processes sharing the port (SO_REUSEPORT)
        await mesh.restart("order_svc", extra_env={"SHOPMESH_WORKERS": "2"})
        two = await _load(mesh, products, concurrency=32, duration_s=duration_s)
        all_orders += two.pop("order_ids")
        one = next((r for r in rows if r["concurrency"] == 32), rows[-1])
        workers = {
            "one_process_per_s_c32": one["checkouts_per_s"],
            "two_processes_per_s_c32": two["checkouts_per_s"],
            "two_processes_p99_ms": two["p99_ms"],
            "ratio": round(two["checkouts_per_s"] / max(1.0, one["checkouts_per_s"]), 2),
        }
        await asyncio.sleep(1.0)  # let the last transactions land
        audit = _audit(mesh.database_url, all_orders, products)
        load_after = os.getloadavg()[0]
    runs = [(r["checkouts_per_s"], f"{r['concurrency']} clients") for r in rows]
    runs.append((workers["two_processes_per_s_c32"], "32 clients, 2 order_svc workers"))
    best_rate, best_where = max(runs)
    c32 = next((r for r in rows if r["concurrency"] == 32), rows[-1])
    paid = audit["orders_by_status"].get("paid", 0)
    goals = [
        {
            "goal": "throughput >= 200 checkouts/s",
            "measured": f"{best_rate}/s ({best_where})",
            "met": best_rate >= 200,
        },
        {
            "goal": "p99 <= 100 ms (add to cart + checkout, 32 clients)",
            "measured": f"{c32['p99_ms']} ms",
            "met": c32["p99_ms"] <= 100,
        },
        {
            "goal": "above the seed's whole-site average of 12 checkouts/s",
            "measured": f"{best_rate / 12:.0f}x",
            "met": best_rate >= 12,
        },
        {
            "goal": "every order paid once, stock moved once per unit sold",
            "correctness": True,
            "measured": f"{paid} paid, {audit['captures']} captures, stock {audit['stock_quantity']} (expected {audit['expected_quantity']}), reserved {audit['stock_reserved']}",
            "met": paid == audit["captures"]
            and audit["stock_quantity"] == audit["expected_quantity"]
            and sum(audit["orders_by_status"].values()) == paid,
        },
    ]
    return {
        "title": "Orders: checkout end to end (add to cart, then checkout)",
        "rows": rows,
        "commands": {
            "ours": "python -m bench --only order_checkout (closed-loop grpc.aio driver, bench/order_checkout.py)",
            "db_limit": limit.command if limit else "",
        },
        "workers": workers,
        "audit": audit,
        "goals": goals,
        "cpu_ms_per_checkout": cpu_per_checkout,
        "notes": [
            "CPU per add-to-cart + checkout pair (ms, at 32 clients, one order_svc worker, median of the"
            " rounds): "
            + ", ".join(f"{name} {ms}" for name, ms in cpu_per_checkout.items())
            + ". whole_machine is every core's busy time over the run divided by the checkouts: services,"
            " PostgreSQL, Valkey, Kafka, OpenSearch's background work and this driver. Two cores can"
            f" sustain at most about {2000 / max(0.1, cpu_per_checkout.get('whole_machine', 0.0)):.0f}"
            " pairs/s at that cost, whatever the concurrency; 200/s needs 10 ms per pair in all.",
            f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the runs (2 cores;"
            " other benchmarks and test suites shared the machine), so latencies include queueing for CPU.",
            "Latency columns: p50/p99 of the add-to-cart + checkout pair; checkout_* is the checkout call"
            " alone. One checkout is 2 gRPC calls to peers (catalog pricing, inventory commit), 4 SQL"
            " round trips (key + cart read, checkout_create, sandbox charge, checkout_complete: steps 1"
            " and 4 are one stored function each, and step 4 also records the payment attempt), and 3"
            " Valkey calls (idempotency lease and result through valkey-py, the cart cache invalidation"
            " over meshkit's pipelined connection); an add to cart is 1 gRPC call (inventory reserve),"
            " 4 SQL round trips (BEGIN, lock + read, writes + read-back, COMMIT) and 1 Valkey call (the"
            " same invalidation). vs_db_limit is ours / pgbench running only the order, line and stock"
            " statements.",
            closed_loop_floor_note(
                goal="p99 <= 100 ms at 32 clients",
                clients=c32["concurrency"],
                p99_goal_ms=100,
                rate=c32["checkouts_per_s"],
                p99_ms=c32["p99_ms"],
                best_rate=best_rate,
                unit="pairs",
            ),
        ],
    }


def main(duration_s: int = 10) -> dict:
    result = asyncio.run(run(duration_s=duration_s))
    write_result("order_checkout", result)
    return result


if __name__ == "__main__":
    main()
