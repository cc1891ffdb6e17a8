"""Who may call what, read from the `shop.api.v1.access` method option in the protos.

ACCESS_ANONYMOUS: any verified caller (the gateway relays anonymous visitors as subject "anonymous").
ACCESS_USER:      a signed-in user, an admin, or a service.
ACCESS_ADMIN:     the admin role.
unset (internal RPCs with no HTTP route): other services (role "service") or admins only.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor
from shop.api.v1 import options_pb2

from meshkit.auth import ADMIN_ROLE, ANONYMOUS_SUBJECT, SERVICE_ROLE
from meshkit.context import Principal
from meshkit.errors import PermissionDenied, Unauthenticated
from meshkit.interceptors import AccessCheck


def method_access(services: list[ServiceDescriptor]) -> dict[str, int]:
    """'/pkg.Service/Method' -> Access enum value."""
    table: dict[str, int] = {}
    for service in services:
        for method in service.methods:
            table[f"/{service.full_name}/{method.name}"] = method.GetOptions().Extensions[options_pb2.access]
    return table


def access_policy(services: list[ServiceDescriptor]) -> AccessCheck:
    table = method_access(services)

    def check(method: str, principal: Principal) -> None:
        access = table.get(method, options_pb2.ACCESS_UNSPECIFIED)
        roles = set(principal.roles)
        if access == options_pb2.ACCESS_ANONYMOUS:
            return
        if access == options_pb2.ACCESS_USER:
            if principal.subject == ANONYMOUS_SUBJECT:
                raise Unauthenticated("sign-in required", reason="USER_REQUIRED")
            return
        if access == options_pb2.ACCESS_ADMIN:
            if ADMIN_ROLE not in roles:
                raise PermissionDenied("admin role required", reason="ADMIN_REQUIRED")
            return
        if not roles & {SERVICE_ROLE, ADMIN_ROLE}:
            raise PermissionDenied("internal method: services and admins only", reason="INTERNAL_ONLY")

    return check
