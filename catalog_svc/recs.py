"""Also-bought recommendations: the nightly batch computation and real-time retrieval (seed, Deep
Dive 4).

Computation: active products in id order, 100 per batch; per batch one transaction replaces the
stored lists and writes a `recommendations_updated` event to the outbox; after commit each list is
cached in Valkey as `recs:also_bought:{id}` for 24 h. A batch Valkey refused has its keys deleted at the
end of the run, so readers fill from the new rows rather than keep the old list for a day.

Retrieval: Valkey, then PostgreSQL; inactive and out-of-stock products are dropped; when nothing is
left (no co-purchase data, or none of it sellable) the category's top sellers answer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from catalog_svc import events, metrics, recs_store
from catalog_svc.cache import GuardedValkey
from catalog_svc.model import Product, ProductNotFound
from meshkit.db import connection, transaction
from meshkit.errors import InvalidArgument
from meshkit.logs import log_event

log = logging.getLogger("catalog_svc.recs")

DEFAULT_LIMIT = 10
MAX_LIMIT = 20
# more than MAX_LIMIT + 1, so products out of stock since the list was cached leave enough behind
CATEGORY_CANDIDATES = 40
DROP_CHUNK = 1000  # keys per DEL when a batch's lists could not be cached


class Source(enum.Enum):
    CACHE = "cache"
    CO_PURCHASE = "co_purchase"
    CATEGORY_TOP_SELLERS = "category_top_sellers"


@dataclasses.dataclass(frozen=True)
class AlsoBought:
    items: tuple[tuple[Product, float], ...]
    source: Source


@dataclasses.dataclass(frozen=True)
class RecsConfig:
    window_days: int = 90
    top_n: int = 20
    batch_size: int = 100
    cache_ttl_seconds: int = 86400
    key_prefix: str = ""
    category_ttl_seconds: int = 300

    def key(self, product_id: int) -> str:
        return f"{self.key_prefix}recs:also_bought:{product_id}"

    def category_key(self, category_id: int) -> str:
        return f"{self.key_prefix}recs:category_top:{category_id}"


async def compute_all(
    pool: AsyncConnectionPool, kv: GuardedValkey, *, config: RecsConfig, topic: str
) -> dict[str, int]:
    """Recompute every active product's list; returns counters for the job report."""
    after, processed, with_recs, batches = 0, 0, 0, 0
    uncached: list[int] = []  # products whose new list did not reach Valkey
    while True:
        async with connection(pool) as conn:
            ids = await recs_store.active_ids_after(conn, after, config.batch_size)
        if not ids:
            break
        async with transaction(pool) as conn:
            recs = await recs_store.compute_also_bought(
                conn, ids, window_days=config.window_days, top_n=config.top_n
            )
            changed = await recs_store.replace_recommendations(conn, ids, recs)
            # every finished batch is announced (the contract), naming the lists that changed
            await events.recommendations_updated(conn, topic=topic, product_ids=changed)
        if not await _cache_batch(kv, config, ids, recs):
            uncached.extend(ids)
        after = ids[-1]
        processed += len(ids)
        with_recs += len(recs)
        batches += 1
        metrics.recommendations_computed_total.inc(len(ids))
        log_event(log, "recommendation_batch", processed=processed, batch=batches, changed=len(changed))
    stale = await _drop_cached(kv, config, uncached) if uncached else 0
    return {
        "products": processed,
        "with_recommendations": with_recs,
        "batches": batches,
        "cache_stale": stale,
    }


async def _drop_cached(kv: GuardedValkey, config: RecsConfig, ids: list[int]) -> int:
    """Delete the cached lists of products whose new list could not be cached, so readers fill from
    the rows just committed instead of serving yesterday's list for the cache's 24 hours; returns how
    many are still cached from before (logged: Valkey stayed out of reach)."""
    stale = 0
    for start in range(0, len(ids), DROP_CHUNK):
        keys = [config.key(pid) for pid in ids[start : start + DROP_CHUNK]]
        if await kv.run(lambda keys=keys: kv.client.delete(*keys)) is None:
            stale += len(keys)
    if stale:
        log.error(
            "recommendation lists still cached from before: Valkey out of reach",
            extra={"event": "recommendation_cache_stale", "products": stale},
        )
    return stale


