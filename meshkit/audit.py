"""Audit trail: who did what to which resource, written in the same transaction as the change.

Tamper evidence: records form one SHA-256 hash chain per resource (hash = H(prev_hash, canonical
record)). A chain's head lives in `audit_chain_heads`, outside the audited table, so editing any
record, deleting one from the middle, or deleting the newest one all break verification. Chains
are per resource, so audited writes only contend where the resource itself is already locked.

Records never carry secrets or full addresses: callers pass field summaries through `redact`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from psycopg import AsyncConnection

from meshkit.context import current_principal, request_id_var

SENSITIVE_KEYS = {"payment_token", "token", "card", "password", "secret", "authorization"}
ADDRESS_KEYS = {"shipping_address", "billing_address", "address"}
GENESIS = ""

log = logging.getLogger(__name__)


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop secrets; reduce addresses to their country (no full addresses in the audit log)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key in SENSITIVE_KEYS:
            continue
        if key in ADDRESS_KEYS:
            country = value.get("country_code", "") if isinstance(value, Mapping) else ""
            clean[key] = {"country_code": country, "redacted": True}
            continue
        clean[key] = value
    return clean


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """Changed fields as {field: {"before": x, "after": y}} (redacted)."""
    before, after = redact(before or {}), redact(after or {})
    changes = {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changes[key] = {"before": before.get(key), "after": after.get(key)}
    return changes


def _canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return value


def record_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    body = {
        key: _canonical(record[key])
        for key in (
            "resource",
            "chain_seq",
            "occurred_at",
            "service",
            "actor",
            "actor_roles",
            "action",
            "request_id",
            "trace_id",
            "changes",
        )
    }
    body["actor_roles"] = list(body["actor_roles"])
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + "\n" + payload).encode()).hexdigest()


def build_record(
    *,
    service: str,
    action: str,
    resource: str,
    changes: Mapping[str, Any],
    chain_seq: int,
    prev_hash: str,
    occurred_at: dt.datetime,
    actor: str | None = None,
    actor_roles: Iterable[str] | None = None,
) -> dict[str, Any]:
    """One chain record (the audit_log row's fields, `prev_hash` and `hash` included), not written.

    For writers that insert records themselves in a single round trip (a stored function) and so
    cannot read the chain head first: they pass the head they expect and must fail if it moved."""
    principal = current_principal()
    actor = actor or (principal.subject if principal else "system")
    roles = list(actor_roles if actor_roles is not None else (principal.roles if principal else ()))
    span = trace.get_current_span().get_span_context()
    record = {
        "resource": resource,
        "chain_seq": chain_seq,
        "occurred_at": occurred_at,
        "service": service,
        "actor": actor,
        "actor_roles": roles,
        "action": action,
        "request_id": request_id_var.get(),
        "trace_id": format(span.trace_id, "032x") if span.is_valid else "",
        "changes": json.loads(json.dumps(dict(changes), default=str)),
    }
    record["prev_hash"] = prev_hash
    record["hash"] = record_hash(prev_hash, record)
    return record


async def audit(
    conn: AsyncConnection,
    *,
    service: str,
    action: str,
    resource: str,
    changes: Mapping[str, Any],
    actor: str | None = None,
    actor_roles: Iterable[str] | None = None,
) -> int:
    """Append one record to the resource's chain inside the caller's transaction. Returns its id."""
    # lock (or create) the chain head: per resource, so only writers of this resource wait
    cur = await conn.execute(
        "INSERT INTO audit_chain_heads (resource, seq, hash) VALUES (%s, 0, %s)"
        " ON CONFLICT (resource) DO UPDATE SET resource = EXCLUDED.resource RETURNING seq, hash",
        (resource, GENESIS),
    )
    head = await cur.fetchone()
    cur = await conn.execute("SELECT date_trunc('microseconds', clock_timestamp()) AS now")
    occurred_at = (await cur.fetchone())["now"]
    record = build_record(
        service=service,
        action=action,
        resource=resource,
        changes=changes,
        chain_seq=head["seq"] + 1,
        prev_hash=head["hash"],
        occurred_at=occurred_at,
        actor=actor,
        actor_roles=actor_roles,
    )
    cur = await conn.execute(
        "INSERT INTO audit_log (occurred_at, service, actor, actor_roles, action, resource, request_id,"
        " trace_id, changes, chain_seq, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            occurred_at,
            service,
            record["actor"],
            record["actor_roles"],
            action,
            resource,
            record["request_id"],
            record["trace_id"],
            json.dumps(record["changes"]),
            record["chain_seq"],
            record["prev_hash"],
            record["hash"],
        ),
    )
    audit_id = (await cur.fetchone())["id"]
    await conn.execute(
        "UPDATE audit_chain_heads SET seq = %s, hash = %s, updated_at = now() WHERE resource = %s",
        (record["chain_seq"], record["hash"], resource),
    )
    return int(audit_id)


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    resource: str
    chain_seq: int
    record_id: int | None
    problem: str


async def verify(conn: AsyncConnection) -> list[ChainProblem]:
    """Recompute every chain (archive + live) and compare with its anchored head.

    Heads and records are read in one REPEATABLE READ snapshot (`conn` outside a transaction): read
    one after the other, a write or a retention purge between the two reads was reported as deleted
    or missing records on a live system."""
    problems: list[ChainProblem] = []
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(
            "SELECT resource, seq, hash, base_seq, base_hash FROM audit_chain_heads ORDER BY resource"
        )
        heads = {row["resource"]: row for row in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT id, occurred_at, service, actor, actor_roles, action, resource, request_id, trace_id,"
            " changes, chain_seq, prev_hash, hash FROM ("
            "  SELECT * FROM audit_log_archive UNION ALL SELECT * FROM audit_log) AS everything"
            " ORDER BY resource, chain_seq"
        )
        rows = await cur.fetchall()
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_resource.setdefault(row["resource"], []).append(row)
    for resource in sorted(set(heads) | set(by_resource)):
        head = heads.get(resource)
        chain = by_resource.get(resource, [])
        if head is None:
            problems.append(
                ChainProblem(resource, chain[0]["chain_seq"], chain[0]["id"], "records without a chain head")
            )
            continue
        expected_seq, expected_prev = head["base_seq"] + 1, head["base_hash"]
        for row in chain:
            if row["chain_seq"] != expected_seq:
                problems.append(
                    ChainProblem(
                        resource,
                        expected_seq,
                        None,
                        f"record seq {expected_seq} is missing (found {row['chain_seq']})",
                    )
                )
            if row["prev_hash"] != expected_prev:
                problems.append(
                    ChainProblem(
                        resource,
                        row["chain_seq"],
                        row["id"],
                        "prev_hash does not link to the previous record",
                    )
                )
            if record_hash(row["prev_hash"], row) != row["hash"]:
                problems.append(
                    ChainProblem(resource, row["chain_seq"], row["id"], "record was edited (hash mismatch)")
                )
            expected_seq, expected_prev = row["chain_seq"] + 1, row["hash"]
        if head["seq"] != expected_seq - 1 or head["hash"] != expected_prev:
            problems.append(
                ChainProblem(
                    resource,
                    head["seq"],
                    None,
                    f"chain ends at seq {expected_seq - 1} but its head says {head['seq']}: newest records deleted",
                )
            )
    return problems


HOT_DAYS = 365
TOTAL_DAYS = 3 * 365


async def archive_batch(
    conn: AsyncConnection, *, now: dt.datetime, hot_days: int = HOT_DAYS, batch_size: int = 1000
) -> int:
    """Retention, step 1: move one batch of records older than the hot period to the archive (still
    verified with the live ones). Returns how many moved; call until 0."""
    cur = await conn.execute(
        "WITH moved AS (DELETE FROM audit_log WHERE id IN ("
        "  SELECT id FROM audit_log WHERE occurred_at < %s ORDER BY occurred_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING *) INSERT INTO audit_log_archive SELECT * FROM moved RETURNING id",
        (now - dt.timedelta(days=hot_days), batch_size),
    )
    return len(await cur.fetchall())


async def purge_batch(
    conn: AsyncConnection,
    *,
    now: dt.datetime,
    total_days: int = TOTAL_DAYS,
    batch_size: int = 1000,
    after: str = "",
) -> tuple[int, str | None]:
    """Retention, step 2: delete one batch of archived records past the total retention that are the
    verified start of their chain, for chains (resources) after `after`; returns (purged, the
    `after` of the next batch, or None when done). Each batch is its own transaction.

    Purging re-bases the chain head on the last purged record, so whatever those records were stops
    being checked. Each chain's records are therefore purged only from its base on, while they link
    and their hashes recompute, stopping at the first that does not: an edited record (say, one
    backdated to fall past the cutoff) and everything after it stay for `verify` to report, instead
    of vanishing with the evidence. A chain it stops in is passed over by the next batches, which
    go on in resource order, so what stays never holds the purge of other chains up."""
    cutoff = now - dt.timedelta(days=total_days)
    cur = await conn.execute(
        "SELECT a.*, h.base_seq, h.base_hash"
        " FROM audit_log_archive a JOIN audit_chain_heads h ON h.resource = a.resource"
        " WHERE a.occurred_at < %s AND a.resource > %s ORDER BY a.resource, a.chain_seq LIMIT %s"
        " FOR UPDATE OF a, h SKIP LOCKED",
        (cutoff, after, batch_size),
    )
    rows = await cur.fetchall()
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_resource.setdefault(row["resource"], []).append(row)
    purge: list[int] = []
    refused: list[str] = []
    stopped: set[str] = set()
    for resource, chain in by_resource.items():
        expected_seq, expected_prev = chain[0]["base_seq"] + 1, chain[0]["base_hash"]
        last = None
        for row in chain:
            if row["chain_seq"] != expected_seq:
                stopped.add(resource)  # the record before it is not past the cutoff (or is missing)
                break
            if row["prev_hash"] != expected_prev or record_hash(row["prev_hash"], row) != row["hash"]:
                refused.append(f"{resource} seq {row['chain_seq']}")
                stopped.add(resource)
                break
            purge.append(row["id"])
            last = row
            expected_seq, expected_prev = row["chain_seq"] + 1, row["hash"]
        if last is not None:
            await conn.execute(
                "UPDATE audit_chain_heads SET base_seq = %s, base_hash = %s WHERE resource = %s",
                (last["chain_seq"], last["hash"], resource),
            )
    if refused:
        log.error(
            "audit retention kept records that do not verify (run shopctl audit verify)",
            extra={"chains": refused[:20], "count": len(refused)},
        )
    if purge:
        await conn.execute("DELETE FROM audit_log_archive WHERE id = ANY(%s)", (purge,))
    if len(rows) < batch_size:
        return len(purge), None  # every candidate after `after` was seen
    # a full batch may have cut the last chain short: start the next batch at it, unless the purge
    # stopped in it (then after it), or it is the only chain and was purged as far as selected
    resources = list(by_resource)
    last_resource = resources[-1]
    if last_resource in stopped:
        return len(purge), last_resource
    if len(resources) == 1:
        return len(purge), after
    return len(purge), resources[-2]


async def list_records(
    conn: AsyncConnection,
    *,
    resource: str = "",
    actor: str = "",
    before: tuple[dt.datetime, int] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated by (occurred_at, id)."""
    clauses, params = [], []
    if resource:
        clauses.append("resource = %s")
        params.append(resource)
    if actor:
        clauses.append("actor = %s")
        params.append(actor)
    if before:
        clauses.append("(occurred_at, id) < (%s, %s)")
        params += [before[0], before[1]]
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    cur = await conn.execute(
        "SELECT id, occurred_at, service, actor, actor_roles, action, resource, request_id, trace_id, changes"
        f" FROM audit_log {where} ORDER BY occurred_at DESC, id DESC LIMIT %s",
        (*params, limit),
    )
    return await cur.fetchall()
