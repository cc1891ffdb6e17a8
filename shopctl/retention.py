"""shopctl retention run: the daily retention job, one command for the CronJob (the seed's table)."""

from __future__ import annotations

import typer

from shopctl import audit, catalog, orders

app = typer.Typer(no_args_is_help=True, help="Data retention (the seed's retention table).")


@app.command("run")
def run_retention(
    now: str = typer.Option("", help="The clock (ISO 8601); default: the current time."),
    batch_size: int = typer.Option(1000, min=1, max=100_000),
) -> None:
    """Audit logs 1 year hot / 3 in total; archived orders 7 years; search logs 90 days."""
    audit.retention_command(now=now, batch_size=batch_size)
    orders.purge(now=now, directory=None)
    catalog.purge_search_log()
