"""A shopper and an admin driving the whole mesh through the real gateway (HTTP/JSON), for the scrape
and trace tests."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import jwt
import psycopg

from tests.harness import Mesh

SHIPPING = {
    "name": "Obs Tester",
    "line1": "1 Metric Way",
    "city": "London",
    "postalCode": "N1 9GU",
    "countryCode": "GB",
}
# generous buckets: these tests are not about the limiter (except the fail-open one)
GATEWAY_ENV = {
    "SHOPMESH_RATE_LIMITS": "browse=5000/5000,cart=1000/1000,orders=1000/1000,checkout=1000/1000,admin=5000/5000"
}
SERVICES = ("inventory_svc", "catalog_svc", "order_svc")
# a cheap route through the gateway to each service: 503 while the gateway cannot reach it
PROBES = {"catalog_svc": "/v1/categories", "order_svc": "/v1/cart", "inventory_svc": "/v1/products/1/stock"}


class Shop:
    def __init__(self, mesh: Mesh, client: httpx.AsyncClient) -> None:
        self.mesh = mesh
        self.client = client
        # catalog's consumer groups are named by settings, not by topic: keep this mesh's apart
        self.service_env = {
            "catalog_svc": {
                "SHOPMESH_INDEXER_GROUP": f"catalog-indexer-obs-{mesh.suffix}",
                "SHOPMESH_COPURCHASE_GROUP": f"catalog-copurchases-obs-{mesh.suffix}",
            }
        }

    def gateway_env(self, **overrides: str) -> dict[str, str]:
        return {**GATEWAY_ENV, "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"obs:{uuid.uuid4().hex[:8]}", **overrides}

    async def start(self, extra_env: dict[str, str] | None = None) -> None:
        """Every service and the gateway running (all restarted with `extra_env` when it is given)."""
        for name in (*SERVICES, "gateway"):
            proc = self.mesh.procs.get(name)
            if extra_env is not None or proc is None or not proc.running:
                await self.restart(name, **(extra_env or {}))

    async def restart(self, name: str, **overrides: str) -> None:
        """Restart one process with this shop's settings for it plus `overrides`, and wait until the
        gateway reaches it again (its channel may still be in reconnect backoff for a moment)."""
        base = self.gateway_env() if name == "gateway" else self.service_env.get(name, {})
        await self.mesh.restart(name, extra_env={**base, **overrides})
        gateway = self.mesh.procs.get("gateway")
        if name in PROBES and gateway is not None and gateway.running:
            deadline = time.monotonic() + 15
            while True:
                reply = await self.client.get(PROBES[name], headers=self.auth("probe"))
                if reply.status_code != 503 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        now = int(time.time())
        claims = {"sub": user, "roles": list(roles), "aud": "shopmesh", "iat": now, "exp": now + 600}
        return {"Authorization": f"Bearer {jwt.encode(claims, self.mesh.jwt_secret, algorithm='HS256')}"}

    def seller_id(self) -> str:
        with psycopg.connect(self.mesh.database_url, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO catalog.sellers (name) VALUES ('observability tests')"
                " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
            ).fetchone()
        assert row is not None
        return str(row[0])

    async def new_product(self, *, units: int = 10, title: str = "") -> str:
        admin = self.auth(f"admin-{uuid.uuid4().hex[:6]}", "admin")
        product = {
            "sellerId": self.seller_id(),
            "title": title or f"Observable widget {uuid.uuid4().hex[:8]}",
            "price": {"currencyCode": "USD", "units": "19", "nanos": 990000000},
            "brand": "Acme",
        }
        reply = await self.client.post("/v1/products", json=product, headers=admin)
        assert reply.status_code == 201, reply.text
        product_id = reply.json()["product"]["id"]
        reply = await self.client.post(
            f"/v1/products/{product_id}/stock:adjust",
            json={"warehouseId": "1", "delta": units},
            headers=admin,
        )
        assert reply.status_code == 200, reply.text
        return product_id

    async def shopper_with_cart(self, product_id: str, quantity: int = 1) -> dict[str, str]:
        user = self.auth(f"shopper-{uuid.uuid4().hex[:8]}")
        reply = await self.client.post(
            "/v1/cart/items", json={"productId": product_id, "quantity": quantity}, headers=user
        )
        assert reply.status_code == 200, reply.text
        return user

    async def checkout(self, user: dict[str, str], *, key: str, token: str = "tok_approve") -> httpx.Response:
        return await self.client.post(
            "/v1/orders",
            json={"shippingAddress": SHIPPING, "paymentToken": token},
            headers={**user, "Idempotency-Key": key},
        )
