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


def _anyone(principal: Principal) -> None:
    return


def _signed_in(principal: Principal) -> None:
    if principal.subject == ANONYMOUS_SUBJECT:
        raise Unauthenticated("sign-in required", reason="USER_REQUIRED")


def _admin(principal: Principal) -> None:
    if ADMIN_ROLE not in principal.roles:
        raise PermissionDenied("admin role required", reason="ADMIN_REQUIRED")


def _internal(principal: Principal) -> None:
    roles = principal.roles
    if SERVICE_ROLE not in roles and ADMIN_ROLE not in roles:
        raise PermissionDenied("internal method: services and admins only", reason="INTERNAL_ONLY")


_RULES = {
    options_pb2.ACCESS_ANONYMOUS: _anyone,
    options_pb2.ACCESS_USER: _signed_in,
    options_pb2.ACCESS_ADMIN: _admin,
}


def access_policy(services: list[ServiceDescriptor]) -> AccessCheck:
    """The check for these services, with each method's rule looked up once here, not per call."""
    rules = {method: _RULES.get(access, _internal) for method, access in method_access(services).items()}

    def check(method: str, principal: Principal) -> None:
        rules.get(method, _internal)(principal)

    return check
