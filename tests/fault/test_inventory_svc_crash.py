"""inventory_svc SIGKILLed while carts are being filled and checked out, then started again.

Claims: no reservation is lost or double-counted. Half the users check out while the other half add
to their carts when the kill lands; adds are retried with their request_id, checkouts with their
Idempotency-Key. Afterwards every unit is accounted for: reserved == active reservations, each
user's active reservations in inventory are exactly those on their cart, each paid line is backed by
exactly its committed units, and units on hand == received - sold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time

from tests.fault.history import History
from tests.fault.scenario import FaultSettings, assert_retried_across, check, final_ops, record
from tests.fault.servers import ServerControl
from tests.fault.workload import add_to_cart, fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh


async def test_no_reservation_is_lost_or_double_counted_across_an_inventory_crash(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    users = fault_settings.fault_users
    plan = await make_plan(shop, users=users, hot_stock=40, tag="invcrash")
    checking_out, adding = plan.users[: users // 2], plan.users[users // 2 :]
    await fill_carts(history, dataclasses.replace(plan, users=checking_out))

    rng = random.Random(5)
    deadline = time.monotonic() + 120
    keys, checkouts = start_checkouts(history, plan, checking_out)
    adds = [
        asyncio.create_task(add_to_cart(history, plan, user, product, rng.randint(1, 3), deadline=deadline))
        for user in adding
        for product in (plan.hot, rng.choice(plan.plentiful))
    ]
    in_flight = await history.wait_in_flight(50)
    history.mark("fault")
    proc = shop.procs["inventory_svc"]
    await shop.kill("inventory_svc")
    assert proc.proc.poll() == -signal.SIGKILL
    await asyncio.sleep(fault_settings.fault_inventory_outage_seconds)
    shop.procs.pop("inventory_svc", None)
    await shop.start("inventory_svc")
    history.mark("restored")
    await asyncio.gather(*checkouts, *adds)
    second_keys, second = start_checkouts(history, plan, adding)
    await asyncio.gather(*second)
    keys.update(second_keys)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    record(
        fault_settings,
        "inventory_svc",
        report,
        in_flight_at_fault=in_flight,
        retried_across=assert_retried_across(history, "fault", "checkout", "replay", "add"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    finals = final_ops(history, "checkout")
    refused = {op.status for op in finals.values() if op.status != 201}
    # a user whose every add met an empty shelf has nothing to buy: 422 CART_EMPTY, nothing else
    assert refused <= {422}, {k: (op.status, op.reason) for k, op in finals.items() if op.status != 201}
