"""shopctl orders: recovery of interrupted checkouts, archival, cold-tier export and purge.

They run order_svc's own job code against its schema with the service's settings (SHOPMESH_*), so
they work while order_svc is down. `--now` injects the clock (ISO 8601) for the retention jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import typer
import valkey.asyncio as valkey_asyncio

from meshkit.db import open_pool
from order_svc import archival
from order_svc.bootstrap import OrderApp, build_app
from order_svc.config import OrderSettings, load
from shopctl.common import ALLOW_FUTURE_NOW, parse_now

app = typer.Typer(no_args_is_help=True, help="Orders: recovery, archival, cold-tier export and purge.")


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@contextlib.asynccontextmanager
async def _pool(settings: OrderSettings):
    pool = await open_pool(
        settings.database_url, schema="orders", min_size=1, max_size=4, name="shopctl-orders"
    )
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def order_app(settings: OrderSettings) -> AsyncIterator[OrderApp]:
    """order_svc's use cases in this process, on their own pool and Valkey client (jobs, tests)."""
    client = valkey_asyncio.from_url(settings.valkey_url, socket_timeout=2, socket_connect_timeout=2)
    async with _pool(settings) as pool:
        built = build_app(settings, pool, client)
        try:
            yield built
        finally:
            for channel in built.channels:
                await channel.close()
            await client.aclose()


@app.command("recover")
def recover(
    min_age: float = typer.Option(60.0, help="Only orders idle at least this many seconds."),
    limit: int = typer.Option(0, help="Most orders to handle (0: all that qualify)."),
) -> None:
    """Complete or compensate checkouts left PENDING (and cancels/refunds left half-done)."""
    settings = load()

    async def job() -> dict[str, Any]:
        async with order_app(settings) as built:
            completed, compensated = await built.recovery.recover(
                min_age=dt.timedelta(seconds=min_age), limit=limit
            )
        return {"completed": [str(i) for i in completed], "compensated": [str(i) for i in compensated]}

    _print(asyncio.run(job()))


@app.command("archive")
def archive(
    now: str = typer.Option("", help="The clock (ISO 8601); default: the current time."),
    batch_size: int = typer.Option(archival.BATCH_SIZE, min=1, max=100_000, help="Orders per transaction."),
    max_batches: int = typer.Option(0, min=0, help="Stop after this many batches (0: until done)."),
    allow_future: bool = ALLOW_FUTURE_NOW,
) -> None:
    """Archive delivered/cancelled/refunded/failed orders older than 2 years and anonymize the live rows."""
    settings, moment = load(), parse_now(now, allow_future=allow_future)

    async def job() -> int:
        async with _pool(settings) as pool:
            return await archival.archive_orders(
                pool, now=moment, batch_size=batch_size, max_batches=max_batches
            )

    _print({"archived": asyncio.run(job()), "now": moment.isoformat()})


@app.command("export")
def export(
    directory: Path = typer.Option(
        None, "--dir", help="Where the .jsonl.gz files go (default SHOPMESH_ORDER_ARCHIVE_DIR)."
    ),
    now: str = typer.Option("", help="The clock (ISO 8601); default: the current time."),
    allow_future: bool = ALLOW_FUTURE_NOW,
) -> None:
    """Write archived orders not yet exported to gzip JSON Lines files (the cold tier)."""
    settings, moment = load(), parse_now(now, allow_future=allow_future)
    target = directory or Path(settings.order_archive_dir)

    async def job() -> list[Path]:
        async with _pool(settings) as pool:
            return await archival.export_archives(pool, directory=target, now=moment)

    files = asyncio.run(job())
    _print({"files": [str(f) for f in files], "directory": str(target)})


@app.command("read-export")
def read_export(path: Path = typer.Argument(..., help="A .jsonl.gz file or a directory of them.")) -> None:
    """Print the orders held in cold-tier files, one JSON object per line."""
    records = archival.read_exports(path).values() if path.is_dir() else archival.read_export(path)
    for record in records:
        typer.echo(json.dumps(record, sort_keys=True))


@app.command("purge")
def purge(
    now: str = typer.Option("", help="The clock (ISO 8601); default: the current time."),
    directory: Path = typer.Option(
        None, "--dir", help="Cold-tier directory to purge too (default SHOPMESH_ORDER_ARCHIVE_DIR)."
    ),
    allow_future: bool = ALLOW_FUTURE_NOW,
) -> None:
    """Delete archived orders (and cold files) older than the 7-year retention."""
    settings, moment = load(), parse_now(now, allow_future=allow_future)
    target = directory or Path(settings.order_archive_dir)

    async def job() -> tuple[int, list[Path]]:
        async with _pool(settings) as pool:
            return await archival.purge_archives(pool, now=moment, directory=target)

    purged, files = asyncio.run(job())
    _print({"purged": purged, "files_removed": [str(f) for f in files], "now": moment.isoformat()})
