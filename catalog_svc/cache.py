"""Valkey caches that never fail a read: product rows and also-bought lists.

Every call has a short timeout and goes through a circuit breaker, so while Valkey is down reads
go straight to PostgreSQL without waiting on it (no error reaches the caller).

Product entries are hashes {v: version, d: json, p: the API's Product encoding, a: is_active}
written by a script that refuses to replace a newer version: a reader that loaded an old row just
before a write committed cannot put it back over the writer's fresh entry. Writers refresh the
entry after commit, and TTLs bound the rest. GetProduct reads `p` and `a` only and answers with
those bytes as they are (no JSON, no model, no message building on a hit); the other reads decode
`d` into the model.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import valkey.asyncio as valkey_asyncio
from valkey.exceptions import ValkeyError

from catalog_svc import metrics
from catalog_svc.convert import product_wire
from catalog_svc.model import Attribute, Product
from meshkit.circuit import CircuitBreaker
from meshkit.resp import PipelinedReader

log = logging.getLogger("catalog_svc.cache")
T = TypeVar("T")

# the same version may be rewritten only to add `p` to an entry written before `p` existed
SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur then
  local have, want = tonumber(cur), tonumber(ARGV[1])
  if have > want or (have == want and redis.call('HEXISTS', KEYS[1], 'p') == 1) then return 0 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2], 'p', ARGV[4], 'a', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
ENCODED_FIELDS = ("p", "a")


class GuardedValkey:
    """Runs Valkey calls with a timeout behind a breaker; failures become None (logged, counted)."""

    def __init__(self, client: valkey_asyncio.Valkey, *, timeout: float, breaker: CircuitBreaker) -> None:
        self.client = client
        # the hot single-key reads go over one pipelined connection (meshkit.resp); the rest, and
        # every read when the client uses TLS or a Unix socket, through valkey-py
        self.reads = PipelinedReader.for_client(client)
        self._timeout = timeout
        self._breaker = breaker

    async def run(self, call: Callable[[], Awaitable[T]]) -> T | None:
        permit = self._breaker.acquire()
        if permit is None:
            return None
        try:
            async with asyncio.timeout(self._timeout):  # unlike wait_for, no extra task per call
                result = await call()
        except (ValkeyError, OSError, TimeoutError) as exc:
            permit.failure()
            log.warning("valkey call failed", extra={"error": repr(exc)[:200]})
            return None
        except BaseException:
            permit.abandon()
            raise
        permit.success()
        return result


def product_json(product: Product) -> str:
    return json.dumps(
        {
            "id": product.id,
            "seller_id": product.seller_id,
            "title": product.title,
            "slug": product.slug,
            "description": product.description,
            "category_id": product.category_id,
            "category_path": product.category_path,
            "price": str(product.price),
            "rating": str(product.rating),
            "review_count": product.review_count,
            "is_active": product.is_active,
            "brand": product.brand,
            "attributes": [[a.name, a.value] for a in product.attributes],
            "version": product.version,
            "created_at": product.created_at.isoformat(),
            "updated_at": product.updated_at.isoformat(),
        },
        separators=(",", ":"),
    )


def product_from_json(raw: str | bytes) -> Product:
    d: dict[str, Any] = json.loads(raw)
    return Product(
        id=d["id"],
        seller_id=d["seller_id"],
        title=d["title"],
        slug=d["slug"],
        description=d["description"],
        category_id=d["category_id"],
        category_path=d["category_path"],
        price=Decimal(d["price"]),
        rating=Decimal(d["rating"]),
        review_count=d["review_count"],
        is_active=d["is_active"],
        brand=d["brand"],
        attributes=tuple(Attribute(n, v) for n, v in d["attributes"]),
        version=d["version"],
        created_at=dt.datetime.fromisoformat(d["created_at"]),
        updated_at=dt.datetime.fromisoformat(d["updated_at"]),
    )


class ProductCache:
    def __init__(
        self,
        kv: GuardedValkey,
        *,
        ttl_seconds: int,
        prefix: str = "catalog:product:",
        encode: Callable[[Product], bytes] = product_wire,
    ) -> None:
        self._kv = kv
        self._ttl = ttl_seconds
        self._prefix = prefix
        self._script = kv.client.register_script(SET_IF_NEWER)
        self.encode = encode
        self._hit = metrics.product_cache_requests_total.labels("hit")
        self._miss = metrics.product_cache_requests_total.labels("miss")
        self._error = metrics.product_cache_requests_total.labels("error")
        # committed products whose refresh Valkey missed (breaker open or busy, timeout): their
        # entries may still hold the version before the write, price and active flag included, for
        # up to the TTL. Reads here skip those entries, and every cache call first tries the refresh
        # again (the script keeps a newer version written meanwhile), until it lands.
        self._unsynced: dict[int, Product] = {}

    def key(self, product_id: int) -> str:
        return f"{self._prefix}{product_id}"

    @property
    def unsynced(self) -> frozenset[int]:
        return frozenset(self._unsynced)

    async def get_encoded(self, product_id: int) -> tuple[bytes, bool] | None:
        """The product's stored API encoding and whether it is active, or None (miss or error)."""
        if self._unsynced:
            await self._write_with_unsynced([])  # the missed refreshes first
            if product_id in self._unsynced:
                self._miss.inc()
                return None
        key = self.key(product_id)
        reads = self._kv.reads
        raw = await self._kv.run(
            (lambda: reads.command("HMGET", key, *ENCODED_FIELDS))
            if reads is not None
            else (lambda: self._kv.client.hmget(key, ENCODED_FIELDS))
        )
        if raw is None:
            self._error.inc()
            return None
        encoded, active = raw
        if encoded is None or active is None:  # absent, or written before `p` existed
            self._miss.inc()
            return None
        self._hit.inc()
        return encoded, active == b"1"

    async def get_many(self, product_ids: Sequence[int]) -> dict[int, Product]:
        if not product_ids:
            return {}
        if self._unsynced:
            await self._write_with_unsynced([])  # the missed refreshes first
            product_ids = [pid for pid in product_ids if pid not in self._unsynced]
            if not product_ids:
                return {}

        reads = self._kv.reads

        async def fetch() -> list[Any]:
            if reads is not None:
                return await reads.pipeline([("HGET", self.key(pid), "d") for pid in product_ids])
            pipe = self._kv.client.pipeline(transaction=False)
            for pid in product_ids:
                pipe.hget(self.key(pid), "d")
            return await pipe.execute()

        raw = await self._kv.run(fetch)
        if raw is None:
            self._error.inc(len(product_ids))
            return {}
        found: dict[int, Product] = {}
        for pid, value in zip(product_ids, raw, strict=True):
            if value is not None:
                try:
                    found[pid] = product_from_json(value)
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable cache entry ignored", extra={"product_id": pid})
        self._hit.inc(len(found))
        self._miss.inc(len(product_ids) - len(found))
        return found

    async def put_many(self, products: Sequence[Product], *, committed: bool = False) -> None:
        """Write these versions (an older one never replaces a newer). `committed`: they were just
        written to the database, so an entry Valkey keeps from before must not be served: a missed
        write is remembered and tried again (see _unsynced)."""
        if products and not await self._write_with_unsynced(products) and committed:
            for product in products:
                current = self._unsynced.get(product.id)
                if current is None or current.version <= product.version:
                    self._unsynced[product.id] = product

    async def _write_with_unsynced(self, products: Sequence[Product]) -> bool:
        """Write these and every missed refresh in one pipeline; on success forget the missed ones
        that are written now (a newer one remembered meanwhile stays)."""
        ids = {p.id for p in products}
        batch = [*products, *(p for p in self._unsynced.values() if p.id not in ids)]
        if not batch or not await self._write(batch):
            return not batch
        for product in batch:
            current = self._unsynced.get(product.id)
            if current is not None and current.version <= product.version:
                del self._unsynced[product.id]
        return True

    async def _write(self, products: Sequence[Product]) -> bool:

        async def store() -> bool:
            pipe = self._kv.client.pipeline(transaction=False)
            for p in products:
                await self._script(
                    keys=[self.key(p.id)],
                    args=[p.version, product_json(p), self._ttl, self.encode(p), int(p.is_active)],
                    client=pipe,
                )
            await pipe.execute()
            return True

        return bool(await self._kv.run(store))
