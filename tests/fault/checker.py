"""Invariants checked from the recorded history and the services' own tables, after a fault run.

`check_run` answers, for one workload (its users, products and recorded HTTP history):

  answers      every request got a clean HTTP answer (no 500/502, no dropped connection, no timeout);
               every key the client kept retrying ended in a final answer;
  orders       each (user, Idempotency-Key) has at most one order; an acknowledged key (201) has
               exactly that order, PAID, and every 201 for the key carried the same body; a key
               answered with a failure naming an order has that order FAILED; no order is PENDING;
  payments     a PAID order has exactly one captured charge of its total, a FAILED one none;
  stock        per product: units on hand == received - sold (sold from the PAID orders), sold never
               exceeds what was received (no oversell), 0 <= reserved <= quantity, reserved == the
               active reservations, and the ledger sums to the stock row; each PAID order line is
               backed by exactly its quantity of committed reservations, each failed order that
               committed stock was restocked;
  reservations per user, inventory's active reservations == the cart's active reservations (nothing
               leaked, nothing held twice);
  events       every order has one order.created and one status change in its outbox, all sent; each
               of those event ids is on the Kafka topic (at least once) and in catalog's
               processed_events (applied once), and catalog's co-purchase rows match the order lines
               exactly; every inventory event of the products was applied by catalog's indexer, whose
               stock view ends equal to inventory's.

Event delivery is asynchronous, so those checks poll until they hold or `event_timeout` passes.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition
from psycopg.rows import dict_row

from tests.fault.history import History
from tests.fault.workload import Plan

FINAL_FAILURES = {"INSUFFICIENT_STOCK", "PAYMENT_DECLINED", "CHECKOUT_ABANDONED"}
SOLD_STATUSES = ("paid", "shipped", "delivered")


@dataclasses.dataclass
class Report:
    violations: list[str] = dataclasses.field(default_factory=list)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def summary(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in self.stats.items())
        if not self.violations:
            return f"OK ({head})"
        shown = "\n  ".join(self.violations[:40])
        more = f"\n  ... and {len(self.violations) - 40} more" if len(self.violations) > 40 else ""
        return f"{len(self.violations)} violations ({head}):\n  {shown}{more}"


def _rows(conn: psycopg.Connection, query: str, *params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def wait_until_settled(database_url: str, users: list[str], *, timeout: float = 60.0) -> int:
    """Wait until no order of these users is PENDING (retries or the recovery job finish them)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            pending = _rows(
                conn,
                "SELECT count(*) AS n FROM orders.orders WHERE user_id = ANY(%s) AND status = 'pending'",
                users,
            )[0]["n"]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(0.5)


def check_run(
    database_url: str,
    history: History,
    plan: Plan,
    *,
    kafka_bootstrap: str,
    order_topic: str,
    event_timeout: float = 60.0,
) -> Report:
    report = Report()
    _check_answers(history, plan, report)
    with psycopg.connect(database_url, autocommit=True) as conn:
        orders = _check_orders(conn, history, plan, report)
        _check_payments(conn, orders, report)
        _check_stock(conn, plan, orders, report)
        _check_reservations(conn, plan, report)
        _check_events(conn, plan, orders, report, kafka_bootstrap, order_topic, event_timeout)
    return report


# --- answers -------------------------------------------------------------------------------------


def _check_answers(history: History, plan: Plan, report: Report) -> None:
    unclean = [op for op in history.ops if op.status in (0, 500, 501, 502) or op.status < 0]
    for op in unclean[:20]:
        report.fail(f"unclean answer: {op.kind} {op.user} {op.key} -> {op.status} {op.reason} {op.body}")
    if len(unclean) > 20:
        report.fail(f"... {len(unclean) - 20} more unclean answers")
    for (user, key), ops in history.by_key("checkout", "replay", "add").items():
        last = max(ops, key=lambda op: op.started)
        if last.retryable and (user, key) not in plan.abandoned:
            report.fail(
                f"{last.kind} {user}/{key} never got a final answer: last {last.status} {last.reason}"
            )
    report.stats["requests"] = len(history.ops)
    report.stats["retries"] = sum(1 for op in history.ops if op.attempt > 0)
    report.stats["status_counts"] = dict(collections.Counter(op.status for op in history.ops))


# --- orders and payments -------------------------------------------------------------------------


