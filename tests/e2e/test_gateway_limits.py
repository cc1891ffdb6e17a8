"""Rate limiting, CORS and fail-open over real HTTP: the gateway is restarted with small settings and
restored afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from tests.e2e.conftest import Gateway, new_user


def product_id() -> int:
    return 30_000_000 + int.from_bytes(secrets.token_bytes(3), "big") * 10 + os.getpid() % 10


@pytest.fixture
async def strict_gateway(gateway: Gateway):
    await gateway.mesh.start("inventory_svc")
    await gateway.restart(
        SHOPMESH_RATE_LIMITS="browse=3/2,admin=2/0.2",
        SHOPMESH_CORS_ORIGINS="https://shop.example",
    )
    try:
        yield gateway
    finally:
        await gateway.restart()


async def test_burst_past_the_bucket_gets_429_with_retry_after_then_refills(strict_gateway: Gateway) -> None:
    client = strict_gateway.client
    url = f"/v1/products/{product_id()}/stock"  # anonymous: bucketed per client IP
    statuses = [(await client.get(url)).status_code for _ in range(3)]
    assert statuses == [404, 404, 404]  # allowed through to inventory (unknown product)
    limited = await client.get(url)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["reason"] == "RATE_LIMITED"
    assert error["details"][0]["metadata"] == {"rate_limit_class": "browse", "retry_after_seconds": "1"}
    await asyncio.sleep(1.1)  # 2 tokens/s
    assert (await client.get(url)).status_code == 404
    text = (await client.get("/metrics")).text
    assert 'gateway_rate_limited_total{rate_limit_class="browse"}' in text


async def test_users_have_their_own_buckets(strict_gateway: Gateway) -> None:
    client = strict_gateway.client
    alice = strict_gateway.auth(new_user("alice"), "admin")
    bob = strict_gateway.auth(new_user("bob"), "admin")
    url = f"/v1/products/{product_id()}/stock:adjust"
    body = {"warehouseId": "1", "delta": 1}
    assert [(await client.post(url, json=body, headers=alice)).status_code for _ in range(2)] == [200, 200]
    refused = await client.post(url, json=body, headers=alice)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 5  # 0.2 tokens/s
    assert (await client.post(url, json=body, headers=bob)).status_code == 200


async def test_refused_credentials_cost_the_client_ips_bucket(strict_gateway: Gateway) -> None:
    """A bad token (or none) on a protected route was answered 401 before any limit, so guessing
    tokens was free; refusals now draw on the IP's bucket of the route's class, and get 429 past it.
    Then the IP is held back for that class until the bucket refills, valid tokens included: a
    correct guess must not get through (a 200 among the 429s would tell it apart)."""
    client = strict_gateway.client
    url = f"/v1/products/{product_id()}/stock:adjust"  # admin class: 2 requests, 0.2 tokens/s
    body = {"warehouseId": "1", "delta": 1}
    admin = strict_gateway.auth(new_user("dave"), "admin")
    assert (await client.post(url, json=body, headers=admin)).status_code == 200
    forged = {"Authorization": "Bearer not-a-token"}
    statuses = [(await client.post(url, json=body, headers=forged)).status_code for _ in range(2)]
    assert statuses == [401, 401]
    limited = await client.post(url, json=body, headers=forged)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) == 5
    assert limited.json()["error"]["details"][0]["reason"] == "RATE_LIMITED"
    assert (await client.post(url, json=body)).status_code == 429  # no token at all: the same
    held_back = await client.post(url, json=body, headers=admin)  # a valid token from that IP too
    assert held_back.status_code == 429 and 1 <= int(held_back.headers["retry-after"]) <= 5
    # other classes are not held back for it
    assert (await client.get(f"/v1/products/{product_id()}/stock")).status_code == 404


async def test_anonymous_traffic_that_empties_the_ips_bucket_holds_nobody_back(
    strict_gateway: Gateway,
) -> None:
    """Bad tokens draw on a bucket of their own: an IP (a NAT, a carrier's CGNAT) whose anonymous
    browsing is over its bucket, then sends one stale token, must not lock out its logged-in users."""
    client = strict_gateway.client
    url = f"/v1/products/{product_id()}/stock"  # browse class: 3 requests, 2 tokens/s
    assert [(await client.get(url)).status_code for _ in range(4)] == [404, 404, 404, 429]
    forged = {"Authorization": "Bearer stale-or-forged"}
    assert (await client.get(url, headers=forged)).status_code == 401
    shopper = strict_gateway.auth(new_user("frank"))
    assert (await client.get(url, headers=shopper)).status_code == 404  # through to inventory


async def test_a_user_without_the_admin_role_is_refused_from_their_own_bucket(
    strict_gateway: Gateway,
) -> None:
    client = strict_gateway.client
    url = f"/v1/products/{product_id()}/stock:adjust"
    shopper = strict_gateway.auth(new_user("carol"))
    statuses = [(await client.post(url, json={"delta": 1}, headers=shopper)).status_code for _ in range(3)]
    assert statuses == [403, 403, 429]
    admin = strict_gateway.auth(new_user("erin"), "admin")  # the IP is not held back for a 403
    assert (await client.post(url, json={"warehouseId": "1", "delta": 1}, headers=admin)).status_code == 200


async def test_cors_is_configurable(strict_gateway: Gateway) -> None:
    client = strict_gateway.client
    preflight = await client.options(
        "/v1/orders",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,idempotency-key,traceparent",
        },
    )
    assert preflight.status_code == 200, preflight.text  # traceparent was refused (400, plain text)
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "idempotency-key" in allowed and "traceparent" in allowed
    reply = await client.get("/healthz", headers={"Origin": "https://shop.example"})
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-request-id" in reply.headers["access-control-expose-headers"].lower()
    other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


async def test_valkey_down_fails_open_and_is_counted(gateway: Gateway) -> None:
    await gateway.mesh.start("inventory_svc")
    await gateway.restart(SHOPMESH_VALKEY_URL="valkey://127.0.0.1:1/0", SHOPMESH_RATE_LIMITS="browse=1/0.01")
    try:
        url = f"/v1/products/{product_id()}/stock"
        statuses = [(await gateway.client.get(url)).status_code for _ in range(5)]
        assert statuses == [404] * 5  # a 1-token bucket would have refused 4 of them
        text = (await gateway.client.get("/metrics")).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('gateway_rate_limit_fail_open_total{rate_limit_class="browse"}')
        )
        assert float(line.split()[-1]) >= 5
    finally:
        await gateway.restart()
