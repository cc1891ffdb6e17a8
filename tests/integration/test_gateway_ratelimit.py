"""The token-bucket Lua script against the real Valkey: burst, refill, isolation, atomicity, fail-open."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import valkey.asyncio as valkey_asyncio
from prometheus_client import REGISTRY

from gateway.config import Bucket, GatewaySettings
from gateway.ratelimit import RateLimiter


@pytest.fixture(params=["pipelined", "valkey-py"])
async def client(infra_endpoints, request):
    """Every behaviour holds both ways EVALSHA can go: meshkit.resp's connection (TCP, the usual
    case) and valkey-py (what a TLS or Unix-socket client keeps)."""
    client = valkey_asyncio.from_url(infra_endpoints.valkey_url, socket_timeout=2, socket_connect_timeout=2)
    client.lean = request.param == "pipelined"
    yield client
    await client.aclose()


def limiter(client, **buckets: Bucket) -> RateLimiter:
    rl = RateLimiter(
        client,
        buckets=buckets,
        default_bucket=Bucket(100, 100),
        key_prefix=f"test:ratelimit:{uuid.uuid4().hex}",
    )
    assert rl._reader is not None  # a plain TCP client gets the pipelined connection
    if not client.lean:
        rl.close()
        rl._reader = None
    return rl


async def test_burst_then_429_decision_then_refill(client) -> None:
    rl = limiter(client, checkout=Bucket(burst=3, per_second=2.0))
    decisions = [await rl.check("checkout", "user:a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[-1].retry_after_seconds == 1
    await asyncio.sleep(0.6)  # 2 tokens/s: one token back after 0.5 s
    assert (await rl.check("checkout", "user:a")).allowed
    assert not (await rl.check("checkout", "user:a")).allowed


async def test_callers_and_classes_have_separate_buckets(client) -> None:
    rl = limiter(client, checkout=Bucket(1, 0.1), cart=Bucket(1, 0.1))
    assert (await rl.check("checkout", "user:a")).allowed
    assert not (await rl.check("checkout", "user:a")).allowed
    assert (await rl.check("checkout", "user:b")).allowed
    assert (await rl.check("cart", "user:a")).allowed
    assert (await rl.check("checkout", "ip:127.0.0.1")).allowed


async def test_slow_refill_gives_a_long_retry_after(client) -> None:
    rl = limiter(client, checkout=Bucket(1, 0.1))
    await rl.check("checkout", "user:slow")
    decision = await rl.check("checkout", "user:slow")
    assert not decision.allowed and 9 <= decision.retry_after_seconds <= 10


async def test_concurrent_requests_never_overdraw_the_bucket(client) -> None:
    rl = limiter(client, browse=Bucket(burst=10, per_second=0.01))
    decisions = await asyncio.gather(*(rl.check("browse", "ip:10.0.0.1") for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 10


async def test_idle_buckets_expire(client) -> None:
    rl = limiter(client, browse=Bucket(burst=2, per_second=1000.0))
    await rl.check("browse", "user:idle")
    key = f"{rl._prefix}:browse:user:idle"
    ttl_ms = await client.pttl(key)
    assert 0 < ttl_ms <= 1002


async def test_script_is_reloaded_after_noscript(client) -> None:
    rl = limiter(client, browse=Bucket(2, 1))
    assert (await rl.check("browse", "user:n")).allowed
    rl._sha = "0" * 40  # as after SCRIPT FLUSH or a Valkey restart: EVALSHA answers NOSCRIPT
    assert (await rl.check("browse", "user:n")).allowed
    assert not (await rl.check("browse", "user:n")).allowed


def fail_open_count(rate_class: str) -> float:
    return (
        REGISTRY.get_sample_value("gateway_rate_limit_fail_open_total", {"rate_limit_class": rate_class})
        or 0.0
    )


async def test_fail_open_when_valkey_is_down_and_counted() -> None:
    dead = valkey_asyncio.from_url("valkey://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    rl = RateLimiter(
        dead, buckets={"checkout": Bucket(1, 0.01)}, default_bucket=Bucket(1, 0.01), retry_down_seconds=0.3
    )
    before = fail_open_count("checkout")
    decisions = [await rl.check("checkout", "user:x") for _ in range(5)]
    assert all(d.allowed and d.failed_open for d in decisions)
    assert fail_open_count("checkout") - before == 5
    await asyncio.sleep(0.35)  # after the back-off window Valkey is tried again (and still fails open)
    assert (await rl.check("checkout", "user:x")).failed_open
    await dead.aclose()


def test_checkout_is_the_strictest_default_bucket() -> None:
    buckets = GatewaySettings().rate_limit_buckets()
    assert {"browse", "cart", "orders", "checkout", "admin"} <= set(buckets)
    checkout = buckets.pop("checkout")
    assert all(checkout.burst < b.burst and checkout.per_second < b.per_second for b in buckets.values())
    overridden = GatewaySettings(rate_limits="checkout=2/0.5").rate_limit_buckets()
    assert overridden["checkout"] == Bucket(2, 0.5) and overridden["browse"] == buckets["browse"]


async def test_evalsha_goes_over_the_pipelined_connection(infra_endpoints) -> None:
    client = valkey_asyncio.from_url(infra_endpoints.valkey_url, socket_timeout=2)
    rl = RateLimiter(
        client, buckets={}, default_bucket=Bucket(5, 1), key_prefix=f"test:rl:{uuid.uuid4().hex}"
    )
    calls = 0
    evalsha = client.evalsha

    async def counted(*args):
        nonlocal calls
        calls += 1
        return await evalsha(*args)

    client.evalsha = counted
    assert all([(await rl.check("browse", "user:p")).allowed for _ in range(3)])
    assert calls == 0 and rl._reader._protocol is not None
    rl.close()
    await client.aclose()


async def test_a_valkey_that_stops_answering_fails_open_after_the_socket_timeout() -> None:
    async def silent(reader, writer) -> None:
        await reader.read(1 << 20)  # takes the command, never answers
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = valkey_asyncio.from_url(f"valkey://127.0.0.1:{port}/0", socket_timeout=0.2)
    rl = RateLimiter(client, buckets={}, default_bucket=Bucket(1, 0.01), retry_down_seconds=0.1)
    rl._sha = "0" * 40  # loaded already: the EVALSHA itself gets no answer
    before = fail_open_count("browse")
    decision = await rl.check("browse", "user:silent")
    assert decision.allowed and decision.failed_open
    assert fail_open_count("browse") - before == 1
    rl.close()
    await client.aclose()
    server.close()
