"""External tokens at a gateway with the production auth settings (RS256, issuer, audience).

Only a token signed with the identity provider's private key, for this audience and issuer, not
expired and not yet-to-come, gets in. Everything else is 401 with a Bearer challenge, on user and
admin routes alike (a forged admin token must never reach the 403/2xx logic).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.security.conftest import AUDIENCE, ISSUER, SecureGateway, new_user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _claims(user: str, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    return {
        "sub": user,
        "roles": ["admin"],
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


def _forgeries(gw: SecureGateway) -> dict[str, str]:
    user = new_user("forger")
    now = int(time.time())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # HS256 keyed with the PUBLIC key, the classic algorithm-confusion forgery (PyJWT refuses to make it)
    confusion_input = _unsigned({"alg": "HS256", "typ": "JWT"}, _claims(user)).rsplit(".", 1)[0]
    confusion_sig = hmac.new(gw.public_key, confusion_input.encode(), hashlib.sha256).digest()
    valid = gw.token(user, "admin")
    head, _, signature = valid.split(".")
    tampered = f"{head}.{_b64(json.dumps(_claims('someone-else')).encode())}.{signature}"
    return {
        "wrong signature (another RSA key)": jwt.encode(_claims(user), other_key, algorithm="RS256"),
        "alg=none": _unsigned({"alg": "none", "typ": "JWT"}, _claims(user)),
        "alg=None, signature kept": _unsigned({"alg": "None", "typ": "JWT"}, _claims(user), b"x" * 256),
        "HS256 keyed with the public key": f"{confusion_input}.{_b64(confusion_sig)}",
        "HS256 with the session's shared JWT secret": jwt.encode(
            _claims(user), gw.mesh.jwt_secret, algorithm="HS256"
        ),
        "expired": gw.token(user, "admin", ttl=-120),
        "not valid yet (nbf)": gw.token(user, "admin", nbf=now + 600),
        "wrong audience": jwt.encode(_claims(user, aud="someone-else"), gw.private_key, algorithm="RS256"),
        "no audience": jwt.encode(
            {k: v for k, v in _claims(user).items() if k != "aud"}, gw.private_key, algorithm="RS256"
        ),
        "wrong issuer": jwt.encode(
            _claims(user, iss="https://evil.example/"), gw.private_key, algorithm="RS256"
        ),
        "no expiry": jwt.encode(
            {k: v for k, v in _claims(user).items() if k != "exp"}, gw.private_key, algorithm="RS256"
        ),
        "payload swapped under a valid signature": tampered,
        "garbage": "not-a-jwt",
        "empty signature": valid.rsplit(".", 1)[0] + ".",
    }


async def test_a_valid_production_token_gets_in(secure_gateway: SecureGateway) -> None:
    reply = await secure_gateway.client.get("/v1/cart", headers=secure_gateway.auth(new_user()))
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("route", [("GET", "/v1/cart"), ("POST", "/v1/products")])
async def test_forged_expired_and_misaddressed_tokens_are_401(
    secure_gateway: SecureGateway, route: tuple[str, str]
) -> None:
    method, path = route
    for name, token in _forgeries(secure_gateway).items():
        reply = await secure_gateway.client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json={} if method == "POST" else None
        )
        assert reply.status_code == 401, (name, reply.status_code, reply.text[:300])
        assert reply.headers.get("www-authenticate", "").startswith("Bearer"), name
        assert reply.json()["error"]["status"] == "UNAUTHENTICATED", name


async def test_malformed_authorization_headers_are_401(secure_gateway: SecureGateway) -> None:
    token = secure_gateway.token(new_user())
    for header in ("Bearer", f"Basic {token}", f"Token {token}", "Bearer a.b", "Bearer ...."):
        reply = await secure_gateway.client.get("/v1/cart", headers={"Authorization": header})
        assert reply.status_code == 401, (header, reply.status_code)
