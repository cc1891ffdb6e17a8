"""The shop workload the fault tests run through the real gateway, and the services it needs.

A `Plan` is a fresh set of products (one scarce "hot" product that more users want than it has
units, and a few plentiful ones) and users. `fill_carts` puts the hot product (when stock allows)
and one plentiful product in every user's cart; `checkout_all` fires every user's checkout at once,
each with its own Idempotency-Key, retrying that same key until a final answer. Every exchange goes
into the `History`; nothing is decided here about what is right: that is checker.py's job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import httpx
import jwt

from tests.fault.history import History, Op
from tests.harness import Mesh
from tests.integration.order_helpers import new_product, start_order_mesh, stock_of

SHIPPING = {
    "name": "Grace Hopper",
    "line1": "1 Fault Lane",
    "city": "Arlington",
    "postalCode": "22201",
    "countryCode": "US",
}
# generous buckets: the workload's users each send a few requests and their retries quickly
FAULT_RATE_LIMITS = "browse=5000/5000,cart=2000/2000,orders=2000/2000,checkout=2000/2000,admin=5000/5000"
# recovery: clients retrying within seconds win over the job, which only takes orders idle this long
FAULT_ORDER_ENV = {
    "SHOPMESH_RECOVERY_MIN_AGE_SECONDS": "30",
    "SHOPMESH_RECOVERY_INTERVAL_SECONDS": "2",
}
RETRY_PAUSE = 0.3


async def ensure_shop(mesh: Mesh, order_env: dict[str, str] | None = None) -> None:
    """inventory, catalog and order_svc (FAULT_ORDER_ENV + order_env exactly) and the gateway running."""
    await start_order_mesh(mesh, {**FAULT_ORDER_ENV, **(order_env or {})})
    proc = mesh.procs.get("gateway")
    if proc is None or not proc.running or proc.env.get("SHOPMESH_RATE_LIMITS") != FAULT_RATE_LIMITS:
        await mesh.stop("gateway")
        await mesh.start(
            "gateway",
            extra_env={
                "SHOPMESH_RATE_LIMITS": FAULT_RATE_LIMITS,
                "SHOPMESH_RATE_LIMIT_KEY_PREFIX": f"fault:{mesh.suffix}",
            },
        )


async def restore_order_svc(mesh: Mesh) -> None:
    """order_svc back on the fault env with the default peers (after a test pointed it elsewhere)."""
    await mesh.stop("order_svc")
    mesh.procs.pop("order_svc", None)
    await ensure_shop(mesh)


def user_token(mesh: Mesh, user: str, *roles: str, ttl: int = 1800) -> str:
    now = int(time.time())
    claims = {"sub": user, "roles": list(roles), "aud": "shopmesh", "iat": now, "exp": now + ttl}
    return jwt.encode(claims, mesh.jwt_secret, algorithm="HS256")


@dataclasses.dataclass
class Plan:
    hot: int
    plentiful: list[int]
    users: list[str]
    initial: dict[int, int]  # product id -> units received before the run
    tokens: dict[str, str]
    abandoned: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # keys never retried

    def headers(self, user: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}", **extra}


async def make_plan(
    mesh: Mesh, *, users: int, hot_stock: int, plentiful: int = 3, plentiful_stock: int = 200, tag: str = ""
) -> Plan:
    label = tag or uuid.uuid4().hex[:6]
    hot = await new_product(mesh, price="30.00", stock=hot_stock, title=f"fault {label} hot item")
    others = [
        await new_product(mesh, price=f"{5 + i}.50", stock=plentiful_stock, title=f"fault {label} item {i}")
        for i in range(plentiful)
    ]
    names = [f"fault-{label}-{i:03d}-{uuid.uuid4().hex[:6]}" for i in range(users)]
    # what inventory really holds, not what was received here: a product id can have had stock
    # before the catalog created it (inventory takes stock for any id; fuzzers send such ids)
    initial = {pid: (await stock_of(mesh, pid)).quantity for pid in (hot, *others)}
    return Plan(
        hot=hot,
        plentiful=others,
        users=names,
        initial=initial,
        tokens={name: user_token(mesh, name) for name in names},
    )


async def until_final(
    send: Callable[[int], Awaitable[Op]], *, deadline: float, pause: float = RETRY_PAUSE
) -> list[Op]:
    """Call `send(attempt)` until its answer is final (not retryable) or the deadline passes."""
    ops: list[Op] = []
    attempt = 0
    while True:
        op = await send(attempt)
        ops.append(op)
        if not op.retryable or time.monotonic() > deadline:
            return ops
        attempt += 1
        await asyncio.sleep(pause)


async def add_to_cart(
    history: History, plan: Plan, user: str, product_id: int, quantity: int, *, deadline: float
) -> list[Op]:
    request_id = str(uuid.uuid4())
    body = {"productId": str(product_id), "quantity": quantity, "requestId": request_id}

    async def send(attempt: int) -> Op:
        return await history.request(
            "add",
            "POST",
            "/v1/cart/items",
            user=user,
            key=request_id,
            attempt=attempt,
            headers=plan.headers(user),
            json_body=body,
        )

    return await until_final(send, deadline=deadline)


async def fill_carts(
    history: History, plan: Plan, *, seed: int = 7, concurrency: int = 64, deadline_seconds: float = 90.0
) -> None:
    """Every user: one hot unit (if any is left) and 1-2 units of a plentiful product."""
    rng = random.Random(seed)
    picks = {user: (rng.choice(plan.plentiful), rng.randint(1, 2)) for user in plan.users}
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + deadline_seconds

    async def one(user: str) -> None:
        async with gate:
            await add_to_cart(history, plan, user, plan.hot, 1, deadline=deadline)
            product_id, quantity = picks[user]
            await add_to_cart(history, plan, user, product_id, quantity, deadline=deadline)

    await asyncio.gather(*(one(user) for user in plan.users))


async def checkout(
    history: History,
    plan: Plan,
    user: str,
    key: str,
    *,
    deadline: float,
    kind: str = "checkout",
    retry: bool = True,
) -> list[Op]:
    """POST /v1/orders with `key`, retried with the same key until final (unless retry=False)."""

    async def send(attempt: int) -> Op:
        return await history.request(
            kind,
            "POST",
            "/v1/orders",
            user=user,
            key=key,
            attempt=attempt,
            headers=plan.headers(user, **{"Idempotency-Key": key}),
            json_body={"shippingAddress": SHIPPING, "paymentToken": "tok_approve"},
        )

    if not retry:
        return [await send(0)]
    return await until_final(send, deadline=deadline)


def start_checkouts(
    history: History,
    plan: Plan,
    users: Iterable[str],
    *,
    deadline_seconds: float = 120.0,
    abandon: Iterable[str] = (),
) -> tuple[dict[str, str], list[asyncio.Task[list[Op]]]]:
    """Launch one checkout per user at once; users in `abandon` send once and never retry."""
    deadline = time.monotonic() + deadline_seconds
    no_retry = set(abandon)
    keys: dict[str, str] = {}
    tasks = []
    for user in users:
        key = f"fault-{uuid.uuid4()}"
        keys[user] = key
        if user in no_retry:
            plan.abandoned.add((user, key))
        tasks.append(
            asyncio.create_task(
                checkout(history, plan, user, key, deadline=deadline, retry=user not in no_retry)
            )
        )
    return keys, tasks


async def replay(history: History, plan: Plan, keys: dict[str, str], *, sample: int = 10) -> list[Op]:
    """Send some keys again after the fault (a client that never saw its answer): the same outcome."""
    deadline = time.monotonic() + 60
    chosen = [(user, key) for user, key in keys.items() if (user, key) not in plan.abandoned][:sample]
    results = await asyncio.gather(
        *(checkout(history, plan, user, key, deadline=deadline, kind="replay") for user, key in chosen)
    )
    return [op for ops in results for op in ops]


async def search(history: History, query: dict[str, str], *, user: str = "anonymous") -> Op:
    return await history.request("search", "GET", "/v1/products:search", user=user, params=query)


def http_client(mesh: Mesh) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=mesh.gateway_url,
        timeout=30.0,
        limits=httpx.Limits(max_connections=400, max_keepalive_connections=200),
    )
