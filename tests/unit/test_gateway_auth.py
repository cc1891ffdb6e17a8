"""JWT verification: one algorithm, audience, expiry; roles filtered to the external ones."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import InternalTokens, JwtVerifier
from gateway.errors import GatewayError
from meshkit.auth import verify_internal_token
from meshkit.context import Principal

SECRET = "unit-test-secret-0123456789abcdef0123"
HS = JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh", leeway=0)


def token(claims: dict, key: str = SECRET, algorithm: str = "HS256") -> str:
    base = {"sub": "u1", "aud": "shopmesh", "exp": int(time.time()) + 60}
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def rejected(verifier: JwtVerifier, header: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        verifier.principal(header)
    assert caught.value.http_status == 401
    return caught.value


def test_valid_user_and_admin_tokens() -> None:
    assert HS.principal(f"Bearer {token({})}") == Principal("u1", ())
    assert HS.principal(f"Bearer {token({'sub': 'boss', 'roles': ['admin']})}") == Principal(
        "boss", ("admin",)
    )
    assert HS.principal(None) is None


def test_internal_roles_claimed_by_an_external_token_are_dropped() -> None:
    principal = HS.principal(f"Bearer {token({'roles': ['service', 'admin', 'anonymous']})}")
    assert principal == Principal("u1", ("admin",))


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120},  # expired
        {"aud": "someone-else"},  # wrong audience
        {"sub": ""},
        {"sub": 42},
        {"sub": "anonymous"},
        {"roles": "admin"},
    ],
)
def test_bad_claims_are_401(claims: dict) -> None:
    rejected(HS, f"Bearer {token(claims)}")


def test_missing_required_claims_are_401() -> None:
    rejected(HS, "Bearer " + jwt.encode({"sub": "u1", "aud": "shopmesh"}, SECRET, algorithm="HS256"))
    rejected(HS, "Bearer " + jwt.encode({"sub": "u1", "exp": time.time() + 60}, SECRET, algorithm="HS256"))


def test_forged_signature_is_401() -> None:
    error = rejected(HS, f"Bearer {token({'roles': ['admin']}, key='another-secret-0123456789abcdef012')}")
    assert error.reason == "INVALID_CREDENTIALS"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_401() -> None:
    claims = {"sub": "u1", "aud": "shopmesh", "exp": time.time() + 60, "roles": ["admin"]}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    rejected(HS, f"Bearer {unsigned}")


@pytest.mark.parametrize("header", ["Basic dTE6cHc=", "Bearer", "Bearer    ", "token-without-scheme"])
def test_malformed_authorization_headers_are_401(header: str) -> None:
    rejected(HS, header)


def test_rs256_with_public_key_and_no_algorithm_confusion() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = JwtVerifier(key=public_pem, algorithm="RS256", audience="shopmesh")
    assert verifier.principal(f"Bearer {token({}, key=private, algorithm='RS256')}") == Principal("u1", ())
    # an HS256 token whose HMAC key is the public key text (classic key confusion) must not pass
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64({"sub": "u1", "aud": "shopmesh", "exp": int(time.time()) + 60, "roles": ["admin"]})
    mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    rejected(verifier, f"Bearer {header}.{payload}.{signature}")
    rejected(verifier, f"Bearer {token({}, key=SECRET, algorithm='HS256')}")


def test_internal_tokens_carry_the_principal_and_are_reused() -> None:
    tokens = InternalTokens("internal-secret-0123456789abcdef01", ttl_seconds=60)
    first = tokens.token_for(Principal("u1", ("admin",)))
    assert tokens.token_for(Principal("u1", ("admin",))) == first
    assert verify_internal_token("internal-secret-0123456789abcdef01", first) == Principal("u1", ("admin",))
    assert tokens.token_for(Principal("u2", ())) != first


class FrozenClock:
    """One clock for pyjwt (datetime.now) and the verifier's cache (time.time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: float) -> None:
        self.at = at
        clock = self

        class FrozenDatetime(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.datetime.fromtimestamp(clock.at, tz)

        monkeypatch.setattr(jwt.api_jwt, "datetime", FrozenDatetime)
        monkeypatch.setattr(time, "time", lambda: clock.at)


def counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    decode = jwt.decode

    def counted(token, *args, **kwargs):
        calls.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr("gateway.auth.jwt.decode", counted)
    return calls


def answer(verifier: JwtVerifier, header: str) -> object:
    try:
        return verifier.principal(header)
    except GatewayError as error:
        return (error.http_status, error.message)


def test_a_verified_token_is_remembered_until_pyjwt_would_call_it_expired(monkeypatch) -> None:
    start = 1_900_000_000
    exp = start + 30
    header = "Bearer " + jwt.encode(
        {"sub": "u1", "aud": "shopmesh", "exp": exp, "roles": ["admin"]}, SECRET, algorithm="HS256"
    )
    clock = FrozenClock(monkeypatch, start)
    calls = counting_decode(monkeypatch)
    cached = JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh", leeway=5)
    assert [cached.principal(header) for _ in range(3)] == [Principal("u1", ("admin",))] * 3
    assert len(calls) == 1
    for at in (exp - 1, exp, exp + 4, exp + 4.999, exp + 5, exp + 5.001, exp + 60):
        clock.at = at
        fresh = JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh", leeway=5)
        assert answer(cached, header) == answer(fresh, header), at
    assert answer(cached, header) == (401, "token expired")


def test_refused_tokens_are_verified_every_time(monkeypatch) -> None:
    calls = counting_decode(monkeypatch)
    verifier = JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh")
    forged = f"Bearer {token({'roles': ['admin']}, key='another-secret-0123456789abcdef012')}"
    bad_sub = f"Bearer {token({'sub': 'anonymous'})}"
    for header in (forged, forged, bad_sub, bad_sub):
        rejected(verifier, header)
    assert len(calls) == 4


def test_the_cache_is_bounded_and_keyed_by_the_exact_header() -> None:
    verifier = JwtVerifier(key=SECRET, algorithm="HS256", audience="shopmesh", max_cached=2)
    raw = token({"sub": "a"})
    for header in (f"Bearer {raw}", f"bearer {raw}", f"Bearer  {raw} ", f"Bearer {token({'sub': 'b'})}"):
        assert verifier.principal(header).subject in ("a", "b")
        assert len(verifier._verified) <= 2
    rejected(verifier, f"Bearer {raw}x")
