"""Fixtures every test may use: the real local servers, unique names, a throw-away database.

Integration tests talk to the servers `make infra-up` (or `make test`) starts. A server that does not
answer is a test failure naming it, never a skip. Subfolders add their own fixtures in their own
conftest.py files.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import valkey
from kafka import KafkaAdminClient
from psycopg import sql

from meshkit.settings import CommonSettings, load_settings

# One `mesh` session fixture for the whole run (real service processes); defining it in several
# conftest files would start a second mesh on the same database.
pytest_plugins = ["tests.harness"]

FAULT_DIR = Path(__file__).parent / "fault"


@dataclasses.dataclass(frozen=True)
class InfraEndpoints:
    """Where the local servers answer (from the SHOPMESH_* variables, defaults = `make infra-up`)."""

    database_url: str
    valkey_url: str
    kafka_bootstrap: str
    opensearch_url: str


def _check_postgres(url: str) -> None:
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("select 1")


def _check_valkey(url: str) -> None:
    client = valkey.Valkey.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()


def _check_kafka(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
    try:
        admin.list_topics()
    finally:
        admin.close()


def _check_opensearch(url: str) -> None:
    health = httpx.get(f"{url}/_cluster/health", timeout=5).raise_for_status().json()
    if health["status"] not in {"green", "yellow"}:
        raise RuntimeError(f"cluster health is {health['status']}")


@pytest.fixture(scope="session")
def infra_endpoints() -> InfraEndpoints:
    """The four servers' addresses, after checking that each one answers; fails the test otherwise."""
    settings = load_settings(CommonSettings)
    endpoints = InfraEndpoints(
        database_url=settings.database_url,
        valkey_url=settings.valkey_url,
        kafka_bootstrap=settings.kafka_bootstrap,
        opensearch_url=settings.opensearch_url,
    )
    checks: list[tuple[str, Callable[[str], None], str]] = [
        ("PostgreSQL", _check_postgres, endpoints.database_url),
        ("Valkey", _check_valkey, endpoints.valkey_url),
        ("Kafka", _check_kafka, endpoints.kafka_bootstrap),
        ("OpenSearch", _check_opensearch, endpoints.opensearch_url),
    ]
    missing = []
    for name, check, address in checks:
        try:
            check(address)
        except Exception as exc:
            missing.append(f"{name} at {address}: {type(exc).__name__}: {exc}")
    if missing:
        pytest.fail(
            "local infrastructure is not answering:\n  " + "\n  ".join(missing)
            + "\nStart it with `make infra-up` (or run the tests through `make test`).",
            pytrace=False,
        )  # fmt: skip
    return endpoints


def make_unique_name(prefix: str) -> str:
    """`prefix_<12 hex>`: valid as a Kafka topic, an OpenSearch index (lowercase prefix) and a SQL name."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def unique_name() -> Callable[[str], str]:
    """A function giving a fresh name per call, e.g. `unique_name("orders")` -> `orders_1f2e3d4c5b6a`."""
    return make_unique_name


@pytest.fixture(scope="session")
def test_database(infra_endpoints: InfraEndpoints) -> Iterator[str]:
    """A fresh, empty database `shopmesh_t_<hex>` for this test session; yields its URL, drops it after."""
    name = f"shopmesh_t_{uuid.uuid4().hex[:12]}"
    admin_url = urlsplit(infra_endpoints.database_url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(infra_endpoints.database_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _is_fault_test(item: pytest.Item) -> bool:
    return item.get_closest_marker("fault") is not None or FAULT_DIR in Path(item.path).parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/fault/ as `fault` (so `-m "not fault"` skips it) and run fault tests last."""
    for item in items:
        if FAULT_DIR in Path(item.path).parents and item.get_closest_marker("fault") is None:
            item.add_marker(pytest.mark.fault)
    items.sort(key=_is_fault_test)  # stable: keeps every other order as collected
