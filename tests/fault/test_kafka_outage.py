"""Kafka killed (SIGKILL) for SHOPMESH_FAULT_KAFKA_OUTAGE_SECONDS (10 s) during a checkout storm.

Claim: checkouts keep succeeding (events wait in the outbox, nothing on the request path needs
Kafka), the outbox backlog grows while Kafka is down and drains after, and the consumers see every
event: each applied exactly once (catalog's co-purchases match the orders line for line).
"""

from __future__ import annotations

import asyncio
import time

from tests.fault.history import History
from tests.fault.scenario import (
    FaultSettings,
    assert_retried_across,
    check,
    final_ops,
    record,
    unsent_events,
)
from tests.fault.servers import ServerControl
from tests.fault.workload import fill_carts, make_plan, replay, start_checkouts
from tests.harness import Mesh


async def test_checkouts_survive_a_kafka_outage_and_every_event_arrives_once(
    shop: Mesh, history: History, servers: ServerControl, fault_settings: FaultSettings
) -> None:
    outage = fault_settings.fault_kafka_outage_seconds
    first_wave = fault_settings.fault_users
    plan = await make_plan(shop, users=first_wave + 20, hot_stock=40, tag="kafka")
    await fill_carts(history, plan)

    keys, tasks = start_checkouts(history, plan, plan.users[:first_wave])
    in_flight = await history.wait_in_flight(50)
    backlog: list[int] = []
    async with servers.outage("kafka") as timings:
        history.mark("fault")
        await asyncio.sleep(min(2.0, outage / 2))
        second_keys, second = start_checkouts(history, plan, plan.users[first_wave:])
        while time.monotonic() - timings["killed_at"] < outage:
            backlog.append(await asyncio.to_thread(unsent_events, shop.database_url, "orders"))
            await asyncio.sleep(0.5)
        history.mark("restarting")
    history.mark("restored")
    await asyncio.gather(*tasks, *second)
    keys.update(second_keys)
    await replay(history, plan, keys)

    report = await check(shop, history, plan)
    finals = final_ops(history, "checkout")
    record(
        fault_settings,
        "kafka",
        report,
        in_flight_at_fault=in_flight,
        outage_seconds=round(timings["down_seconds"], 1),
        backlog_peak=max(backlog),
        kafka_restart_seconds=round(timings["restart_seconds"], 1),
        retried_across=assert_retried_across(history, "fault", "checkout", "replay"),
    )
    assert in_flight >= 50
    assert not report.violations, report.summary()
    # every checkout succeeded, including the ones sent while Kafka was down
    assert all(op.status == 201 for op in finals.values()), {k: op.status for k, op in finals.items()}
    assert second_keys and all(key in {k for _, k in finals} for key in second_keys.values())
    assert max(backlog) > 0, "the outbox never held an event while Kafka was down"
    acked_while_down = [
        op for op in finals.values() if op.status == 201 and op.ended < history.marks["restarting"]
    ]
    assert len(acked_while_down) >= 10, (
        f"only {len(acked_while_down)} checkouts completed while Kafka was down"
    )
