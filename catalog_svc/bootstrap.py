"""Composition root of catalog_svc: builds the components from settings (the service and shopctl
use the same builder) and wires the servicer, consumers, sync loop and scheduled jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc
import valkey.asyncio as valkey_asyncio
from psycopg_pool import AsyncConnectionPool
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from catalog_svc import jobs, recs
from catalog_svc.cache import GuardedValkey, ProductCache
from catalog_svc.config import CatalogSettings
from catalog_svc.consumers import CoPurchaseRecorder, Indexer, IndexSync, is_order_created
from catalog_svc.index_client import SearchIndex, build_client
from catalog_svc.search import SearchLogWriter, SearchService
from catalog_svc.server import CatalogServicer
from catalog_svc.service import CatalogService
from meshkit.access import access_policy
from meshkit.auth import TokenMinter
from meshkit.circuit import CircuitBreaker
from meshkit.clients import open_channel
from meshkit.consumer import DedupConsumer
from meshkit.context import Principal
from meshkit.interceptors import AccessCheck
from meshkit.server import Runtime, Setup

log = logging.getLogger("catalog_svc.bootstrap")


@dataclasses.dataclass
class Components:
    settings: CatalogSettings
    pool: AsyncConnectionPool
    kv: GuardedValkey
    index: SearchIndex
    breaker: CircuitBreaker
    catalog: CatalogService
    search: SearchService
    search_log: SearchLogWriter
    also_bought: recs.AlsoBoughtService
    recs_config: recs.RecsConfig

    async def close(self) -> None:
        await self.index.client.close()


def build_components(
    settings: CatalogSettings,
    *,
    pool: AsyncConnectionPool,
    valkey: valkey_asyncio.Valkey,
    on_commit: Callable[[], None] = lambda: None,
) -> Components:
    kv = GuardedValkey(
        valkey,
        timeout=settings.cache_timeout_seconds,
        breaker=CircuitBreaker("valkey", failure_threshold=3, success_threshold=1, reset_timeout=5.0),
    )
    index = SearchIndex(
        build_client(
            settings.opensearch_url,
            timeout=settings.search_timeout_seconds,
            connections=settings.search_http_connections,
        ),
        alias=settings.search_index_alias,
        shards=settings.search_shards,
        replicas=settings.search_replicas,
        refresh_interval=settings.search_refresh_interval,
        timeout=settings.search_timeout_seconds,
    )
    breaker = CircuitBreaker(
        "opensearch",
        failure_threshold=settings.breaker_failure_threshold,
        success_threshold=settings.breaker_success_threshold,
        reset_timeout=settings.breaker_reset_seconds,
    )
    cache = ProductCache(
        kv,
        ttl_seconds=settings.product_cache_ttl_seconds,
        prefix=f"{settings.cache_key_prefix}catalog:product:",
    )
    catalog = CatalogService(pool=pool, cache=cache, settings=settings, on_commit=on_commit)
    search_log = SearchLogWriter(pool, max_queue=settings.search_log_queue_size)
    search = SearchService(
        pool=pool, index=index, breaker=breaker, search_log=search_log, max_pages=settings.search_max_pages
    )
    recs_config = recs.RecsConfig(
        window_days=settings.recs_window_days,
        top_n=settings.recs_top_n,
        batch_size=settings.recs_batch_size,
        cache_ttl_seconds=settings.recs_cache_ttl_seconds,
        key_prefix=settings.cache_key_prefix,
    )

    async def load_products(ids: list[int]) -> dict:
        products, _ = await catalog.batch_get(ids)
        return {p.id: p for p in products}

    also_bought = recs.AlsoBoughtService(pool=pool, kv=kv, config=recs_config, load_products=load_products)
    return Components(
        settings=settings,
        pool=pool,
        kv=kv,
        index=index,
        breaker=breaker,
        catalog=catalog,
        search=search,
        search_log=search_log,
        also_bought=also_bought,
        recs_config=recs_config,
    )


def inventory_availability(
    settings: CatalogSettings,
) -> tuple[jobs.Availability, Callable[[], Awaitable[None]]]:
    """inventory's BatchGetAvailability as a function (for reconcile), and the channel's closer."""
    minter = TokenMinter(settings.internal_token_secret, Principal(settings.service_name, ("service",)))
    channel = open_channel(
        settings.inventory_addr, token_provider=minter.token, default_timeout=settings.rpc_deadline_seconds
    )
    stub = inventory_pb2_grpc.InventoryServiceStub(channel)

    async def availability(product_ids: Sequence[int]) -> dict[int, tuple[int, bool]]:
        out: dict[int, tuple[int, bool]] = {}
        for start in range(0, len(product_ids), 1000):
            reply = await stub.BatchGetAvailability(
                inventory_pb2.BatchGetAvailabilityRequest(product_ids=list(product_ids[start : start + 1000]))
            )
            out.update({a.product_id: (a.available, a.in_stock) for a in reply.availabilities})
        return out

    return availability, channel.close


def make_setup(settings: CatalogSettings) -> Setup:
    async def setup(runtime: Runtime, server: grpc.aio.Server) -> AccessCheck:
        relay = runtime.start_outbox_relay()
        parts = build_components(
            settings, pool=runtime.pool, valkey=runtime.valkey, on_commit=relay.wakeup.set
        )
        runtime.on_close(parts.close)
        servicer = CatalogServicer(parts.catalog, parts.search, parts.also_bought)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
        descriptor = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]
        runtime.service_names.append(descriptor.full_name)

        try:
            await asyncio.wait_for(parts.index.ensure_alias(), timeout=10)
        except Exception as exc:  # OpenSearch down at start: searches fall back; reconcile creates it later
            log.warning("search alias not ensured at start", extra={"error": repr(exc)[:300]})

        wake = asyncio.Event()
        indexer = Indexer(
            catalog_topic=settings.topic_catalog_events,
            inventory_topic=settings.topic_inventory_events,
            wake=wake,
        )
        index_consumer = DedupConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[settings.topic_catalog_events, settings.topic_inventory_events],
            group_id=settings.indexer_group,
            consumer_name="catalog-indexer",  # dedup identity, stable whatever the group is called
            pool=runtime.pool,
            handler=indexer.handle,
        )
        copurchase_consumer = DedupConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[settings.topic_order_events],
            group_id=settings.copurchase_group,
            consumer_name="catalog-copurchases",
            pool=runtime.pool,
            handler=CoPurchaseRecorder().handle,
            select=is_order_created,
        )
        sync = IndexSync(
            pool=runtime.pool,
            index=parts.index,
            wake=wake,
            batch_size=settings.index_sync_batch_size,
            poll_seconds=settings.index_sync_poll_seconds,
        )
        availability, close_inventory = inventory_availability(settings)
        runtime.on_close(close_inventory)

        async def reconcile_job() -> None:
            await parts.index.ensure_alias()
            await jobs.reconcile(
                runtime.pool,
                parts.index,
                availability=_tolerant(availability) if settings.reconcile_check_inventory else None,
            )

        runtime.spawn("indexer", index_consumer.run)
        runtime.spawn("copurchases", copurchase_consumer.run)
        runtime.spawn("index-sync", sync.run)
        runtime.spawn("search-log", parts.search_log.run)
        runtime.spawn(
            "price-cents-check",
            lambda: parts.search.watch_price_cents(interval_seconds=settings.price_cents_check_seconds),
        )
        if runtime.worker_index == 0:
            runtime.spawn(
                "reconcile",
                lambda: jobs.run_as_leader(
                    database_url=settings.database_url,
                    name="reconcile",
                    job=reconcile_job,
                    first_delay=settings.reconcile_first_delay_seconds,
                    next_delay=lambda: settings.reconcile_interval_seconds,
                ),
            )
            runtime.spawn(
                "search-log-retention",
                lambda: jobs.run_as_leader(
                    database_url=settings.database_url,
                    name="search-log-retention",
                    job=lambda: jobs.purge_search_log(
                        runtime.pool, retention_days=settings.search_log_retention_days
                    ),
                    first_delay=30.0,
                    next_delay=lambda: settings.retention_interval_seconds,
                ),
            )
            if settings.recs_nightly_hour_utc >= 0:
                runtime.spawn(
                    "recs-nightly",
                    lambda: jobs.run_as_leader(
                        database_url=settings.database_url,
                        name="recs-nightly",
                        job=lambda: recs.compute_all(
                            runtime.pool,
                            parts.kv,
                            config=parts.recs_config,
                            topic=settings.topic_catalog_events,
                        ),
                        first_delay=jobs.seconds_until_hour(settings.recs_nightly_hour_utc),
                        next_delay=lambda: jobs.seconds_until_hour(settings.recs_nightly_hour_utc),
                    ),
                )
        return access_policy([descriptor])

    return setup


def _tolerant(availability: jobs.Availability) -> jobs.Availability:
    """Reconcile still repairs the index when inventory cannot answer; stock is then left as is."""

    async def call(ids: Sequence[int]) -> dict[int, tuple[int, bool]]:
        try:
            return await availability(ids)
        except grpc.RpcError as exc:
            log.warning(
                "inventory availability unavailable; stock not checked", extra={"error": str(exc)[:200]}
            )
            return {}

    return call
