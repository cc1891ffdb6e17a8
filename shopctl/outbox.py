"""shopctl outbox status / replay, for every service schema."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from meshkit.outbox import outbox_status
from shopctl.common import SCHEMAS, run, schema_pool

app = typer.Typer(no_args_is_help=True, help="Transactional outbox: backlog and replay.")
console = Console()


@app.command("status")
def status() -> None:
    """Unsent events and the age of the oldest, per service."""

    async def gather():
        found = {}
        for schema in SCHEMAS:
            async with schema_pool(schema) as pool:
                found[schema] = await outbox_status(pool)
        return found

    table = Table("schema", "unsent", "total", "oldest unsent")
    for schema, row in run(gather()).items():
        table.add_row(schema, str(row["unsent"]), str(row["total"]), str(row["oldest_unsent"] or "-"))
    console.print(table)


@app.command("replay")
def replay(
    schema: str = typer.Argument(..., help="catalog, inventory or orders"),
    since_id: int = typer.Option(..., "--since-id", help="re-publish events with outbox id >= this"),
) -> None:
    """Mark events unsent again so the relay re-publishes them (consumers drop duplicates by event id)."""
    if schema not in SCHEMAS:
        console.print(f"[red]unknown schema {schema!r}; one of {', '.join(SCHEMAS)}[/red]")
        raise typer.Exit(2)

    async def mark() -> int:
        async with schema_pool(schema) as pool, pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE outbox SET sent_at = NULL WHERE id >= %s AND sent_at IS NOT NULL", (since_id,)
            )
            return cur.rowcount

    console.print(f"{schema}: {run(mark())} events queued for re-publishing")
