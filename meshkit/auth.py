"""Service-to-service trust: a short-lived HS256 internal token in gRPC metadata.

The gateway verifies the external JWT, then mints an internal token (subject, roles) signed with
SHOPMESH_INTERNAL_TOKEN_SECRET; services mint their own (role "service") when calling each other.
Every RPC except health and reflection must carry a valid token; plain metadata such as
`roles: admin` is ignored. What a principal may call is decided from the proto `access` option.
"""

from __future__ import annotations

import time

import jwt

from meshkit.context import Principal

INTERNAL_TOKEN_HEADER = "x-shopmesh-internal-token"
INTERNAL_AUDIENCE = "shopmesh-internal"
INTERNAL_ISSUER = "shopmesh"
ANONYMOUS_SUBJECT = "anonymous"
ANONYMOUS_ROLE = "anonymous"
SERVICE_ROLE = "service"
ADMIN_ROLE = "admin"


class InternalTokenError(Exception):
    pass


def mint_internal_token(secret: str, principal: Principal, *, ttl_seconds: int = 60) -> str:
    now = int(time.time())
    claims = {
        "sub": principal.subject,
        "roles": list(principal.roles),
        "aud": INTERNAL_AUDIENCE,
        "iss": INTERNAL_ISSUER,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_internal_token(secret: str, token: str) -> Principal:
    return verify_internal_token_until(secret, token)[0]


def verify_internal_token_until(secret: str, token: str) -> tuple[Principal, float]:
    """The token's principal and its `exp` (seconds since the epoch), for callers caching it."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=INTERNAL_AUDIENCE,
            issuer=INTERNAL_ISSUER,
            options={"require": ["sub", "exp", "aud", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InternalTokenError(str(exc)) from exc
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InternalTokenError("roles claim must be a list of strings")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InternalTokenError("sub claim must be a non-empty string")
    return Principal(subject=subject, roles=tuple(roles)), float(claims["exp"])


class TokenMinter:
    """Caches one service token and renews it before it expires (avoids signing on every call)."""

    def __init__(self, secret: str, principal: Principal, *, ttl_seconds: int = 300) -> None:
        self._secret = secret
        self._principal = principal
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_internal_token(self._secret, self._principal, ttl_seconds=self._ttl)
            self._renew_at = now + self._ttl / 2
        return self._token
