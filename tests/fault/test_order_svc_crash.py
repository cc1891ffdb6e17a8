"""order_svc SIGKILLed in the middle of a checkout storm, then started again.

Claims: retrying with the same keys completes each order exactly once; clients that never retry
(some keys are abandoned after the crash) are finished by the in-service recovery job: no order is
left PENDING and no reservation is leaked (the checker's reservation and stock invariants).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

from google.protobuf import duration_pb2
from shop.order.v1 import order_pb2, order_pb2_grpc

from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, record
from tests.fault.servers import ServerControl
from tests.fault.workload import FAULT_ORDER_ENV, checkout, fill_carts, make_plan, replay, start_checkouts
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


async def test_a_checkout_crashed_right_after_the_stock_commit_leaves_no_phantom_reservation_in_the_cart(
    shop: Mesh, history: History
) -> None:
    """SIGKILL (failpoint) after inventory committed the cart's reservations but before order_svc
    recorded it; the recovery job compensates. The cart must stop counting those reservations:
    inventory committed and then restocked them, so they hold nothing any more."""
    plan = await make_plan(shop, users=1, hot_stock=5, plentiful=1, tag="commitcrash")
    await fill_carts(history, plan)
    user, key = plan.users[0], f"fault-{uuid.uuid4()}"
    await start_order_mesh(shop, {**FAULT_ORDER_ENV, "SHOPMESH_FAILPOINTS": "after_commit"})
    proc = shop.procs["order_svc"]
    for _ in range(20):  # until a request reaches the fresh process (the gateway may still be reconnecting)
        op = (await checkout(history, plan, user, key, deadline=time.monotonic() + 30, retry=False))[0]
        assert op.status in (0, 502, 503), (op.status, op.body)
        if await proc.wait_exit(2) is not None:
            break
    assert proc.proc.poll() == -signal.SIGKILL, "order_svc did not die at the failpoint"
    await start_order_mesh(shop, FAULT_ORDER_ENV)
    plan.abandoned.add((user, key))
    deadline = time.monotonic() + 30
    admin = order_pb2_grpc.OrderServiceStub(shop.channel("order_svc", "fault-admin", ("admin",)))
    while True:  # the crashed attempt's lease (3 s) must run out before recovery may take the order
        reply = await admin.RecoverOrders(
            order_pb2.RecoverOrdersRequest(min_age=duration_pb2.Duration(seconds=0))
        )
        if reply.compensated_order_ids or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert reply.compensated_order_ids, "recovery never compensated the crashed checkout"

    report = await check(shop, history, plan, settle_timeout=10)
    assert not report.violations, report.summary()
