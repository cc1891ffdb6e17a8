"""The services' cache of verified internal tokens (meshkit.interceptors): one HMAC check per token,
never trust past the token's own expiry."""

from __future__ import annotations

import time

import jwt
import pytest

from meshkit.auth import InternalTokenError, mint_internal_token
from meshkit.context import Principal
from meshkit.interceptors import _TokenCache

SECRET = "token-cache-test-secret-0123456789abcdef"


def test_a_cached_token_is_refused_once_it_expires() -> None:
    cache = _TokenCache(SECRET)
    token = mint_internal_token(SECRET, Principal("order_svc", ("service",)), ttl_seconds=1)
    assert cache.principal(token) == Principal("order_svc", ("service",))
    assert cache.principal(token) == Principal("order_svc", ("service",))  # from the cache
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    with pytest.raises(InternalTokenError):  # cached for a flat 20 s, it was still accepted here
        cache.principal(token)


def test_a_bad_token_is_never_cached() -> None:
    cache = _TokenCache(SECRET)
    token = mint_internal_token("another-secret-0123456789abcdefghijkl", Principal("x", ()))
    for _ in range(2):
        with pytest.raises(InternalTokenError):
            cache.principal(token)
