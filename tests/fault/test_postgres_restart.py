"""PostgreSQL crashed (`pg_ctl stop -m immediate`) and restarted while checkouts are in flight.

Claims: the services reconnect by themselves (same processes before and after); requests caught by
the crash fail cleanly (UNAVAILABLE, which the gateway's channel retries and else surfaces as 503;
409 in progress while a crashed attempt's lease runs out), never INTERNAL or 500; retrying each with
its Idempotency-Key completes it exactly once. A second wave of checkouts starts while the database
is down.
"""

from __future__ import annotations

import asyncio

from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, metric, record
from tests.fault.servers import ServerControl
from tests.fault.workload import fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh

SERVICES = ("catalog_svc", "inventory_svc", "order_svc", "gateway")


async def test_services_reconnect_and_retried_checkouts_complete_exactly_once(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    first_wave = fault_settings.fault_users
    plan = await make_plan(shop, users=first_wave + 20, hot_stock=40, tag="pg")
    await fill_carts(history, plan)
    pids = {name: shop.procs[name].proc.pid for name in SERVICES}
    before = await _answers(shop)

    keys, tasks = start_checkouts(history, plan, plan.users[:first_wave])
    in_flight = await history.wait_in_flight(50)
    async with servers.outage("postgres") as timings:
        history.mark("fault")
        # a second wave while the database is down: these must fail cleanly and succeed on retry
        second_keys, second = start_checkouts(history, plan, plan.users[first_wave:])
        await asyncio.sleep(fault_settings.fault_postgres_outage_seconds)
    history.mark("restored")
    await asyncio.gather(*tasks, *second)
    keys.update(second_keys)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    after = await _answers(shop)
    unavailable = after["UNAVAILABLE"] - before["UNAVAILABLE"]
    internal = after["INTERNAL"] + after["UNKNOWN"] - before["INTERNAL"] - before["UNKNOWN"]
    failed_cleanly = [op for op in history.of_kind("checkout") if op.status in (503, 504)]
    record(
        fault_settings,
        "postgres",
        report,
        in_flight_at_fault=in_flight,
        outage_seconds=round(timings["down_seconds"], 1),
        http_503_504=len(failed_cleanly),
        grpc_unavailable_answers=unavailable,
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    # requests caught by the crash failed as UNAVAILABLE (the gateway's channel retries those, so
    # many never surface as 503), and none as INTERNAL
    assert failed_cleanly or unavailable > 0, "no request noticed the database going away"
    assert internal == 0, f"{internal} RPCs answered INTERNAL/UNKNOWN during the database restart"
    finals = final_ops(history, "checkout")
    assert all(op.status == 201 for op in finals.values()), {k: op.status for k, op in finals.items()}
    for name, pid in pids.items():
        proc = shop.procs[name]
        assert proc.running and proc.proc.pid == pid, f"{name} was restarted or died: {proc.log_tail()}"


async def _answers(mesh: Mesh) -> dict[str, float]:
    """RPCs answered by the three services so far, by gRPC code (from their /metrics)."""
    totals = {}
    for code in ("UNAVAILABLE", "INTERNAL", "UNKNOWN"):
        totals[code] = sum(
            [
                await metric(mesh.metrics_url(name), "grpc_server_handled_total", grpc_code=code)
                for name in SERVICES[:3]
            ]
        )
    return totals
