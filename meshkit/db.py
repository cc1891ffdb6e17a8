"""PostgreSQL access: one bounded async pool per service, pinned to the service's own schema."""

from __future__ import annotations

import contextlib
import select
from collections.abc import AsyncIterator

import psycopg
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from meshkit.errors import Unavailable

# Errors that mean "the database went away", reported to callers as UNAVAILABLE so they retry.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


async def open_pool(
    database_url: str,
    *,
    schema: str,
    min_size: int = 2,
    max_size: int = 20,
    name: str | None = None,
    connect_timeout: float = 5.0,
) -> AsyncConnectionPool:
    """Open a pool whose connections use `search_path=<schema>`, so SQL never names another schema."""
    pool = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name or schema,
        timeout=connect_timeout,
        open=False,
        check=check_connection,
        kwargs={
            "options": f"-c search_path={schema},public -c application_name={name or schema}",
            "row_factory": dict_row,
            "autocommit": True,
        },
    )
    await pool.open(wait=True, timeout=connect_timeout * 3)
    return pool


async def check_connection(conn: psycopg.AsyncConnection) -> None:
    """Pool check before a connection is handed out: a round trip only when the server may have ended it.

    An idle pooled connection has nothing to read. When the server ends it (restart, terminated backend,
    idle timeout, a proxy dropping it) it sends an error and/or closes the socket, which makes the socket
    readable: then psycopg's round-trip check runs and a dead connection is discarded (the pool tries the
    next one). A quiet socket is handed out at once. Before, every transaction paid one extra round trip
    (an empty query) before its first statement: on the hot reserve path, two round trips instead of one.
    """
    if conn.closed or conn.pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


@contextlib.asynccontextmanager
async def transaction(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """One unit of work: commit on clean exit, roll back on any exception.

    Connection failures surface as `Unavailable` so gRPC callers see UNAVAILABLE and may retry.
    """
    try:
        async with pool.connection() as conn, conn.transaction():
            yield conn
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"database unavailable: {exc.__class__.__name__}") from exc


@contextlib.asynccontextmanager
async def connection(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled autocommit connection for single read statements."""
    try:
        async with pool.connection() as conn:
            yield conn
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"database unavailable: {exc.__class__.__name__}") from exc


def pool_saturation(pool: AsyncConnectionPool) -> float:
    """Share of the pool's connections in use (0..1), for the saturation gauge."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    if not size:
        return 0.0
    return (size - stats.get("pool_available", 0)) / pool.max_size
