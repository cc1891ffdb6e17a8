"""Fuzzing fixtures: the three services (and, for HTTP fuzzing, the gateway) as real processes."""

from __future__ import annotations

import pytest_asyncio

from tests.harness import Mesh

SERVICES = ("catalog_svc", "inventory_svc", "order_svc")
# generous buckets: fuzzers send many requests from one address
FUZZ_GATEWAY_ENV = {
    "SHOPMESH_RATE_LIMITS": "browse=5000/5000,cart=2000/2000,orders=2000/2000,checkout=2000/2000,admin=5000/5000",
}


@pytest_asyncio.fixture(scope="session")
async def fuzz_mesh(mesh: Mesh) -> Mesh:
    for name in SERVICES:
        await mesh.start(name)
    return mesh


@pytest_asyncio.fixture(scope="session")
async def fuzz_gateway(fuzz_mesh: Mesh) -> Mesh:
    proc = fuzz_mesh.procs.get("gateway")
    limits = FUZZ_GATEWAY_ENV["SHOPMESH_RATE_LIMITS"]
    if proc is None or not proc.running or proc.env.get("SHOPMESH_RATE_LIMITS") != limits:
        await fuzz_mesh.stop("gateway")
        await fuzz_mesh.start(
            "gateway",
            extra_env={**FUZZ_GATEWAY_ENV, "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"fuzz:{fuzz_mesh.suffix}"},
        )
    return fuzz_mesh
