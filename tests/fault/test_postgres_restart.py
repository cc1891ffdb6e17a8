"""PostgreSQL crashed (`pg_ctl stop -m immediate`) and restarted while checkouts are in flight.

Claims: the services reconnect by themselves (same processes before and after); requests caught by
the crash fail cleanly (503 UNAVAILABLE, or 409 in progress while a crashed attempt's lease runs
out), never 500; retrying each with its Idempotency-Key completes it exactly once.
"""

from __future__ import annotations

import asyncio

from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, record
from tests.fault.servers import ServerControl
from tests.fault.workload import fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh

SERVICES = ("catalog_svc", "inventory_svc", "order_svc", "gateway")


async def test_services_reconnect_and_retried_checkouts_complete_exactly_once(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    plan = await make_plan(shop, users=fault_settings.fault_users, hot_stock=40, tag="pg")
    await fill_carts(history, plan)
    pids = {name: shop.procs[name].proc.pid for name in SERVICES}

    keys, tasks = start_checkouts(history, plan, plan.users)
    in_flight = await history.wait_in_flight(50)
    async with servers.outage("postgres") as timings:
        history.mark("fault")
        await asyncio.sleep(fault_settings.fault_postgres_outage_seconds)
    history.mark("restored")
    await asyncio.gather(*tasks)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    failed_cleanly = [op for op in history.of_kind("checkout") if op.status in (503, 504)]
    record(
        fault_settings,
        "postgres",
        report,
        in_flight_at_fault=in_flight,
        outage_seconds=round(timings["down_seconds"], 1),
        unavailable_answers=len(failed_cleanly),
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    assert failed_cleanly, "no request noticed the database going away: the fault struck nothing"
    finals = final_ops(history, "checkout")
    assert all(op.status == 201 for op in finals.values()), {k: op.status for k, op in finals.items()}
    for name, pid in pids.items():
        proc = shop.procs[name]
        assert proc.running and proc.proc.pid == pid, f"{name} was restarted or died: {proc.log_tail()}"
