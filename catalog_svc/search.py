"""The search use case: validate, run on OpenSearch through the circuit breaker, or on PostgreSQL
when the breaker is open or OpenSearch fails; record latency per engine and a search log entry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opensearchpy.exceptions import OpenSearchException
from psycopg_pool import AsyncConnectionPool

from catalog_svc import metrics, search_os, search_sql, store
from catalog_svc.index_client import SearchIndex
from catalog_svc.model import CategoryNotFound
from catalog_svc.search_model import SearchPage, SearchQuery, UnresolvedProduct, validate_search
from meshkit.circuit import CircuitBreaker
from meshkit.db import connection
from meshkit.logs import log_event

log = logging.getLogger("catalog_svc.search")

# what counts against OpenSearch: its client errors (transport, HTTP status), timeouts, sockets
ENGINE_ERRORS = (OpenSearchException, TimeoutError, OSError)


class CategoryPaths:
    """Known category paths. An unknown one reloads them, at most once per `min_reload_seconds`:
    a request that finds the last reload too recent waits for the next one rather than being
    refused (a category created a moment ago is not "unknown"), and every request that was waiting
    when a reload started shares its answer, so a stream of bogus paths costs one query a second."""

    def __init__(self, pool: AsyncConnectionPool, *, min_reload_seconds: float = 1.0) -> None:
        self._pool = pool
        self._paths: set[str] = set()
        self._loaded_at = float("-inf")  # when the last reload started
        self._min_reload = min_reload_seconds
        self._lock = asyncio.Lock()

    async def exists(self, path: str) -> bool:
        if path in self._paths:
            return True
        asked = time.monotonic()
        async with self._lock:
            if path in self._paths or self._loaded_at >= asked:
                return path in self._paths
            wait = self._loaded_at + self._min_reload - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            async with connection(self._pool) as conn:
                paths = {c.path for c in await store.list_categories(conn)}
            self._paths, self._loaded_at = paths, started
        return path in self._paths


class SearchLogWriter:
    """Buffers log entries and inserts them in batches, off the request path (bounded, drops when full)."""

    def __init__(self, pool: AsyncConnectionPool, *, max_queue: int, flush_seconds: float = 1.0) -> None:
        self._pool = pool
        self._queue: asyncio.Queue[tuple[str, str, int, str, float]] = asyncio.Queue(maxsize=max_queue)
        self._flush_seconds = flush_seconds

    def record(self, query: SearchQuery, *, result_count: int, engine: str, took_ms: float) -> None:
        entry = (
            query.q,
            orjson.dumps(query.filters_for_log()).decode(),
            result_count,
            engine,
            round(took_ms, 3),
        )
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            metrics.search_log_dropped_total.inc()

    async def flush(self) -> int:
        rows = []
        while not self._queue.empty() and len(rows) < 1000:
            rows.append(self._queue.get_nowait())
        if rows:
            async with connection(self._pool) as conn:
                await store.insert_search_log(conn, rows)
        return len(rows)

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._flush_seconds)
                while await self.flush() == 1000:
                    pass
        finally:
            with contextlib.suppress(Exception):
                await self.flush()


class SearchService:
    def __init__(
        self,
        *,
        pool: AsyncConnectionPool,
        index: SearchIndex,
        breaker: CircuitBreaker,
        search_log: SearchLogWriter,
        max_pages: int,
    ) -> None:
        self._pool = pool
        self._index = index
        self._breaker = breaker
        self._log = search_log
        self._max_pages = max_pages
        self._categories = CategoryPaths(pool)
        self._latency: dict[tuple[str, str], Any] = {}  # histogram children, resolved once per labels
        # price filters and facets on the exact price_cents, once no document behind the alias lacks
        # it (watch_price_cents); until then on the float `price` every document has
        self.exact_prices = False

    async def search(
        self,
        *,
        q: str = "",
        category_path: str = "",
        min_price: float | None = None,
        max_price: float | None = None,
        brands: Sequence[str] = (),
        min_rating: float | None = None,
        in_stock: bool = False,
        page: int = 0,
    ) -> SearchPage:
        query = validate_search(
            q=q,
            category_path=category_path,
            min_price=min_price,
            max_price=max_price,
            brands=brands,
            min_rating=min_rating,
            in_stock=in_stock,
            page=page,
            max_pages=self._max_pages,
        )
        if query.category_path and not await self._categories.exists(query.category_path):
            raise CategoryNotFound("category_path", query.category_path)
        started = time.perf_counter()
        result = await self._on_opensearch(query)
        engine = "opensearch"
        if result is None:
            engine = "postgres"
            async with connection(self._pool) as conn:
                result = await search_sql.search(conn, query)
        took = time.perf_counter() - started
        labels = (query.query_type, engine)
        latency = self._latency.get(labels)
        if latency is None:
            latency = self._latency[labels] = metrics.search_latency_seconds.labels(*labels)
        latency.observe(took)
        self._log.record(query, result_count=result.total, engine=engine, took_ms=took * 1000)
        return result

    async def _on_opensearch(self, query: SearchQuery) -> SearchPage | None:
        """The OpenSearch answer, or None when the fallback must answer."""
        permit = self._breaker.acquire()
        if permit is None:
            metrics.search_fallbacks_total.labels("breaker_open").inc()
            return None
        try:
            response = await self._index.search(search_os.query_body(query, exact_prices=self.exact_prices))
        except ENGINE_ERRORS as exc:
            permit.failure()
            metrics.search_fallbacks_total.labels("error").inc()
            log.warning("opensearch search failed; using postgres", extra={"error": repr(exc)[:300]})
            return None
        except BaseException:
            permit.abandon()
            raise
        permit.success()
        page = search_os.parse_response(query, response)
        if any(isinstance(hit.product, UnresolvedProduct) for hit in page.hits):
            page = await self._resolve(page)
        return page

    async def check_price_cents(self) -> int:
        """Count the documents without price_cents and choose the price field from that: an index
        built before price_cents existed keeps the float filters until reconcile has rewritten
        its documents (and goes back to them if an older catalog_svc writes one during a rollout)."""
        missing = await self._index.count_without_price_cents()
        metrics.search_documents_without_price_cents.set(missing)
        exact = missing == 0
        if exact != self.exact_prices:
            log_event(log, "search_price_field", field="price_cents" if exact else "price", missing=missing)
        self.exact_prices = exact
        return missing

    async def watch_price_cents(self, *, interval_seconds: float) -> None:
        while True:
            try:
                await self.check_price_cents()
            except ENGINE_ERRORS as exc:  # OpenSearch down: searches fall back anyway; keep the mode
                log.debug("price_cents check failed", extra={"error": repr(exc)[:300]})
            await asyncio.sleep(interval_seconds)

    async def _resolve(self, page: SearchPage) -> SearchPage:
        """Products of hits whose documents were written before they carried product_wire, from
        PostgreSQL (until a reindex or a change rewrites them); a product gone since is left out."""
        ids = [h.product.id for h in page.hits if isinstance(h.product, UnresolvedProduct)]
        async with connection(self._pool) as conn:
            products = await store.get_products(conn, ids)
        hits = tuple(
            h._replace(product=products[h.product.id]) if isinstance(h.product, UnresolvedProduct) else h
            for h in page.hits
            if not isinstance(h.product, UnresolvedProduct) or h.product.id in products
        )
        return dataclasses.replace(page, hits=hits)
