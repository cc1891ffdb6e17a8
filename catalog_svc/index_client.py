"""The OpenSearch calls catalog makes, over one AsyncOpenSearch client built in bootstrap.

Searches and document writes go through an alias; each full reindex builds a new versioned index
"<alias>-<UTC stamp>" and swaps the alias to it in one atomic `_aliases` call. Documents are
written with external_gte versions (catalog version + inventory version), so a write carrying
older state than the index already has is refused by OpenSearch instead of overwriting it.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from opensearchpy import AsyncOpenSearch, NotFoundError, RequestError

from catalog_svc.search_os import document_version, index_body

log = logging.getLogger("catalog_svc.index")


class BulkError(RuntimeError):
    """Some documents of a bulk request failed for a reason other than a stale version."""


def build_client(url: str, *, timeout: float, connections: int) -> AsyncOpenSearch:
    # no client retries: the circuit breaker decides what a failure means, and the fallback answers
    return AsyncOpenSearch(
        [url], timeout=timeout, max_retries=0, retry_on_timeout=False, pool_maxsize=connections
    )


class SearchIndex:
    def __init__(
        self,
        client: AsyncOpenSearch,
        *,
        alias: str,
        shards: int,
        replicas: int,
        refresh_interval: str,
        timeout: float,
    ) -> None:
        self.client = client
        self.alias = alias
        self._shards = shards
        self._replicas = replicas
        self._refresh = refresh_interval
        self._timeout = timeout

    @property
    def initial_index(self) -> str:
        return f"{self.alias}-initial"

    def new_index_name(self) -> str:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        return f"{self.alias}-{stamp}-{secrets.token_hex(2)}"

    def _body(self, *, refresh_interval: str | None = None) -> dict[str, Any]:
        return index_body(
            shards=self._shards, replicas=self._replicas, refresh_interval=refresh_interval or self._refresh
        )

    async def ensure_alias(self) -> str:
        """Make sure the alias exists (an empty index on first start); returns the index behind it."""
        current = await self.alias_indexes()
        if current:
            return current[0]
        body = self._body()
        body["aliases"] = {self.alias: {}}
        try:
            await self.client.indices.create(index=self.initial_index, body=body)
        except RequestError as exc:  # a concurrent instance created it first
            if "resource_already_exists" not in str(exc):
                raise
            if not await self.alias_indexes():  # the index outlived its alias: re-attach it
                await self.client.indices.put_alias(index=self.initial_index, name=self.alias)
        return self.initial_index

    async def alias_indexes(self) -> list[str]:
        try:
            reply = await self.client.indices.get_alias(name=self.alias)
        except NotFoundError:
            return []
        return sorted(reply)

    async def create_index(self, name: str, *, bulk_mode: bool = False) -> None:
        # during a bulk load: no refresh; the swap restores the normal interval first
        await self.client.indices.create(
            index=name, body=self._body(refresh_interval="-1" if bulk_mode else None)
        )

    async def finish_bulk_load(self, name: str) -> None:
        await self.client.indices.put_settings(
            index=name, body={"index": {"refresh_interval": self._refresh}}
        )
        await self.client.indices.refresh(index=name)

    async def swap_alias(self, new_index: str, *, delete_old: bool = True) -> list[str]:
        """Point the alias at `new_index` only, atomically; returns (and drops) the previous indexes."""
        old = [name for name in await self.alias_indexes() if name != new_index]
        actions: list[dict[str, Any]] = [{"remove": {"index": name, "alias": self.alias}} for name in old]
        actions.append({"add": {"index": new_index, "alias": self.alias}})
        await self.client.indices.update_aliases(body={"actions": actions})
        if delete_old and old:
            await self.client.indices.delete(index=",".join(old), ignore_unavailable=True)
        return old

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.search(index=self.alias, body=body, request_timeout=self._timeout)

    async def write_documents(
        self, docs: Sequence[dict[str, Any]], *, index: str | None = None, refresh: bool = False
    ) -> int:
        """Bulk-write documents with external_gte versions; stale ones are skipped. Returns #written."""
        if not docs:
            return 0
        lines: list[dict[str, Any]] = []
        for doc in docs:
            lines.append(
                {
                    "index": {
                        "_index": index or self.alias,
                        "_id": str(doc["id"]),
                        "version": document_version(doc),
                        "version_type": "external_gte",
                    }
                }
            )
            lines.append(doc)
        params = {"refresh": "wait_for" if refresh else "false"}
        if index is None:
            # through the alias only: if it is missing, fail instead of auto-creating an index by that name
            params["require_alias"] = "true"
        reply = await self.client.bulk(body=lines, params=params, request_timeout=max(self._timeout, 30))
        written = 0
        failures = []
        for item in reply["items"]:
            result = item["index"]
            status = result.get("status", 500)
            if status in (200, 201):
                written += 1
            elif status != 409:  # 409: the index already has this or newer state
                failures.append(f"{result.get('_id')}: {status} {result.get('error')}")
        if failures:
            raise BulkError(f"{len(failures)} documents failed, e.g. {failures[0]}"[:500])
        return written

    async def fetch_states(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """id -> {catalog_version, inventory_version, in_stock, is_active} of the indexed documents."""
        if not ids:
            return {}
        reply = await self.client.mget(
            index=self.alias,
            body={"ids": [str(i) for i in ids]},
            params={"_source_includes": "catalog_version,inventory_version,in_stock,is_active"},
            request_timeout=max(self._timeout, 30),
        )
        return {int(d["_id"]): d["_source"] for d in reply["docs"] if d.get("found")}

    async def ids_after(self, after: int, *, size: int) -> list[int]:
        """Document ids greater than `after`, ascending (for finding documents PostgreSQL lacks)."""
        reply = await self.client.search(
            index=self.alias,
            body={
                "size": size,
                "_source": False,
                "query": {"range": {"id": {"gt": after}}},
                "sort": [{"id": "asc"}],
                "track_total_hits": False,
            },
            request_timeout=max(self._timeout, 30),
        )
        return [int(h["_id"]) for h in reply["hits"]["hits"]]

    async def delete_documents(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        lines = [{"delete": {"_index": self.alias, "_id": str(i)}} for i in ids]
        await self.client.bulk(body=lines, request_timeout=max(self._timeout, 30))

    async def refresh(self) -> None:
        await self.client.indices.refresh(index=self.alias)

    async def count(self) -> int:
        reply = await self.client.count(index=self.alias, request_timeout=max(self._timeout, 30))
        return int(reply["count"])
