"""Cart, checkout and orders through the gateway: ownership, roles, and the Idempotency-Key contract
(missing 400, other body 422, in progress 409, replay 201 + Idempotent-Replayed with the same body)."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from tests.e2e.conftest import Gateway, new_user

SHIPPING = {
    "name": "Ada L.",
    "line1": "1 Analytical Way",
    "city": "London",
    "postalCode": "N1 9GU",
    "countryCode": "GB",
}


@pytest.fixture
async def shop(gateway: Gateway) -> Gateway:
    for service in ("catalog_svc", "inventory_svc", "order_svc"):
        await gateway.mesh.start(service)
    return gateway


def seller_id(shop: Gateway) -> str:
    """Sellers have no public API (the catalog loader creates them): set one up in catalog's schema."""
    with psycopg.connect(shop.mesh.database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO catalog.sellers (name) VALUES ('E2E gateway seller')"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ).fetchone()
    assert row is not None
    return str(row[0])


async def new_product(shop: Gateway, *, units: int = 10) -> str:
    admin = shop.auth(new_user("admin"), "admin")
    product = {
        "sellerId": seller_id(shop),
        "title": f"E2E widget {uuid.uuid4().hex[:8]}",
        "price": {"currencyCode": "USD", "units": "12", "nanos": 500000000},
        "brand": "Acme",
    }
    reply = await shop.client.post("/v1/products", json=product, headers=admin)
    assert reply.status_code == 201, reply.text
    product_id = reply.json()["product"]["id"]
    reply = await shop.client.post(
        f"/v1/products/{product_id}/stock:adjust", json={"warehouseId": "1", "delta": units}, headers=admin
    )
    assert reply.status_code == 200, reply.text
    return product_id


async def user_with_cart(shop: Gateway, product_id: str, quantity: int = 1) -> dict[str, str]:
    user = shop.auth(new_user())
    reply = await shop.client.post(
        "/v1/cart/items", json={"productId": product_id, "quantity": quantity}, headers=user
    )
    assert reply.status_code == 200, reply.text
    return user


def checkout_headers(user: dict[str, str], key: str | None) -> dict[str, str]:
    return {**user, "Idempotency-Key": key} if key is not None else dict(user)


def reason(reply) -> str:
    return next(d["reason"] for d in reply.json()["error"]["details"] if d["@type"].endswith("ErrorInfo"))


async def test_user_routes_need_a_token(shop: Gateway) -> None:
    for method, path in [("GET", "/v1/cart"), ("POST", "/v1/orders"), ("GET", "/v1/orders")]:
        reply = await shop.client.request(method, path)
        assert reply.status_code == 401, (method, path)
        assert reason(reply) == "MISSING_CREDENTIALS"


async def test_another_users_cart_line_and_order_are_404(shop: Gateway) -> None:
    product_id = await new_product(shop)
    alice = await user_with_cart(shop, product_id)
    bob = shop.auth(new_user("bob"))
    reply = await shop.client.get("/v1/cart", headers=bob)
    assert reply.status_code == 200 and reply.json()["cart"]["items"] == []
    assert (await shop.client.delete(f"/v1/cart/items/{product_id}", headers=bob)).status_code == 404
    reply = await shop.client.patch(f"/v1/cart/items/{product_id}", json={"quantity": 2}, headers=bob)
    assert reply.status_code == 404
    reply = await shop.client.post(
        "/v1/orders", json={"shippingAddress": SHIPPING}, headers=checkout_headers(alice, uuid.uuid4().hex)
    )
    assert reply.status_code == 201, reply.text
    order_id = reply.json()["order"]["id"]
    assert (await shop.client.get(f"/v1/orders/{order_id}", headers=alice)).status_code == 200
    reply = await shop.client.get(f"/v1/orders/{order_id}", headers=bob)
    assert reply.status_code == 404 and reason(reply) == "ORDER_NOT_FOUND"
    assert (await shop.client.post(f"/v1/orders/{order_id}:cancel", json={}, headers=bob)).status_code == 404
    listed = (await shop.client.get("/v1/orders", headers=bob)).json()
    assert listed["orders"] == []


async def test_admin_routes_as_a_user_are_403(shop: Gateway) -> None:
    user = shop.auth(new_user())
    order_id = str(uuid.uuid4())
    for path in [
        f"/v1/orders/{order_id}:ship",
        f"/v1/orders/{order_id}:deliver",
        f"/v1/orders/{order_id}:refund",
    ]:
        reply = await shop.client.post(path, json={}, headers=user)
        assert reply.status_code == 403 and reason(reply) == "ADMIN_REQUIRED", path
    reply = await shop.client.post("/v1/products", json={"title": "x"}, headers=user)
    assert reply.status_code == 403


async def test_checkout_without_idempotency_key_is_400(shop: Gateway) -> None:
    user = await user_with_cart(shop, await new_product(shop))
    reply = await shop.client.post("/v1/orders", json={"shippingAddress": SHIPPING}, headers=user)
    assert reply.status_code == 400, reply.text
    assert reason(reply) == "IDEMPOTENCY_KEY_MISSING"


async def test_replay_returns_the_original_201_and_body_with_the_replayed_header(shop: Gateway) -> None:
    user = await user_with_cart(shop, await new_product(shop), quantity=2)
    headers, body = (
        checkout_headers(user, uuid.uuid4().hex),
        {"shippingAddress": SHIPPING, "paymentToken": "tok_approve"},
    )
    first = await shop.client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert first.json()["order"]["status"] == "ORDER_STATUS_PAID"
    again = await shop.client.post("/v1/orders", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()


async def test_same_key_with_another_body_is_422(shop: Gateway) -> None:
    user = await user_with_cart(shop, await new_product(shop))
    headers = checkout_headers(user, uuid.uuid4().hex)
    first = await shop.client.post("/v1/orders", json={"shippingAddress": SHIPPING}, headers=headers)
    assert first.status_code == 201, first.text
    other = {"shippingAddress": {**SHIPPING, "city": "Paris"}}
    reply = await shop.client.post("/v1/orders", json=other, headers=headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert reason(reply) == "IDEMPOTENCY_KEY_REUSED"


async def test_same_key_while_the_first_is_in_progress_is_409(shop: Gateway) -> None:
    user = await user_with_cart(shop, await new_product(shop))
    headers = checkout_headers(user, uuid.uuid4().hex)
    # the sandbox holds tok_timeout for the provider timeout (seconds): the key stays in progress
    body = {"shippingAddress": SHIPPING, "paymentToken": "tok_timeout"}
    first = asyncio.create_task(shop.client.post("/v1/orders", json=body, headers=headers))
    await asyncio.sleep(0.8)
    reply = await shop.client.post("/v1/orders", json=body, headers=headers)
    assert reply.status_code == 409, reply.text
    assert reason(reply) == "IDEMPOTENCY_KEY_IN_PROGRESS"
    finished = await first
    assert finished.status_code != 409
