"""GET /v1/audit: one HTTP list answered by every service's AuditService (fan-out), merged newest
first with exact paging; admin only."""

from __future__ import annotations

import os
import secrets

from tests.e2e.conftest import Gateway, new_user


async def test_audit_fans_out_merges_and_pages(gateway: Gateway) -> None:
    for service in ("catalog_svc", "inventory_svc", "order_svc"):
        await gateway.mesh.start(service)
    client = gateway.client
    actor = new_user("auditor")
    admin = gateway.auth(actor, "admin")
    product = 40_000_000 + int.from_bytes(secrets.token_bytes(3), "big") * 10 + os.getpid() % 10
    for delta in (5, -2, 4):
        reply = await client.post(
            f"/v1/products/{product}/stock:adjust", json={"warehouseId": "1", "delta": delta}, headers=admin
        )
        assert reply.status_code == 200, reply.text

    assert (await client.get("/v1/audit")).status_code == 401
    assert (await client.get("/v1/audit", headers=gateway.auth(new_user()))).status_code == 403

    reply = await client.get("/v1/audit", params={"resource": f"stock/{product}"}, headers=admin)
    assert reply.status_code == 200, reply.text
    records = reply.json()["records"]
    assert [r["actor"] for r in records] == [actor] * 3
    assert [r["changes"]["quantity"]["after"] for r in records] == [7, 3, 5]  # newest first
    assert reply.json()["nextPageToken"] == ""

    seen, token = [], ""
    for _ in range(5):
        params = {
            "resource": f"stock/{product}",
            "page_size": "1",
            **({"page_token": token} if token else {}),
        }
        page = (await client.get("/v1/audit", params=params, headers=admin)).json()
        seen += [r["id"] for r in page["records"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == [r["id"] for r in records]

    reply = await client.get("/v1/audit", params={"page_token": "not-ours"}, headers=admin)
    assert reply.status_code == 400
