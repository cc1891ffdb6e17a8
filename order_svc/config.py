"""order_svc settings: CommonSettings plus the cart, checkout, payment, recovery and archival knobs."""

from __future__ import annotations

import dataclasses

from meshkit.settings import CommonSettings, load_settings


@dataclasses.dataclass(frozen=True)
class OrderSettings(CommonSettings):
    service_name: str = "order_svc"
    grpc_port: int = 15053
    metrics_port: int = 9153
    # cart
    cart_reservation_ttl_seconds: float = 1800.0  # how long a cart line holds stock (seed: 30 min)
    cart_max_line_quantity: int = 100  # units of one product per cart line
    cart_max_lines: int = 100
    cart_cache_ttl_seconds: int = 300  # bound on staleness of cached titles/prices
    cart_catalog_cache_seconds: float = 10.0  # cart changes may reuse catalog answers this old
    # checkout
    checkout_hold_seconds: float = 600.0  # reservations are extended by this much at checkout
    idempotency_lease_seconds: float = 30.0  # "processing" lease, Valkey and database alike
    idempotency_ttl_seconds: int = 86_400  # completed entries in Valkey (the database keeps them)
    payment_provider: str = "sandbox"
    payment_timeout_seconds: float = 3.0
    # recovery of interrupted checkouts and transitions (one active instance, advisory lock)
    recovery_enabled: bool = True
    recovery_interval_seconds: float = 15.0
    recovery_min_age_seconds: float = 60.0
    # crash testing: comma-separated failpoint names at which the process SIGKILLs itself
    failpoints: str = ""
    # archival: the in-service job (one active instance) runs this often; 0 turns it off
    order_archive_interval_seconds: float = 86_400.0
    # archival cold tier (gzip JSON Lines files, written by `shopctl orders export`)
    order_archive_dir: str = ".data/order-archive"


def load() -> OrderSettings:
    return load_settings(OrderSettings)
