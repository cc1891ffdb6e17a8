"""order_svc SIGKILLed in the middle of a checkout storm, then started again.

Claims: retrying with the same keys completes each order exactly once; clients that never retry
(some keys are abandoned after the crash) are finished by the in-service recovery job: no order is
left PENDING and no reservation is leaked (the checker's reservation and stock invariants).
"""

from __future__ import annotations

import asyncio
import signal

from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, record
from tests.fault.servers import ServerControl
from tests.fault.workload import FAULT_ORDER_ENV, fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh
from tests.integration.order_helpers import start_order_mesh


async def test_retries_and_recovery_finish_every_checkout_exactly_once(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    plan = await make_plan(shop, users=fault_settings.fault_users, hot_stock=40, tag="ordercrash")
    await fill_carts(history, plan)
    abandon = plan.users[::6]  # these clients send once and give up

    keys, tasks = start_checkouts(history, plan, plan.users, abandon=abandon)
    in_flight = await history.wait_in_flight(50)
    history.mark("fault")
    proc = shop.procs["order_svc"]
    await shop.kill("order_svc")
    assert proc.proc.poll() == -signal.SIGKILL
    await asyncio.sleep(0.5)
    await start_order_mesh(shop, FAULT_ORDER_ENV)
    history.mark("restored")
    await asyncio.gather(*tasks)
    await replay(history, plan, keys)

    report = await check(shop, history, plan, settle_timeout=60.0)
    finals = final_ops(history, "checkout")
    retried = {key for key, op in finals.items() if key not in plan.abandoned}
    record(
        fault_settings,
        "order_svc",
        report,
        in_flight_at_fault=in_flight,
        abandoned_keys=len(plan.abandoned),
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    assert all(finals[key].status == 201 for key in retried), {k: finals[k].status for k in retried}
    crashed = [op for op in history.of_kind("checkout") if op.status in (503, 504)]
    assert crashed, "no checkout was caught by the crash"
