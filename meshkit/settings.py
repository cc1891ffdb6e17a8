"""Typed settings read once from environment variables (the only place that reads os.environ).

Every service's config.py builds on `CommonSettings`; infra/ and the k8s ConfigMaps use the same
variable names. Defaults work on one machine with the servers started by `make infra-up`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable is present but cannot be parsed: fail fast at start-up."""


def _parse(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from exc


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build a frozen settings dataclass: field `grpc_port` reads `SHOPMESH_GRPC_PORT`."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        var = f"SHOPMESH_{field.name.upper()}"
        if var in env:
            values[field.name] = _parse(env[var], hints[field.name], var)
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """Settings every service process shares. Service configs subclass this."""

    service_name: str = "shopmesh"
    # data layer (ports match infra/ defaults, which avoid the servers' default ports)
    database_url: str = "postgresql://postgres@127.0.0.1:15432/shopmesh"
    db_pool_min: int = 2
    db_pool_max: int = 20
    valkey_url: str = "valkey://127.0.0.1:16379/0"
    kafka_bootstrap: str = "127.0.0.1:19092"
    opensearch_url: str = "http://127.0.0.1:19200"
    # prefix for every Valkey key a service writes (tests set one per session to stay isolated)
    cache_key_prefix: str = ""
    # topics (tests override them to stay isolated)
    topic_inventory_events: str = "inventory-events"
    topic_order_events: str = "order-events"
    topic_catalog_events: str = "catalog-events"
    # serving
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0
    workers: int = 1
    shutdown_grace_seconds: float = 10.0
    # garbage collector of serving processes (meshkit.gc_tuning.tune_gc); 0 keeps the interpreter's 700
    gc_freeze: bool = True
    gc_gen0_threshold: int = 0
    # peers
    catalog_addr: str = "127.0.0.1:15051"
    inventory_addr: str = "127.0.0.1:15052"
    order_addr: str = "127.0.0.1:15053"
    rpc_deadline_seconds: float = 5.0
    # trust between gateway and services (HS256 internal token)
    internal_token_secret: str = "shopmesh-internal-demo-secret-change-me"
    internal_token_ttl_seconds: int = 60
    # observability
    log_level: str = "INFO"
    otlp_endpoint: str = ""  # empty: tracing export off
    # background work
    outbox_poll_seconds: float = 0.2
    outbox_batch_size: int = 500
