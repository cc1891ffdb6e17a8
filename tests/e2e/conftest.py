"""End-to-end fixtures: the real gateway process in front of the real services (tests.harness).

`gateway` starts the gateway (and nothing else: tests start the services they use, so a test fails,
never skips, when its service is missing) and returns a helper with an httpx client and token minting
with the session's JWT secret.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest_asyncio

from tests.harness import Mesh

# generous anonymous/browse buckets: every e2e test shares 127.0.0.1; tests that exercise the limiter
# restart the gateway with small buckets and restore these afterwards
E2E_GATEWAY_ENV = {
    "SHOPMESH_RATE_LIMITS": "browse=5000/5000,cart=1000/1000,orders=1000/1000,checkout=1000/1000,admin=5000/5000",
}


class Gateway:
    def __init__(self, the_mesh: Mesh, client: httpx.AsyncClient) -> None:
        self.mesh = the_mesh
        self.client = client
        self.url = the_mesh.gateway_url

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            **E2E_GATEWAY_ENV,
            "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"test:{self.mesh.suffix}:{uuid.uuid4().hex[:6]}",
            **overrides,
        }

    def token(
        self, user: str, *roles: str, ttl: int = 600, secret: str | None = None, **claims: object
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": user,
            "roles": list(roles),
            "aud": "shopmesh",
            "iat": now,
            "exp": now + ttl,
            **claims,
        }
        return jwt.encode(payload, secret or self.mesh.jwt_secret, algorithm="HS256")

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, *roles)}"}

    async def restart(self, **env: str) -> None:
        await self.mesh.restart("gateway", extra_env=self.env(**env))


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture(scope="session")
async def gateway(mesh: Mesh) -> AsyncIterator[Gateway]:
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30.0) as client:
        helper = Gateway(mesh, client)
        await mesh.start("gateway", extra_env=helper.env())
        yield helper