def _check_orders(
    conn: psycopg.Connection, history: History, plan: Plan, report: Report
) -> dict[str, dict[str, Any]]:
    rows = _rows(
        conn,
        "SELECT id::text AS id, user_id, idempotency_key, status, total, payment_status"
        " FROM orders.orders WHERE user_id = ANY(%s)",
        plan.users,
    )
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        by_key[(row["user_id"], row["idempotency_key"])].append(row)
    orders = {row["id"]: row for row in rows}
    acknowledged = 0
    for (user, key), ops in history.by_key("checkout", "replay").items():
        found = by_key.get((user, key), [])
        if len(found) > 1:
            report.fail(f"{len(found)} orders for one key {user}/{key}: {[r['id'] for r in found]}")
        created = [op for op in ops if op.status == 201]
        ids = {op.body["order"]["id"] for op in created if op.body and "order" in op.body}
        if created:
            acknowledged += 1
            if len(ids) != 1:
                report.fail(f"key {user}/{key} acknowledged with different orders {ids}")
            if any(op.body != created[0].body for op in created):
                report.fail(f"key {user}/{key}: a replayed 201 differs from the first one")
            order_id = next(iter(ids), "")
            if [r["id"] for r in found] != [order_id]:
                report.fail(f"acknowledged order {order_id} ({user}/{key}) not stored once: {found}")
            elif found[0]["status"] not in SOLD_STATUSES:
                report.fail(f"acknowledged order {order_id} is {found[0]['status']}")
            continue
        last = max(ops, key=lambda op: op.started)
        named = last.error_metadata().get("order_id", "")
        if last.reason in FINAL_FAILURES and named:
            row = orders.get(named)
            if row is None or row["status"] != "failed":
                report.fail(f"{user}/{key} answered {last.reason} for order {named}, stored as {row}")
        elif last.reason == "CART_EMPTY" and found:
            report.fail(f"{user}/{key} answered CART_EMPTY but has order(s) {found}")
    keys = {key for (_, key) in history.by_key("checkout", "replay")}
    for row in rows:
        if row["idempotency_key"] not in keys:
            report.fail(f"order {row['id']} has a key the workload never sent: {row['idempotency_key']}")
        if row["status"] == "pending":
            report.fail(f"order {row['id']} ({row['user_id']}) is still PENDING")
    statuses = collections.Counter(row["status"] for row in rows)
    report.stats["acknowledged"] = acknowledged
    report.stats["orders"] = dict(statuses)
    return orders


def _check_payments(conn: psycopg.Connection, orders: dict[str, dict[str, Any]], report: Report) -> None:
    charges = _rows(
        conn,
        "SELECT idempotency_key, status, amount FROM orders.sandbox_charges WHERE idempotency_key = ANY(%s)",
        [f"order:{order_id}" for order_id in orders],
    )
    by_order = collections.defaultdict(list)
    for charge in charges:
        by_order[charge["idempotency_key"].removeprefix("order:")].append(charge)
    for order_id, row in orders.items():
        captured = [c for c in by_order.get(order_id, []) if c["status"] == "captured"]
        if row["status"] in SOLD_STATUSES:
            if len(captured) != 1 or captured[0]["amount"] != row["total"]:
                report.fail(f"paid order {order_id} (total {row['total']}) has captures {captured}")
        elif captured:
            report.fail(f"{row['status']} order {order_id} has a captured charge {captured}")
    report.stats["captures"] = sum(1 for c in charges if c["status"] == "captured")


# --- stock and reservations ----------------------------------------------------------------------


