"""External identity: Bearer JWT -> Principal, and Principal -> the internal token sent upstream.

Tokens are verified with exactly one configured algorithm (HS256 with SHOPMESH_JWT_SECRET, or RS256
with SHOPMESH_JWT_PUBLIC_KEY), so `alg=none` and algorithm-confusion tokens are refused. Required
claims: `sub`, `exp`, `aud` (SHOPMESH_JWT_AUDIENCE). Only roles the outside world may hold
(EXTERNAL_ROLES) are relayed: a JWT claiming the internal "service" role gets nothing from it.

A verified token's principal is remembered, keyed by the exact Authorization header, until the
moment pyjwt would call it expired (`exp + leeway`): a client sends one token on many requests, and
verifying it again cost ~35 us each time. Only successes are remembered, and `nbf`/`iat`, once
passed, stay passed, so every answer is the one verification would give.
"""

from __future__ import annotations

import time

import grpc
import jwt

from gateway.errors import GatewayError
from meshkit.auth import ADMIN_ROLE, ANONYMOUS_ROLE, ANONYMOUS_SUBJECT, mint_internal_token
from meshkit.context import Principal

EXTERNAL_ROLES = frozenset({ADMIN_ROLE})
ANONYMOUS = Principal(subject=ANONYMOUS_SUBJECT, roles=(ANONYMOUS_ROLE,))
MAX_SUBJECT_LENGTH = 128


def unauthenticated(message: str, reason: str = "INVALID_CREDENTIALS") -> GatewayError:
    return GatewayError(
        401,
        grpc.StatusCode.UNAUTHENTICATED,
        message,
        reason=reason,
        headers={"WWW-Authenticate": 'Bearer realm="shopmesh"'},
    )


class JwtVerifier:
    def __init__(
        self,
        *,
        key: str,
        algorithm: str,
        audience: str,
        issuer: str = "",
        leeway: int = 5,
        max_cached: int = 10_000,
    ) -> None:
        self._key = key
        self._algorithm = algorithm
        self._audience = audience
        self._issuer = issuer or None
        self._leeway = leeway
        self._required = ["sub", "exp", "aud", *(["iss"] if issuer else [])]
        self._max_cached = max_cached
        self._verified: dict[str, tuple[Principal, float]] = {}  # header -> (principal, valid until)

    def principal(self, authorization: str | None) -> Principal | None:
        """None when no Authorization header was sent; raises 401 for anything but a valid token."""
        if authorization is None:
            return None
        hit = self._verified.get(authorization)
        if hit is not None:
            if time.time() < hit[1]:
                return hit[0]
            del self._verified[authorization]
        principal, valid_until = self._verify(authorization)
        if len(self._verified) >= self._max_cached:
            self._verified.clear()
        self._verified[authorization] = (principal, valid_until)
        return principal

    def _verify(self, authorization: str) -> tuple[Principal, float]:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Authorization must be 'Bearer <token>'")
        try:
            claims = jwt.decode(
                token.strip(),
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"invalid token: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
            raise unauthenticated("sub must be a non-empty string of at most 128 characters")
        if subject == ANONYMOUS_SUBJECT:
            raise unauthenticated(f"sub {ANONYMOUS_SUBJECT!r} is reserved")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise unauthenticated("roles must be a list of strings")
        principal = Principal(subject=subject, roles=tuple(sorted(set(roles) & EXTERNAL_ROLES)))
        # pyjwt refuses a token once now >= int(exp) + leeway (it checked that exp is an integer)
        return principal, int(claims["exp"]) + self._leeway


class InternalTokens:
    """Internal tokens per principal, reused until half their lifetime (one signature per user/minute)."""

    def __init__(self, secret: str, *, ttl_seconds: int, max_entries: int = 10_000) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._max = max_entries
        self._cache: dict[Principal, tuple[str, float]] = {}

    def token_for(self, principal: Principal) -> str:
        now = time.monotonic()
        hit = self._cache.get(principal)
        if hit is not None and hit[1] > now:
            return hit[0]
        token = mint_internal_token(self._secret, principal, ttl_seconds=self._ttl)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[principal] = (token, now + self._ttl / 2)
        return token
