"""Fixtures for the scrape and trace tests: the real service processes (tests.harness) on a database
of their own.

Gauges such as `outbox_relay_leader` or `outbox_oldest_age_seconds` describe "the" relay of a service,
and every mesh of a test session shares the session database (and so the relay's advisory lock and the
outbox rows). The services these tests scrape run on a private database, so the process scraped is the
only one of its kind there and each number it reports is caused by the test alone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from meshkit.migrate import ROOT, SERVICE_SCHEMAS, apply_migrations
from tests.conftest import InfraEndpoints
from tests.harness import Mesh, mesh  # noqa: F401  (session fixture: real service processes)
from tests.observability.shop import Shop


@pytest.fixture(scope="session")
def private_database(infra_endpoints: InfraEndpoints) -> Iterator[str]:
    """A fresh database with every service's migrations, only for the processes these tests start."""
    name = f"shopmesh_obs_{uuid.uuid4().hex[:12]}"
    admin_url = urlsplit(infra_endpoints.database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = urlsplit(infra_endpoints.database_url)._replace(path=f"/{name}").geturl()
    try:
        for package in SERVICE_SCHEMAS:
            if (ROOT / package / "migrations").is_dir():
                apply_migrations(url, package)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def obs_mesh(mesh: Mesh, private_database: str) -> Mesh:  # noqa: F811
    """This directory's mesh, pointed at the private database before any of its services starts."""
    mesh.database_url = private_database
    mesh.env["SHOPMESH_DATABASE_URL"] = private_database
    return mesh


@pytest_asyncio.fixture(scope="module")
async def shop(obs_mesh: Mesh) -> AsyncIterator[Shop]:
    """The three services and the gateway, driven over HTTP."""
    async with httpx.AsyncClient(base_url=obs_mesh.gateway_url, timeout=30.0) as client:
        the_shop = Shop(obs_mesh, client)
        await the_shop.start()
        yield the_shop
