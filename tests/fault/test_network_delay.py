"""Latency on order_svc -> inventory_svc (a delaying TCP proxy) while checkouts are in flight.

order_svc runs with SHOPMESH_INVENTORY_ADDR pointing at the proxy and a 1 s peer deadline; for
SHOPMESH_FAULT_NETWORK_WINDOW_SECONDS every inventory call is late by
SHOPMESH_FAULT_NETWORK_DELAY_SECONDS. Claims: deadlines fire (clean 503/504 answers, never 500),
retries with the same keys complete the orders, and no order is left half-done: nothing PENDING,
stock committed exactly for what was paid, no reservation leaked (calls that reached inventory after
order_svc gave up included).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fault.history import History
from tests.fault.proxy import LatencyProxy
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, record
from tests.fault.workload import (
    ensure_shop,
    fill_carts,
    make_plan,
    replay,
    restore_order_svc,
    start_checkouts,
)
from tests.harness import Mesh

PEER_DEADLINE_SECONDS = "1.0"


@pytest_asyncio.fixture
async def proxied_inventory(shop: Mesh) -> AsyncIterator[LatencyProxy]:
    proxy = LatencyProxy(shop.ports["inventory_svc"])
    await proxy.start()
    try:
        await ensure_shop(
            shop,
            {
                "SHOPMESH_INVENTORY_ADDR": f"127.0.0.1:{proxy.port}",
                "SHOPMESH_RPC_DEADLINE_SECONDS": PEER_DEADLINE_SECONDS,
            },
        )
        yield proxy
    finally:
        proxy.delay = 0.0
        await restore_order_svc(shop)
        await proxy.stop()


async def test_deadlines_fire_and_no_order_is_left_half_done(
    shop: Mesh, history: History, proxied_inventory: LatencyProxy, fault_settings: FaultSettings
) -> None:
    proxy = proxied_inventory
    plan = await make_plan(shop, users=fault_settings.fault_users, hot_stock=40, tag="delay")
    await fill_carts(history, plan)

    keys, tasks = start_checkouts(history, plan, plan.users)
    in_flight = await history.wait_in_flight(50)
    history.mark("fault")
    proxy.delay = fault_settings.fault_network_delay_seconds
    await asyncio.sleep(fault_settings.fault_network_window_seconds)
    proxy.delay = 0.0
    history.mark("restored")
    await asyncio.gather(*tasks)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    timed_out = [
        op
        for op in history.of_kind("checkout")
        if op.status in (503, 504) and op.started < history.marks["restored"]
    ]
    record(
        fault_settings,
        "network_delay",
        report,
        in_flight_at_fault=in_flight,
        delay_seconds=fault_settings.fault_network_delay_seconds,
        window_seconds=fault_settings.fault_network_window_seconds,
        deadline_answers=len(timed_out),
        delayed_chunks=proxy.delayed_chunks,
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    assert timed_out, "no checkout hit a deadline while inventory calls were late"
    finals = final_ops(history, "checkout")
    assert all(op.status == 201 for op in finals.values()), {k: op.status for k, op in finals.items()}