def _check_stock(
    conn: psycopg.Connection, plan: Plan, orders: dict[str, dict[str, Any]], report: Report
) -> None:
    products = list(plan.initial)
    lines = _rows(
        conn,
        "SELECT order_id::text AS order_id, product_id, quantity FROM orders.order_lines"
        " WHERE order_id = ANY(%s::uuid[])",
        list(orders),
    )
    sold: dict[int, int] = collections.Counter()
    line_qty: dict[tuple[str, int], int] = {}
    for line in lines:
        line_qty[(line["order_id"], line["product_id"])] = line["quantity"]
        if orders[line["order_id"]]["status"] in SOLD_STATUSES:
            sold[line["product_id"]] += line["quantity"]
    stock = _rows(
        conn,
        """
        SELECT s.product_id, s.warehouse_id, s.quantity, s.reserved,
               (SELECT coalesce(sum(r.quantity), 0) FROM inventory.reservations r
                 WHERE r.product_id = s.product_id AND r.warehouse_id = s.warehouse_id
                   AND r.status = 'active') AS held,
               (SELECT coalesce(sum(l.quantity_delta), 0) FROM inventory.stock_ledger l
                 WHERE l.product_id = s.product_id AND l.warehouse_id = s.warehouse_id) AS ledger_quantity,
               (SELECT coalesce(sum(l.reserved_delta), 0) FROM inventory.stock_ledger l
                 WHERE l.product_id = s.product_id AND l.warehouse_id = s.warehouse_id) AS ledger_reserved
          FROM inventory.stock s WHERE s.product_id = ANY(%s)
        """,
        products,
    )
    on_hand: dict[int, int] = collections.Counter()
    for row in stock:
        on_hand[row["product_id"]] += row["quantity"]
        if not 0 <= row["reserved"] <= row["quantity"]:
            report.fail(f"stock row out of bounds: {row}")
        if row["reserved"] != row["held"]:
            report.fail(f"reserved != active reservations: {row}")
        if (row["quantity"], row["reserved"]) != (row["ledger_quantity"], row["ledger_reserved"]):
            report.fail(f"ledger does not sum to the stock row: {row}")
    for product_id, received in plan.initial.items():
        if sold[product_id] > received:
            report.fail(f"OVERSELL: product {product_id} sold {sold[product_id]} of {received}")
        if on_hand[product_id] != received - sold[product_id]:
            report.fail(
                f"product {product_id}: {on_hand[product_id]} on hand, expected {received} received"
                f" - {sold[product_id]} sold"
            )
    committed = _rows(
        conn,
        "SELECT r.order_id, r.product_id, sum(r.quantity) AS units, bool_or(c.restocked_at IS NOT NULL) AS restocked"
        " FROM inventory.reservations r LEFT JOIN inventory.order_commits c ON c.order_id = r.order_id"
        " WHERE r.status = 'committed' AND r.product_id = ANY(%s) AND r.owner = ANY(%s)"
        " GROUP BY r.order_id, r.product_id",
        products,
        plan.users,
    )
    seen: set[tuple[str, int]] = set()
    for row in committed:
        key = (row["order_id"], row["product_id"])
        seen.add(key)
        order = orders.get(row["order_id"])
        if order is None:
            report.fail(f"stock committed to an order the workload does not have: {row}")
        elif order["status"] in SOLD_STATUSES:
            if row["restocked"] or row["units"] != line_qty.get(key):
                report.fail(
                    f"paid order line {key} has {row['units']} committed (restocked={row['restocked']})"
                )
        elif not row["restocked"]:
            report.fail(f"{order['status']} order {row['order_id']} holds committed stock {row}")
    for (order_id, product_id), _quantity in line_qty.items():
        if orders[order_id]["status"] in SOLD_STATUSES and (order_id, product_id) not in seen:
            report.fail(f"paid order line {(order_id, product_id)} has no committed stock")
    report.stats["sold"] = {str(p): sold[p] for p in plan.initial}


def _check_reservations(conn: psycopg.Connection, plan: Plan, report: Report) -> None:
    held = _rows(
        conn,
        "SELECT owner, id::text AS id FROM inventory.reservations WHERE owner = ANY(%s) AND status = 'active'",
        plan.users,
    )
    carts = _rows(
        conn,
        "SELECT user_id, reservation_id::text AS id FROM orders.cart_reservations"
        " WHERE user_id = ANY(%s) AND state = 'active'",
        plan.users,
    )
    in_inventory = {(r["owner"], r["id"]) for r in held}
    in_carts = {(r["user_id"], r["id"]) for r in carts}
    for owner, rid in sorted(in_inventory - in_carts):
        report.fail(f"LEAKED reservation {rid} of {owner}: active in inventory, on no cart")
    for user, rid in sorted(in_carts - in_inventory):
        report.fail(f"cart of {user} counts reservation {rid} that inventory does not hold")
    report.stats["active_reservations"] = len(in_inventory)


# --- events --------------------------------------------------------------------------------------


