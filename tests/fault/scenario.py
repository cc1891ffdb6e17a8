"""What every fault scenario shares: its settings (outage lengths, load) and how it reports numbers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from tests.fault.checker import Report, check_run, wait_until_settled
from tests.fault.history import History, Op
from tests.fault.workload import Plan
from tests.harness import Mesh


@dataclasses.dataclass(frozen=True)
class FaultSettings:
    """Field `fault_kafka_outage_seconds` reads SHOPMESH_FAULT_KAFKA_OUTAGE_SECONDS, and so on."""

    fault_kafka_outage_seconds: float = 10.0
    fault_valkey_outage_seconds: float = 4.0
    # longer than the services' pool wait (5 s), so requests waiting on a connection fail and retry
    fault_postgres_outage_seconds: float = 6.0
    fault_opensearch_open_seconds: float = 4.0  # how long searches are measured with the breaker open
    fault_inventory_outage_seconds: float = 2.0
    fault_network_delay_seconds: float = 1.5  # added to every inventory call during the delay window
    fault_network_window_seconds: float = 4.0
    fault_users: int = 60  # >= 50: the checkouts in flight when the fault strikes
    # when set, each scenario appends its numbers (one JSON object per line) to this file
    fault_report_path: str = ""


def record(settings: FaultSettings, scenario: str, report: Report, **extra: object) -> None:
    """Print the scenario's numbers and append them to SHOPMESH_FAULT_REPORT_PATH when set."""
    line = {"scenario": scenario, "violations": len(report.violations), **report.stats, **extra}
    print(f"\n[fault] {json.dumps(line, default=str)}")
    if settings.fault_report_path:
        with Path(settings.fault_report_path).open("a") as out:
            out.write(json.dumps(line, default=str) + "\n")


def assert_retried_across(history: History, moment: str, *kinds: str) -> int:
    """At least one key was sent before the fault and again after it; returns how many."""
    keys = history.retried_across(history.marks[moment], *kinds)
    assert keys, f"no request was retried across the fault ({moment})"
    return len(keys)


async def check(mesh: Mesh, history: History, plan: Plan, *, settle_timeout: float = 60.0) -> Report:
    """Wait for the orders to settle (retries, recovery), then run the checker over the history."""
    pending = await asyncio.to_thread(
        wait_until_settled, mesh.database_url, plan.users, timeout=settle_timeout
    )
    report = await asyncio.to_thread(
        check_run,
        mesh.database_url,
        history,
        plan,
        kafka_bootstrap=mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"],
        order_topic=mesh.topics["SHOPMESH_TOPIC_ORDER_EVENTS"],
    )
    report.stats["pending_after_settle"] = pending
    return report


def unsent_events(database_url: str, schema: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.outbox WHERE sent_at IS NULL").format(sql.Identifier(schema))
        ).fetchone()
    return int(row[0]) if row else 0


def final_ops(history: History, *kinds: str) -> dict[tuple[str, str], Op]:
    """The last answer of every key."""
    return {key: max(ops, key=lambda op: op.started) for key, ops in history.by_key(*kinds).items()}


async def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`, from a /metrics page."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(url)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def histogram(url: str, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of a histogram, summed over the other labels."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(url)).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over the observations made between two snapshots."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower
