"""Admin and internal RPCs refused to everyone but admins/services, also on the internal gRPC ports.

Service-to-service trust is an HS256-signed internal token (meshkit/auth.py, docs/RELIABILITY.md):
a caller that reaches a service's port directly, bypassing the gateway, gets nowhere with plain
metadata (`roles: admin`, `x-user`), the external JWT, a token signed with another secret, an
unsigned or expired one, or one for another audience (UNAUTHENTICATED), nor with a valid token of a
plain user (PERMISSION_DENIED). Through the gateway a signed-in non-admin gets 403 on every admin
route the OpenAPI document lists.
"""

from __future__ import annotations

import base64
import json
import time

import grpc
import jwt
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from shop.api.v1 import options_pb2
from shop.audit.v1 import audit_pb2
from shop.catalog.v1 import catalog_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import cart_pb2, order_pb2

from meshkit.auth import INTERNAL_AUDIENCE, INTERNAL_ISSUER, INTERNAL_TOKEN_HEADER, mint_internal_token
from meshkit.context import Principal
from tests.security.conftest import SecureGateway, new_user

SERVES = {
    "shop.catalog.v1.CatalogService": ("catalog_svc",),
    "shop.inventory.v1.InventoryService": ("inventory_svc",),
    "shop.order.v1.CartService": ("order_svc",),
    "shop.order.v1.OrderService": ("order_svc",),
    "shop.audit.v1.AuditService": ("catalog_svc", "inventory_svc", "order_svc"),
}
PRIVILEGED = (options_pb2.ACCESS_ADMIN, options_pb2.ACCESS_UNSPECIFIED)  # unset = internal RPC


def _privileged_methods() -> list[tuple[str, MethodDescriptor]]:
    found = []
    for module in (catalog_pb2, inventory_pb2, cart_pb2, order_pb2, audit_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.GetOptions().Extensions[options_pb2.access] in PRIVILEGED:
                    found.extend((process, method) for process in SERVES[service.full_name])
    return found


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": "intruder",
        "roles": ["admin", "service"],
        "aud": INTERNAL_AUDIENCE,
        "iss": INTERNAL_ISSUER,
        "iat": now,
        "exp": now + 60,
        **overrides,
    }


def _unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def _code(
    channel: grpc.aio.Channel, method: MethodDescriptor, metadata: list[tuple[str, str]]
) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    call = channel.unary_unary(
        path,
        request_serializer=request_class.SerializeToString,
        response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
    )
    try:
        await call(request_class(), metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_privileged_rpcs_refuse_everything_but_a_valid_admin_or_service_token(
    secure_gateway: SecureGateway,
) -> None:
    mesh = secure_gateway.mesh
    secret = mesh.internal_secret
    external_admin = secure_gateway.token(new_user("ext-admin"), "admin")
    unauthenticated = {
        "no metadata": [],
        "plain role metadata": [("roles", "admin"), ("x-user", "admin"), ("x-roles", "admin,service")],
        "the external admin JWT": [("authorization", f"Bearer {external_admin}")],
        "the external JWT in the internal header": [(INTERNAL_TOKEN_HEADER, external_admin)],
        "signed with another secret": [
            (INTERNAL_TOKEN_HEADER, jwt.encode(_claims(), "x" * 32, algorithm="HS256"))
        ],
        "unsigned (alg=none)": [(INTERNAL_TOKEN_HEADER, _unsigned(_claims()))],
        "expired": [(INTERNAL_TOKEN_HEADER, jwt.encode(_claims(exp=int(time.time()) - 60), secret, "HS256"))],
        "another audience": [(INTERNAL_TOKEN_HEADER, jwt.encode(_claims(aud="shopmesh"), secret, "HS256"))],
    }
    user_token = mint_internal_token(secret, Principal("plain-user", ()))
    admin_token = mint_internal_token(secret, Principal("sec-admin", ("admin",)))
    service_token = mint_internal_token(secret, Principal("order_svc", ("service",)))
    checked = 0
    channels = {
        name: grpc.aio.insecure_channel(mesh.addr(name))
        for name in ("catalog_svc", "inventory_svc", "order_svc")
    }
    try:
        for process, method in _privileged_methods():
            channel = channels[process]
            for name, metadata in unauthenticated.items():
                code = await _code(channel, method, metadata)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (process, method.full_name, name, code)
            code = await _code(channel, method, [(INTERNAL_TOKEN_HEADER, user_token)])
            assert code == grpc.StatusCode.PERMISSION_DENIED, (process, method.full_name, "user token", code)
            admin_only = method.GetOptions().Extensions[options_pb2.access] == options_pb2.ACCESS_ADMIN
            allowed = admin_token if admin_only else service_token
            code = await _code(channel, method, [(INTERNAL_TOKEN_HEADER, allowed)])
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (
                process,
                method.full_name,
                "the right token was refused",
                code,
            )
            checked += 1
    finally:
        for channel in channels.values():
            await channel.close()
    assert checked >= 15


async def test_admin_routes_are_403_for_a_signed_in_user(secure_gateway: SecureGateway) -> None:
    client = secure_gateway.client
    schema = (await client.get("/openapi.json")).json()
    user = secure_gateway.auth(new_user())
    admin_routes = [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "403" in operation.get("responses", {})
    ]
    assert len(admin_routes) >= 7, admin_routes
    for method, path in admin_routes:
        concrete = path.replace("{product_id}", "1").replace(
            "{order_id}", "00000000-0000-4000-8000-000000000000"
        )
        reply = await client.request(
            method, concrete, headers=user, json={} if method in ("POST", "PATCH") else None
        )
        assert reply.status_code == 403, (method, concrete, reply.status_code, reply.text[:200])
        assert reply.json()["error"]["status"] == "PERMISSION_DENIED"
