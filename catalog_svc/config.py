"""catalog_svc settings (env SHOPMESH_<FIELD>)."""

from __future__ import annotations

import dataclasses

from meshkit.settings import CommonSettings


@dataclasses.dataclass(frozen=True)
class CatalogSettings(CommonSettings):
    service_name: str = "catalog_svc"
    grpc_port: int = 15051
    metrics_port: int = 9151
    db_pool_max: int = 30
    # OpenSearch: the alias searches go through; versioned indexes are named "<alias>-<stamp>".
    # Tests and benchmarks use their own alias so they never touch `make run` data.
    search_index_alias: str = "products"
    search_shards: int = 1  # production (k8s): 5
    search_replicas: int = 0  # production (k8s): 1
    search_refresh_interval: str = "1s"  # the seed's 5s in production; 1s keeps local demos snappy
    search_timeout_seconds: float = 2.0
    search_max_pages: int = 50  # pages 0..49; deeper is INVALID_ARGUMENT
    # HTTP connections to OpenSearch: searches beyond this many in flight wait in catalog_svc for one;
    # idle keep-alive connections cost only a socket each
    search_http_connections: int = 64
    # circuit breaker around OpenSearch (the seed's numbers)
    breaker_failure_threshold: int = 3
    breaker_success_threshold: int = 2
    breaker_reset_seconds: float = 10.0
    # product read cache in Valkey (keys carry CommonSettings.cache_key_prefix)
    product_cache_ttl_seconds: int = 300
    cache_timeout_seconds: float = 0.25
    # index sync
    indexer_group: str = "catalog-indexer"
    copurchase_group: str = "catalog-copurchases"
    index_sync_batch_size: int = 500
    index_sync_poll_seconds: float = 0.5
    reconcile_interval_seconds: float = 600.0
    reconcile_first_delay_seconds: float = 5.0  # after start (creates a missing index's documents)
    reconcile_check_inventory: bool = True
    reindex_batch_size: int = 2000
    # how often each process checks that every document has price_cents (see SearchService)
    price_cents_check_seconds: float = 30.0
    # also-bought
    recs_window_days: int = 90
    recs_top_n: int = 20
    recs_batch_size: int = 100
    recs_cache_ttl_seconds: int = 86400
    recs_nightly_hour_utc: int = 3  # -1 disables the in-service nightly run
    # search log
    search_log_retention_days: int = 90
    search_log_queue_size: int = 10000
    retention_interval_seconds: float = 3600.0
