"""Helpers every shopctl command uses: settings, async running, a DB pool per service schema."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import typer
from psycopg_pool import AsyncConnectionPool

from meshkit.db import open_pool
from meshkit.migrate import SERVICE_SCHEMAS
from meshkit.settings import CommonSettings, load_settings

T = TypeVar("T")
SCHEMAS = list(SERVICE_SCHEMAS.values())
# how far ahead of this machine's clock --now may be without --allow-future-now (clock skew)
FUTURE_NOW_SLACK = dt.timedelta(minutes=5)
ALLOW_FUTURE_NOW = typer.Option(
    False, "--allow-future-now", help="Accept a --now later than the current time (tests, drills)."
)


def settings() -> CommonSettings:
    return load_settings(CommonSettings)


def parse_now(value: str, *, allow_future: bool = False) -> dt.datetime:
    """The clock a retention command runs with: `--now` (ISO 8601; UTC when it names no zone), or
    the current time. A --now in the future is refused unless asked for: the retention jobs archive,
    anonymize and purge what is old *relative to it*, irreversibly, so a mistyped year would treat
    every recent order or audit record as past its retention."""
    current = dt.datetime.now(dt.UTC)
    if not value:
        return current
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"--now: not an ISO 8601 time: {value!r}", err=True)
        raise typer.Exit(2) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    if moment > current + FUTURE_NOW_SLACK and not allow_future:
        typer.echo(
            f"--now {moment.isoformat()} is in the future (now {current.isoformat(timespec='seconds')}):"
            " recent data would count as past its retention; pass --allow-future-now to mean it",
            err=True,
        )
        raise typer.Exit(2)
    return moment


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def schema_pool(schema: str, *, database_url: str | None = None) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(
        database_url or settings().database_url,
        schema=schema,
        min_size=1,
        max_size=2,
        name=f"shopctl-{schema}",
    )
    try:
        yield pool
    finally:
        await pool.close()
