"""shopctl audit: verify the hash chains, apply the retention (1 year hot, 3 years in total)."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console

from meshkit.audit import ChainProblem, archive_batch, purge_batch, verify
from meshkit.db import transaction
from shopctl.common import ALLOW_FUTURE_NOW, SCHEMAS, parse_now, run, schema_pool

app = typer.Typer(no_args_is_help=True, help="Audit trail: verify tamper evidence, apply retention.")
console = Console()


async def _audited_schemas(database_url: str | None) -> list[str]:
    """Schemas whose migrations created the audit tables (a service not deployed has none)."""
    present = []
    for schema in SCHEMAS:
        async with schema_pool(schema, database_url=database_url) as pool, pool.connection() as conn:
            cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (f"{schema}.audit_log",))
            if (await cur.fetchone())["ok"]:
                present.append(schema)
    return present


async def verify_all(database_url: str | None = None) -> dict[str, list[ChainProblem]]:
    found: dict[str, list[ChainProblem]] = {}
    for schema in await _audited_schemas(database_url):
        async with schema_pool(schema, database_url=database_url) as pool, pool.connection() as conn:
            found[schema] = await verify(conn)
    return found


async def retention_all(
    now: dt.datetime, *, batch_size: int = 1000, database_url: str | None = None
) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for schema in await _audited_schemas(database_url):
        moved_total = purged_total = 0
        async with schema_pool(schema, database_url=database_url) as pool:
            while True:  # one transaction per batch: an interrupted run resumes where it stopped
                async with transaction(pool) as conn:
                    moved = await archive_batch(conn, now=now, batch_size=batch_size)
                moved_total += moved
                if not moved:
                    break
            after: str | None = ""
            while after is not None:
                async with transaction(pool) as conn:
                    purged, after = await purge_batch(conn, now=now, batch_size=batch_size, after=after)
                purged_total += purged
        totals[schema] = (moved_total, purged_total)
    return totals


@app.command("verify")
def verify_command() -> None:
    """Recompute every audit chain; exit 1 and name the rows if any record was edited or deleted."""
    problems = run(verify_all())
    bad = 0
    for schema, items in problems.items():
        for problem in items:
            bad += 1
            row = f"id {problem.record_id}" if problem.record_id is not None else "(deleted)"
            console.print(
                f"[red]{schema}[/red] {problem.resource} seq {problem.chain_seq} {row}: {problem.problem}"
            )
    if bad:
        console.print(f"[red]audit verify: {bad} problem(s)[/red]")
        raise typer.Exit(1)
    console.print("audit verify: every chain intact")


@app.command("retention")
def retention_command(
    now: str = typer.Option("", help="ISO timestamp to use as 'now' (default: the current time)"),
    batch_size: int = typer.Option(1000, min=1, max=100_000),
    allow_future: bool = ALLOW_FUTURE_NOW,
) -> None:
    """Move records older than 1 year to the archive; purge archived records older than 3 years."""
    when = parse_now(now, allow_future=allow_future)
    for schema, (moved, purged) in run(retention_all(when, batch_size=batch_size)).items():
        console.print(f"{schema}: archived {moved}, purged {purged}")