async def _cache_batch(
    kv: GuardedValkey, config: RecsConfig, ids: list[int], recs: dict[int, list[recs_store.Recommendation]]
) -> bool:
    """Cache a batch's lists; False when Valkey did not take them."""

    async def write() -> bool:
        pipe = kv.client.pipeline(transaction=False)
        for pid in ids:
            items = recs.get(pid)
            if items:
                payload = json.dumps([[rid, score] for rid, score, _ in items])
                pipe.setex(config.key(pid), config.cache_ttl_seconds, payload)
            else:  # an empty list, not a delete: a reader's fill (SET NX) must not find the key free
                pipe.setex(config.key(pid), config.cache_ttl_seconds, "[]")
        await pipe.execute()
        return True

    return await kv.run(write) is True


class AlsoBoughtService:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        kv: GuardedValkey,
        config: RecsConfig,
        load_products: Callable[[list[int]], Awaitable[dict[int, Product]]],
    ) -> None:
        self._pool = pool
        self._kv = kv
        self._config = config
        self._load = load_products

    async def get(self, product_id: int, *, limit: int = 0) -> AlsoBought:
        if product_id <= 0:
            raise InvalidArgument("product_id", "must be positive")
        if limit < 0:
            raise InvalidArgument("limit", "must be >= 0")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        candidates, source = await self._candidates(product_id)
        async with connection(self._pool) as conn:
            active, category_id = await recs_store.category_of(conn, product_id)
            if not active:  # a deleted product is NOT_FOUND here as in GetProduct
                raise ProductNotFound(product_id)
            keep = await recs_store.sellable(conn, [pid for pid, _ in candidates]) if candidates else set()
            chosen = [(pid, score) for pid, score in candidates if pid in keep][:limit]
        if not chosen:
            source = Source.CATEGORY_TOP_SELLERS
            if category_id is not None:
                top = await self._category_top(category_id)
                async with connection(self._pool) as conn:
                    keep = await recs_store.sellable(conn, [pid for pid, _ in top]) if top else set()
                chosen = [(pid, score) for pid, score in top if pid in keep and pid != product_id][:limit]
        products = await self._load([pid for pid, _ in chosen])
        metrics.also_bought_requests_total.labels(source.value).inc()
        return AlsoBought(
            items=tuple((products[pid], score) for pid, score in chosen if pid in products), source=source
        )

    async def _category_top(self, category_id: int) -> list[tuple[int, float]]:
        """The category's top sellers, cached a few minutes (re-checked for stock on every read)."""
        key = self._config.category_key(category_id)
        cached = await self._kv.run(lambda: self._kv.client.get(key))
        if cached is not None:
            try:
                return [(int(pid), float(score)) for pid, score in json.loads(cached)]
            except (ValueError, TypeError):
                log.warning("unreadable category top-sellers entry", extra={"category_id": category_id})
        async with connection(self._pool) as conn:
            top = await recs_store.category_top_sellers(
                conn, category_id=category_id, window_days=self._config.window_days, limit=CATEGORY_CANDIDATES
            )
        payload = json.dumps([[pid, score] for pid, score in top])
        await self._kv.run(lambda: self._kv.client.setex(key, self._config.category_ttl_seconds, payload))
        return top

    async def _candidates(self, product_id: int) -> tuple[list[tuple[int, float]], Source]:
        key = self._config.key(product_id)
        cached = await self._kv.run(lambda: self._kv.client.get(key))
        if cached is not None:
            try:
                return [(int(pid), float(score)) for pid, score in json.loads(cached)], Source.CACHE
            except (ValueError, TypeError):
                log.warning("unreadable recommendations cache entry", extra={"product_id": product_id})
        async with connection(self._pool) as conn:
            stored = await recs_store.stored_recommendations(conn, product_id, self._config.top_n)
        if stored:
            payload = json.dumps([[pid, score] for pid, score in stored])
            # only if absent (NX): the nightly batch may have committed and cached a newer list since
            # these rows were read, and overwriting it kept the old list for the cache's 24 hours
            await self._kv.run(
                lambda: self._kv.client.set(key, payload, ex=self._config.cache_ttl_seconds, nx=True)
            )
        return stored, Source.CO_PURCHASE