def _check_events(
    conn: psycopg.Connection,
    plan: Plan,
    orders: dict[str, dict[str, Any]],
    report: Report,
    kafka_bootstrap: str,
    order_topic: str,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    order_ids = list(orders)
    product_keys = [str(p) for p in plan.initial]
    while True:
        problems = _event_problems(conn, plan, orders, order_ids, product_keys)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for problem in problems:
        report.fail(problem)
    events = _rows(
        conn, "SELECT event_id::text AS event_id FROM orders.outbox WHERE key = ANY(%s)", order_ids
    )
    wanted = {e["event_id"] for e in events}
    on_topic = _topic_event_ids(kafka_bootstrap, order_topic, wanted)
    missing = wanted - set(on_topic)
    if missing:
        report.fail(f"{len(missing)} order events never reached topic {order_topic}: {sorted(missing)[:5]}")
    report.stats["order_events"] = len(wanted)
    report.stats["redelivered_on_topic"] = sum(n - 1 for n in on_topic.values() if n > 1)


def _event_problems(
    conn: psycopg.Connection,
    plan: Plan,
    orders: dict[str, dict[str, Any]],
    order_ids: list[str],
    product_keys: list[str],
) -> list[str]:
    problems: list[str] = []
    outbox = _rows(
        conn,
        "SELECT event_id::text AS event_id, key, event_type, sent_at FROM orders.outbox WHERE key = ANY(%s)",
        order_ids,
    )
    per_order: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for event in outbox:
        per_order[event["key"]][event["event_type"]] += 1
    for order_id in order_ids:
        counts = per_order.get(order_id, collections.Counter())
        if counts.get("order.created") != 1 or counts.get("order.status_changed") != 1:
            problems.append(
                f"order {order_id} has outbox events {dict(counts)}, want one created + one change"
            )
    unsent = [e["event_id"] for e in outbox if e["sent_at"] is None]
    if unsent:
        problems.append(f"{len(unsent)} order events still unsent in the outbox")
    # the co-purchases consumer selects order.created; status changes never reach its transaction
    created = [e["event_id"] for e in outbox if e["event_type"] == "order.created"]
    problems += _applied_once(conn, created, "order.created events", "co-purchases")
    lines = _rows(
        conn,
        "SELECT order_id::text AS order_id, product_id, quantity FROM orders.order_lines"
        " WHERE order_id = ANY(%s::uuid[])",
        order_ids,
    )
    recorded = _rows(
        conn,
        "SELECT order_id, product_id, quantity FROM catalog.co_purchases WHERE order_id = ANY(%s)",
        order_ids,
    )
    want = {(r["order_id"], r["product_id"], r["quantity"]) for r in lines}
    have = collections.Counter((r["order_id"], r["product_id"], r["quantity"]) for r in recorded)
    if set(have) != want or any(n != 1 for n in have.values()):
        problems.append(
            f"co-purchase effects differ from the orders: missing {len(want - set(have))},"
            f" unexpected {len(set(have) - want)}"
        )
    inventory_events = _rows(
        conn,
        "SELECT event_id::text AS event_id, sent_at FROM inventory.outbox WHERE key = ANY(%s)",
        product_keys,
    )
    if any(e["sent_at"] is None for e in inventory_events):
        problems.append("inventory events still unsent in the outbox")
    problems += _applied_once(conn, [e["event_id"] for e in inventory_events], "inventory events", "indexer")
    views = _rows(
        conn,
        """
        SELECT p.product_id, p.version,
               (SELECT coalesce(sum(s.quantity - s.reserved), 0) FROM inventory.stock s
                 WHERE s.product_id = p.product_id) AS available,
               c.version AS catalog_version, c.available AS catalog_available
          FROM inventory.products p LEFT JOIN catalog.stock_status c ON c.product_id = p.product_id
         WHERE p.product_id = ANY(%s)
        """,
        list(plan.initial),
    )
    for view in views:
        if (view["version"], view["available"]) != (view["catalog_version"], view["catalog_available"]):
            problems.append(f"catalog's stock view of {view['product_id']} lags inventory: {view}")
    return problems


def _applied_once(conn: psycopg.Connection, event_ids: list[str], what: str, consumer: str) -> list[str]:
    """Each event recorded exactly once in catalog's processed_events (catalog has one consumer per
    topic, so an id there twice would be a second application)."""
    rows = _rows(
        conn,
        "SELECT event_id::text AS event_id, count(*) AS n FROM catalog.processed_events"
        " WHERE event_id = ANY(%s::uuid[]) GROUP BY event_id",
        event_ids,
    )
    seen = {r["event_id"]: r["n"] for r in rows}
    problems = []
    missing = [e for e in event_ids if e not in seen]
    if missing:
        problems.append(f"{len(missing)} {what} not applied by catalog's {consumer} consumer")
    twice = [e for e, n in seen.items() if n != 1]
    if twice:
        problems.append(f"{len(twice)} {what} applied more than once by catalog: {twice[:5]}")
    return problems


def _topic_event_ids(bootstrap: str, topic: str, wanted: set[str]) -> collections.Counter[str]:
    """How many times each wanted event id is on the topic (read from the beginning to the end)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=2000,
    )
    counts: collections.Counter[str] = collections.Counter()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=1000, max_records=2000).values():
                for record in records:
                    headers = dict(record.headers or [])
                    event_id = headers.get("event-id", b"").decode()
                    if event_id in wanted:
                        counts[event_id] += 1
    finally:
        consumer.close()
    return counts
