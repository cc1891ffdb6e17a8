"""Valkey killed (SIGKILL) while checkouts are in flight, some keys sent twice at once.

Claims: checkout stays exactly once through the PostgreSQL UNIQUE (user, key) constraint (the
Valkey fast path is gone); carts and recommendations are served from PostgreSQL; the gateway's rate
limiter fails open and gateway_rate_limit_fail_open_total counts it. Also: a lease renewal cancelled
while its Valkey read times out still stops (the bug behind requests stuck for 20-90 s).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import valkey.asyncio as valkey_asyncio

from meshkit.idempotency import IdempotencyStore, Lease
from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, metric, record
from tests.fault.servers import ServerControl
from tests.fault.workload import checkout, fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh
from tests.integration.order_helpers import ORDER_VALKEY_URL


async def test_checkout_stays_exactly_once_and_reads_are_served_without_valkey(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    users = fault_settings.fault_users
    plan = await make_plan(shop, users=users, hot_stock=40, tag="valkey")
    await fill_carts(history, plan)
    fail_open_before = await metric(f"{shop.gateway_url}/metrics", "gateway_rate_limit_fail_open_total")

    keys, tasks = start_checkouts(history, plan, plan.users)
    # the same key sent again at once by a second client: the database must keep one order
    deadline = time.monotonic() + 120
    twins = [
        asyncio.create_task(checkout(history, plan, user, keys[user], deadline=deadline))
        for user in plan.users[:10]
    ]
    in_flight = await history.wait_in_flight(50)
    reads: list[tuple[str, int]] = []
    async with servers.outage("valkey") as timings:
        history.mark("fault")
        while time.monotonic() - timings["killed_at"] < fault_settings.fault_valkey_outage_seconds:
            user = random.choice(plan.users)
            cart = await history.request("cart", "GET", "/v1/cart", user=user, headers=plan.headers(user))
            recs = await history.request(
                "recs", "GET", f"/v1/products/{plan.hot}:alsoBought", user="anonymous"
            )
            reads += [("cart", cart.status), ("recs", recs.status)]
            await asyncio.sleep(0.2)
        fail_open_during = await metric(f"{shop.gateway_url}/metrics", "gateway_rate_limit_fail_open_total")
    history.mark("restored")
    await asyncio.gather(*tasks, *twins)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    record(
        fault_settings,
        "valkey",
        report,
        in_flight_at_fault=in_flight,
        outage_seconds=round(timings["down_seconds"], 1),
        reads_during_outage=len(reads),
        rate_limit_fail_open=fail_open_during - fail_open_before,
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    finals = final_ops(history, "checkout")
    assert all(op.status == 201 for op in finals.values()), {k: op.status for k, op in finals.items()}
    assert reads and all(status == 200 for _, status in reads), reads
    assert fail_open_during > fail_open_before, "the rate limiter did not count failing open"


async def test_a_lease_renewal_cancelled_during_a_valkey_timeout_still_stops(shop: Mesh) -> None:
    """keep_alive must end even when valkey-py turns its cancellation into a TimeoutError."""
    client = valkey_asyncio.from_url(ORDER_VALKEY_URL, socket_timeout=0.002, socket_connect_timeout=0.5)
    store = IdempotencyStore(client, namespace="fault-cancel", service="fault-tests", lease_seconds=0.01)
    rng = random.Random(11)
    stuck = 0
    try:
        for _ in range(200):
            lease = await store.begin("race", uuid.uuid4().hex, "hash")

            async def body(lease: Lease = lease) -> None:
                async with lease.keep_alive():
                    await asyncio.sleep(rng.random() * 0.05)

            # asyncio.wait, not wait_for: a hung body must be counted, not waited on forever
            done, _ = await asyncio.wait({asyncio.create_task(body())}, timeout=2.0)
            stuck += 0 if done else 1
    finally:
        await client.aclose()
    assert stuck == 0, f"{stuck} of 200 keep_alive blocks never ended after their body finished"
