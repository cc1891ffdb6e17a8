"""Secrets and tokens never appear in the services' logs or in the gateway's spans.

Runs after the other security tests (file order), adds traffic of its own carrying recognisable
secrets (a payment token, JWTs, a forged internal token), then reads every log file the session's
processes wrote (tests/harness.py puts them in the mesh's workdir: each service, the HS256 gateway,
the RS256 gateway) and every span the RS256 gateway exported over OTLP. Nothing may contain a JWT
(any three-part base64url token starting with eyJ), a JWT signature, the internal or external
token secrets, the identity provider's private key, or the payment token.
"""

from __future__ import annotations

import re
import secrets
import uuid

import grpc
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from meshkit.auth import INTERNAL_TOKEN_HEADER, mint_internal_token
from meshkit.context import Principal
from tests.integration.order_helpers import new_product
from tests.security.conftest import SecureGateway, log_files, new_user

JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
SHIPPING = {
    "name": "Sam S.",
    "line1": "9 Quiet Ln",
    "city": "Leeds",
    "postalCode": "LS1 1AA",
    "countryCode": "GB",
}


async def test_no_secret_or_token_reaches_a_log_or_a_span(secure_gateway: SecureGateway) -> None:
    gw, client, mesh = secure_gateway, secure_gateway.client, secure_gateway.mesh
    payment_token = f"tok_live_{secrets.token_hex(12)}"
    product = await new_product(mesh, stock=5)
    buyer = gw.auth(new_user("payer"))
    assert (
        await client.post("/v1/cart/items", json={"productId": str(product), "quantity": 1}, headers=buyer)
    ).status_code == 200
    reply = await client.post(
        "/v1/orders",
        json={"shippingAddress": SHIPPING, "paymentToken": payment_token},
        headers={**buyer, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert reply.status_code == 422, reply.text  # the sandbox declines unknown tokens
    await client.get(
        "/v1/cart", headers={"Authorization": f"Bearer {gw.token('x', ttl=-100)}"}
    )  # expired: 401
    await client.post("/v1/products", json={}, headers=gw.auth(new_user()))  # 403
    forged = mint_internal_token("not-the-secret-" + "z" * 32, Principal("intruder", ("admin",)))
    async with grpc.aio.insecure_channel(mesh.addr("catalog_svc")) as channel:
        try:
            await catalog_pb2_grpc.CatalogServiceStub(channel).DeleteProduct(
                catalog_pb2.DeleteProductRequest(product_id=product),
                metadata=[(INTERNAL_TOKEN_HEADER, forged)],
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    await gw.receiver.wait_for(lambda spans: len(spans) >= 5, timeout=20)

    private_key_lines = [line for line in gw.private_key.decode().splitlines() if len(line) > 40]
    needles = {
        "internal token secret": mesh.internal_secret,
        "external JWT secret": mesh.jwt_secret,
        "payment token": payment_token,
        "forged internal token": forged,
        **{f"private key line {i}": line for i, line in enumerate(private_key_lines[:5])},
        **{
            f"JWT signature {i}": token.rsplit(".", 1)[-1]
            for i, token in enumerate(gw.tokens_used)
            if "." in token
        },
    }
    files = log_files(mesh)
    assert any(path.name == "gateway-rs256.log" for path in files), files
    leaks = []
    for path in files:
        text = path.read_text(errors="replace")
        leaks += [(path.name, what) for what, needle in needles.items() if needle and needle in text]
        leaks += [(path.name, f"JWT-shaped string {m.group()[:24]}...") for m in JWT_SHAPE.finditer(text)]
    assert leaks == [], leaks

    spans = gw.receiver.spans
    assert spans, "the RS256 gateway exported no spans"
    span_text = "\n".join(f"{s.name} {s.attributes}" for s in spans)
    span_leaks = [what for what, needle in needles.items() if needle and needle in span_text]
    span_leaks += [m.group()[:24] for m in JWT_SHAPE.finditer(span_text)]
    assert span_leaks == [], span_leaks
