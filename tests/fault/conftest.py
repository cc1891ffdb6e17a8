"""Fixtures of the fault suite: control of the real servers, the shop behind the gateway, a recorder.

Every test here is marked `fault` by the root conftest and runs last. Outages are short and set by
SHOPMESH_FAULT_* variables (FaultSettings), so the suite stays within its time budget; after every
test, whatever it did, all four servers are running again (a killed server the test could not
restore is started here, and the test fails if that was needed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from meshkit.settings import load_settings
from tests.fault.history import History
from tests.fault.scenario import FaultSettings
from tests.fault.servers import ServerControl
from tests.fault.workload import ensure_shop, http_client
from tests.harness import Mesh


@pytest.fixture(scope="session")
def fault_settings() -> FaultSettings:
    settings = load_settings(FaultSettings)
    assert settings.fault_users >= 50, "SHOPMESH_FAULT_USERS must be >= 50 (50 requests in flight)"
    return settings


@pytest.fixture(scope="session")
def servers() -> ServerControl:
    return ServerControl()


@pytest_asyncio.fixture(autouse=True)
async def _servers_restored(servers: ServerControl) -> AsyncIterator[None]:
    yield
    restarted = await servers.ensure_all_up()
    assert not restarted, f"the test left {restarted} stopped (restarted them now)"


def _port(url: str) -> int | None:
    return urlsplit(url if "://" in url else f"//{url}").port


@pytest_asyncio.fixture
async def shop(mesh: Mesh, servers: ServerControl) -> AsyncIterator[Mesh]:
    # the servers these tests kill must be the ones the services use: when the mesh gave the services
    # default-port Valkey/OpenSearch while infra ran elsewhere, killing infra's changed nothing for them
    # (a breaker that never opened, a fail-open counter that never moved)
    infra = servers.infra.settings
    used = {
        "postgres": (_port(mesh.database_url), infra.pg_port),
        "valkey": (_port(mesh.env["SHOPMESH_VALKEY_URL"]), infra.valkey_port),
        "kafka": (_port(mesh.env["SHOPMESH_KAFKA_BOOTSTRAP"].split(",")[0]), infra.kafka_port),
        "opensearch": (_port(mesh.env["SHOPMESH_OPENSEARCH_URL"]), infra.opensearch_port),
    }
    wrong = {name: ports for name, ports in used.items() if ports[0] != ports[1]}
    assert not wrong, f"services use other servers than the ones the fault tests kill: {wrong}"
    await ensure_shop(mesh)
    yield mesh


@pytest_asyncio.fixture
async def history(shop: Mesh, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    async with http_client(shop) as client:
        recorded = History(client)
        try:
            yield recorded
        finally:
            path = tmp_path / "history.jsonl"
            recorded.dump(path)
            print(f"\n{request.node.name}: history of {len(recorded.ops)} requests in {path}")
