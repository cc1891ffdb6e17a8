"""shopctl retention run: the daily retention job, one command for the CronJob (the seed's table)."""

from __future__ import annotations

import typer

from shopctl import audit, catalog, orders
from shopctl.common import ALLOW_FUTURE_NOW, parse_now

app = typer.Typer(no_args_is_help=True, help="Data retention (the seed's retention table).")


@app.command("run")
def run_retention(
    now: str = typer.Option("", help="The clock (ISO 8601); default: the current time."),
    batch_size: int = typer.Option(1000, min=1, max=100_000),
    allow_future: bool = ALLOW_FUTURE_NOW,
) -> None:
    """Audit logs 1 year hot / 3 in total; archived orders 7 years; search logs 90 days."""
    parse_now(now, allow_future=allow_future)  # refused before any of the jobs runs
    audit.retention_command(now=now, batch_size=batch_size, allow_future=allow_future)
    orders.purge(now=now, directory=None, allow_future=allow_future)
    catalog.purge_search_log()
