"""Users cannot see or change each other's carts, orders or reservations, whatever ids they guess.

Alice has a cart line (with its inventory reservation) and a paid order; Bob knows her ids (and
guesses many more). Through the production gateway every attempt of Bob's is 404 or acts on his
own cart only, nothing of Alice's changes, and an Idempotency-Key is scoped to its user (Bob sending
Alice's key does not get her order replayed). Reservations have no public route at all, and the
inventory RPCs that touch them refuse a user's internal token (PERMISSION_DENIED).
"""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from shop.inventory.v1 import inventory_pb2 as inv
from shop.inventory.v1 import inventory_pb2_grpc

from tests.harness import Mesh
from tests.integration.order_helpers import new_product
from tests.security.conftest import SecureGateway, new_user

SHIPPING = {
    "name": "Alice A.",
    "line1": "1 Private Rd",
    "city": "Oxford",
    "postalCode": "OX1 1AA",
    "countryCode": "GB",
}


def _reservations(mesh: Mesh, user: str) -> list[tuple]:
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT id::text, status, quantity FROM inventory.reservations WHERE owner = %s ORDER BY id",
            (user,),
        ).fetchall()


async def test_another_users_cart_orders_and_reservations_are_out_of_reach(
    secure_gateway: SecureGateway,
) -> None:
    gw, client = secure_gateway, secure_gateway.client
    mesh = gw.mesh
    kept, bought = await new_product(mesh, stock=10), await new_product(mesh, stock=10)
    alice_name, bob_name = new_user("alice"), new_user("bob")
    alice, bob = gw.auth(alice_name), gw.auth(bob_name)

    # Alice: one line bought, one line kept in the cart (still reserved)
    assert (
        await client.post("/v1/cart/items", json={"productId": str(bought), "quantity": 2}, headers=alice)
    ).status_code == 200
    key = str(uuid.uuid4())
    reply = await client.post(
        "/v1/orders", json={"shippingAddress": SHIPPING}, headers={**alice, "Idempotency-Key": key}
    )
    assert reply.status_code == 201, reply.text
    order = reply.json()["order"]
    assert (
        await client.post("/v1/cart/items", json={"productId": str(kept), "quantity": 3}, headers=alice)
    ).status_code == 200
    alice_cart = (await client.get("/v1/cart", headers=alice)).json()
    held = _reservations(mesh, alice_name)
    assert any(status == "active" for _, status, _ in held)

    # Bob with Alice's order id and many guesses: never found, never changed
    guesses = [
        order["id"],
        order["id"].upper(),
        f"{{{order['id']}}}",
        *(str(uuid.uuid4()) for _ in range(25)),
    ]
    for guess in guesses:
        for method, path in (
            ("GET", f"/v1/orders/{guess}"),
            ("POST", f"/v1/orders/{guess}:cancel"),
        ):
            reply = await client.request(method, path, headers=bob, json={} if method == "POST" else None)
            assert reply.status_code in (400, 404), (method, path, reply.status_code, reply.text[:200])
    assert (await client.get("/v1/orders", headers=bob)).json().get("orders", []) == []

    # Bob on Alice's cart lines: his own (empty) cart answers, hers is untouched
    for method, path, body in (
        ("PATCH", f"/v1/cart/items/{kept}", {"quantity": 1}),
        ("DELETE", f"/v1/cart/items/{kept}", None),
    ):
        reply = await client.request(method, path, headers=bob, json=body)
        assert reply.status_code == 404, (method, path, reply.text[:200])
    assert (await client.get("/v1/cart", headers=bob)).json()["cart"].get("items", []) == []
    assert (await client.delete("/v1/cart", headers=bob)).status_code == 200

    # Bob replaying Alice's Idempotency-Key checks out HIS (empty) cart: no replay of her order
    reply = await client.post(
        "/v1/orders", json={"shippingAddress": SHIPPING}, headers={**bob, "Idempotency-Key": key}
    )
    assert reply.status_code == 422 and order["id"] not in reply.text, reply.text[:300]

    # reservations: no public route, and the inventory RPCs refuse a user's internal token
    assert (await client.get(f"/v1/reservations/{held[0][0]}", headers=bob)).status_code == 404
    stub = inventory_pb2_grpc.InventoryServiceStub(mesh.channel("inventory_svc", bob_name, ()))
    for call in (
        stub.BatchGetReservations(inv.BatchGetReservationsRequest(reservation_ids=[r for r, _, _ in held])),
        stub.ReleaseReservation(inv.ReleaseReservationRequest(reservation_id=held[0][0])),
        stub.ExtendReservations(inv.ExtendReservationsRequest(reservation_ids=[held[0][0]])),
        stub.CommitReservations(
            inv.CommitReservationsRequest(order_id=str(uuid.uuid4()), reservation_ids=[held[0][0]])
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()

    # nothing of Alice's moved
    assert _reservations(mesh, alice_name) == held
    assert (await client.get("/v1/cart", headers=alice)).json() == alice_cart
    mine = await client.get(f"/v1/orders/{order['id']}", headers=alice)
    assert mine.status_code == 200 and mine.json()["order"]["status"] == "ORDER_STATUS_PAID"
    # and an admin may read it (the documented exception)
    admin = gw.auth(new_user("admin"), "admin")
    assert (await client.get(f"/v1/orders/{order['id']}", headers=admin)).status_code == 200
