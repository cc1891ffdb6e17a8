"""Gateway settings (env SHOPMESH_<FIELD>), read once at start-up and validated there (fail fast)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meshkit.settings import CommonSettings, SettingsError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_JWT_SECRET = "shopmesh-demo-jwt-secret-change-me"
JWT_ALGORITHMS = ("HS256", "RS256")

# Token bucket per rate-limit class: "burst/refill_per_second". SHOPMESH_RATE_LIMITS overrides only
# the classes it names, e.g. SHOPMESH_RATE_LIMITS="checkout=3/0.5,browse=20/10".
DEFAULT_RATE_LIMITS = "browse=200/100,cart=60/20,orders=60/20,checkout=5/0.5,admin=120/60"


@dataclasses.dataclass(frozen=True)
class Bucket:
    burst: int
    per_second: float


@dataclasses.dataclass(frozen=True)
class GatewaySettings(CommonSettings):
    service_name: str = "gateway"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 18080
    # external JWTs
    jwt_secret: str = DEMO_JWT_SECRET
    jwt_audience: str = "shopmesh"
    jwt_algorithm: str = "HS256"  # HS256 (shared secret) or RS256 (jwt_public_key, the production option)
    jwt_public_key: str = ""  # PEM text, or a path to a PEM file
    jwt_issuer: str = ""  # when set, the `iss` claim must equal it
    jwt_leeway_seconds: int = 5
    # protection
    # proxies whose X-Forwarded-For is believed (the client IP keys anonymous rate limits)
    trusted_proxies: str = "127.0.0.1"
    cors_origins: str = ""  # comma-separated; "*" allows any origin; empty disables CORS
    max_body_bytes: int = 256 * 1024
    max_page_size: int = 100
    request_timeout_seconds: float = 5.0
    checkout_timeout_seconds: float = 20.0  # checkout waits on the payment provider
    # rate limiting (token buckets in Valkey)
    rate_limit_enabled: bool = True
    rate_limits: str = ""  # overrides of DEFAULT_RATE_LIMITS, same syntax
    rate_limit_default: str = "60/30"  # for a class missing from both
    rate_limit_valkey_timeout_seconds: float = 0.25
    # after a Valkey failure, fail open without trying Valkey for this long
    rate_limit_retry_down_seconds: float = 1.0
    rate_limit_key_prefix: str = "shopmesh:ratelimit"  # tests give each session its own
    # routing: extra or overriding upstreams, "shop.audit.v1.AuditService=127.0.0.1:50054,..."
    service_addrs: str = ""
    docs_assets_dir: str = str(REPO_ROOT / "node_modules" / "swagger-ui-dist")
    protos_dir: str = str(REPO_ROOT / "protos")  # comments become the OpenAPI descriptions (optional)

    def rate_limit_buckets(self) -> dict[str, Bucket]:
        buckets = parse_buckets(DEFAULT_RATE_LIMITS, "DEFAULT_RATE_LIMITS")
        buckets.update(parse_buckets(self.rate_limits, "SHOPMESH_RATE_LIMITS"))
        return buckets

    def default_bucket(self) -> Bucket:
        return _parse_bucket(self.rate_limit_default, "SHOPMESH_RATE_LIMIT_DEFAULT")

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def upstream_overrides(self) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.service_addrs.split(","))):
            name, sep, addr = item.partition("=")
            if not sep or not name.strip() or not addr.strip():
                raise SettingsError(f"SHOPMESH_SERVICE_ADDRS: {item!r} is not 'pkg.Service=host:port'")
            pairs[name.strip()] = addr.strip()
        return pairs

    def jwt_verification_key(self) -> str:
        """The HS256 secret or the RS256 public key (PEM)."""
        if self.jwt_algorithm not in JWT_ALGORITHMS:
            raise SettingsError(f"SHOPMESH_JWT_ALGORITHM={self.jwt_algorithm!r}: use one of {JWT_ALGORITHMS}")
        if self.jwt_algorithm == "HS256":
            if len(self.jwt_secret) < 32:  # RFC 7518 3.2: at least the hash size
                raise SettingsError("SHOPMESH_JWT_SECRET must be at least 32 characters")
            return self.jwt_secret
        key = self.jwt_public_key.strip()
        if not key:
            raise SettingsError(
                "SHOPMESH_JWT_ALGORITHM=RS256 needs SHOPMESH_JWT_PUBLIC_KEY (PEM or file path)"
            )
        if not key.startswith("-----BEGIN"):
            try:
                key = Path(key).read_text()
            except OSError as exc:
                raise SettingsError(f"SHOPMESH_JWT_PUBLIC_KEY: cannot read {key!r}: {exc}") from exc
        return key

    @property
    def uses_demo_secret(self) -> bool:
        return self.jwt_algorithm == "HS256" and self.jwt_secret == DEMO_JWT_SECRET


def _parse_bucket(text: str, source: str) -> Bucket:
    burst, sep, rate = text.strip().partition("/")
    try:
        bucket = Bucket(burst=int(burst), per_second=float(rate))
    except ValueError:
        bucket = None
    if not sep or bucket is None or bucket.burst < 1 or bucket.per_second <= 0:
        raise SettingsError(f"{source}: {text!r} is not 'burst/refill_per_second' (burst >= 1, rate > 0)")
    return bucket


def parse_buckets(text: str, source: str) -> dict[str, Bucket]:
    buckets: dict[str, Bucket] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, spec = item.partition("=")
        if not sep or not name.strip():
            raise SettingsError(f"{source}: {item!r} is not 'class=burst/refill_per_second'")
        buckets[name.strip()] = _parse_bucket(spec, source)
    return buckets
