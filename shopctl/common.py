"""Helpers every shopctl command uses: settings, async running, a DB pool per service schema."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from meshkit.db import open_pool
from meshkit.migrate import SERVICE_SCHEMAS
from meshkit.settings import CommonSettings, load_settings

T = TypeVar("T")
SCHEMAS = list(SERVICE_SCHEMAS.values())


def settings() -> CommonSettings:
    return load_settings(CommonSettings)


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
