"""A second gateway process with the PRODUCTION auth settings, in front of the session's services.

RS256 with a key pair generated for the session (the private key stays in the test: it plays the
identity provider), a required issuer and audience. It runs next to the session's HS256 gateway,
on its own port with its own log file, so other tests keep theirs; it is stopped at session end.
Its spans go to an OTLP receiver of this test (tests/observability/otlp.py), so the secret tests
can search them too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import Mesh, ServiceProcess, free_port
from tests.observability.otlp import TraceReceiver

ISSUER = "https://id.shopmesh.test/"
AUDIENCE = "shopmesh"
SERVICES = ("catalog_svc", "inventory_svc", "order_svc")


def _pem_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@dataclasses.dataclass
class SecureGateway:
    mesh: Mesh
    url: str
    private_key: bytes
    public_key: bytes
    process: ServiceProcess
    receiver: TraceReceiver
    client: httpx.AsyncClient
    tokens_used: list[str] = dataclasses.field(default_factory=list)

    def token(
        self, user: str, *roles: str, ttl: int = 600, key: bytes | None = None, **claims: object
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": user,
            "roles": list(roles),
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": now,
            "exp": now + ttl,
            **claims,
        }
        token = jwt.encode(payload, key or self.private_key, algorithm="RS256")
        self.tokens_used.append(token)
        return token

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, *roles)}"}


def new_user(prefix: str = "sec") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture(scope="session")
async def secure_gateway(
    mesh: Mesh, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecureGateway]:
    for name in SERVICES:
        await mesh.start(name)
    private, public = _pem_pair()
    folder = tmp_path_factory.mktemp("secure-gateway")
    key_path = folder / "jwt-public.pem"
    key_path.write_bytes(public)
    receiver = TraceReceiver()
    await receiver.start()
    port = free_port()
    env = mesh.env_for(
        "gateway",
        {
            "SHOPMESH_GATEWAY_PORT": str(port),
            "SHOPMESH_JWT_ALGORITHM": "RS256",
            "SHOPMESH_JWT_PUBLIC_KEY": str(key_path),
            "SHOPMESH_JWT_ISSUER": ISSUER,
            "SHOPMESH_JWT_AUDIENCE": AUDIENCE,
            # no HS256 secret at all: a token signed with any shared secret must fail
            "SHOPMESH_JWT_SECRET": "",
            "SHOPMESH_RATE_LIMITS": "browse=2000/2000,cart=2000/2000,orders=2000/2000,checkout=2000/2000,admin=2000/2000",
            "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"security:{mesh.suffix}",
            "SHOPMESH_OTLP_ENDPOINT": receiver.endpoint,
        },
    )
    process = ServiceProcess("gateway", env, mesh.workdir / "gateway-rs256.log")
    process.spawn()
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=20.0) as client:
        deadline = time.monotonic() + 60
        while True:
            if not process.running:
                pytest.fail(f"the RS256 gateway exited:\n{process.log_tail()}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the RS256 gateway did not become healthy:\n{process.log_tail()}")
            await asyncio.sleep(0.2)
        try:
            yield SecureGateway(mesh, url, private, public, process, receiver, client)
        finally:
            process.signal(15)
            if await process.wait_exit(10) is None:
                process.signal(9)
                await process.wait_exit(5)
            await receiver.stop()


def log_files(mesh: Mesh) -> list[Path]:
    return sorted(mesh.workdir.glob("*.log"))
