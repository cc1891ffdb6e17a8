"""The OpenSearch calls catalog makes, over one AsyncOpenSearch client built in bootstrap.

The search hot path (one POST <alias>/_search per SearchProducts) does not go through opensearch-py:
its transport plus aiohttp cost ~0.35 ms of CPU per call in this single-threaded service, about a
fifth of a whole search request, while a plain HTTP/1.1 keep-alive exchange over an asyncio
Protocol costs ~0.15 ms (measured against the same OpenSearch, 16 concurrent callers). `SearchHTTP`
is that exchange and nothing more: one request at a time per connection, Content-Length or chunked
bodies, idle connections reused (a reused one that closes before answering is replaced once, as a
search is read-only), at most `connections` in flight; failures raise the same opensearch-py
exceptions (ConnectionError, ConnectionTimeout, TransportError by status) so the circuit breaker
counts them as before. It serves http:// URLs; with https:// (TLS, credentials) searches stay on
opensearch-py. Either way a search asks only for what search_os.parse_response reads
(`filter_path`), and its JSON is written and read with orjson: the stdlib json decoder was ~8% of
catalog_svc's CPU per search, orjson takes about half that. Everything else (bulk writes, aliases, mget, reconcile scans) uses opensearch-py.

Searches and document writes go through an alias; each full reindex builds a new versioned index
"<alias>-<UTC stamp>" and swaps the alias to it in one atomic `_aliases` call. Documents are
written with external_gte versions (catalog version + inventory version), so a write carrying
older state than the index already has is refused by OpenSearch instead of overwriting it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
from opensearchpy import AsyncOpenSearch, NotFoundError, RequestError
from opensearchpy.exceptions import (
    HTTP_EXCEPTIONS,
    ConnectionError,
    ConnectionTimeout,
    SerializationError,
    TransportError,
)

from catalog_svc.search_os import MAPPING, RESPONSE_FILTER_PATH, document_version, index_body

log = logging.getLogger("catalog_svc.index")

# merging a freshly built index into one segment: seconds at 100K documents, longer at millions
COMPACT_TIMEOUT_SECONDS = 1800.0


class BulkError(RuntimeError):
    """Some documents of a bulk request failed for a reason other than a stale version.

    `rejected`: the documents OpenSearch refused for what they are (a 4xx: a mapping conflict, an
    unparsable value), which a retry would meet again; `retryable`: some failed for a reason of the
    moment (429, 5xx), so the whole request is worth sending again. `written`: how many went in."""

    def __init__(self, message: str, *, rejected: dict[int, str], retryable: bool, written: int) -> None:
        super().__init__(message)
        self.rejected = rejected
        self.retryable = retryable
        self.written = written


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.answered = 0  # requests this connection has answered (reused when > 0)
        self.got_bytes = False  # the current request has seen response bytes
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, str, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.got_bytes = True
        waiter = self._waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: the stream is out of step
            self.close()
            return
        try:
            parsed = _parse_response(self._buffer)
        except ValueError as exc:
            self.close()
            waiter.set_exception(ConnectionResetError(f"malformed HTTP response from OpenSearch: {exc}"))
            return
        if parsed is not None:
            status, content_type, body, keep_alive = parsed
            if not keep_alive or self._buffer:
                self.close()
            waiter.set_result((status, content_type, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("OpenSearch closed the connection"))

    async def exchange(self, request: bytes) -> tuple[int, str, bytes]:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise ConnectionResetError("OpenSearch closed the connection")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.got_bytes = False
        self.transport.write(request)
        try:
            result = await waiter
        finally:
            self._waiter = None
        self.answered += 1
        return result

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _parse_response(buffer: bytearray) -> tuple[int, str, bytes, bool] | None:
    """(status, content type, body, keep-alive) of a complete response at the start of `buffer`
    (removed from it), or None while it is incomplete. Raises ValueError on malformed input."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 65536:
            raise ValueError("response headers over 64 KiB")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = int(rest[:3])
    length: int | None = None
    chunked = False
    content_type = ""
    keep_alive = version == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "content-type":
            content_type = value.strip()
        elif name == "connection":
            token = value.strip().lower()
            keep_alive = token == "keep-alive" or (keep_alive and token != "close")
    start = end + 4
    if chunked:
        body = bytearray()
        pos = start
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                del buffer[: trailer_end + 4]
                return status, content_type, bytes(body), keep_alive
            if len(buffer) < pos + size + 2:
                return None
            body += buffer[pos : pos + size]
            pos += size + 2
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise ValueError("response without Content-Length")
    if len(buffer) < start + length:
        return None
    body_bytes = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return status, content_type, body_bytes, keep_alive


class SearchHTTP:
    """POST a JSON body, read the JSON answer: the search hot path (see the module docstring)."""

    def __init__(self, url: str, *, connections: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"SearchHTTP serves http:// URLs only, not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        headers = [f"Host: {parts.netloc.rpartition('@')[2]}", "Content-Type: application/json"]
        if parts.username or parts.password:
            credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers.append(f"Authorization: Basic {base64.b64encode(credentials.encode()).decode()}")
        self._headers = ("\r\n".join(headers) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._slots = asyncio.Semaphore(connections)

    async def post_json(self, path: str, body: bytes, *, timeout: float) -> Any:
        request = (
            b"POST "
            + (self._prefix + path).encode()
            + b" HTTP/1.1\r\n"
            + self._headers
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    status, content_type, data = await self._exchange(request)
            except TimeoutError as exc:
                raise ConnectionTimeout("TIMEOUT", f"no answer within {timeout}s", exc) from exc
            except OSError as exc:
                raise ConnectionError("N/A", str(exc), exc) from exc
        if not 200 <= status < 300:
            _raise_http_error(status, content_type, data)
        try:
            return orjson.loads(data)
        except ValueError as exc:
            raise SerializationError(f"OpenSearch answered {status} with a body that is not JSON") from exc

    async def _exchange(self, request: bytes) -> tuple[int, str, bytes]:
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                self._open.discard(conn)
                continue
            try:
                return self._done(conn, await conn.exchange(request))
            except ConnectionResetError:
                self._open.discard(conn)
                if conn.got_bytes:
                    raise
                break  # closed while idle (keep-alive expiry, restart): once more on a new connection
            except BaseException:
                self._discard(conn)
                raise
        _, conn = await asyncio.get_running_loop().create_connection(_Connection, self._host, self._port)
        self._open.add(conn)
        try:
            return self._done(conn, await conn.exchange(request))
        except BaseException:
            self._discard(conn)
            raise

    def _done(self, conn: _Connection, result: tuple[int, str, bytes]) -> tuple[int, str, bytes]:
        if conn.closed:
            self._open.discard(conn)
        else:
            self._idle.append(conn)
        return result

    def _discard(self, conn: _Connection) -> None:
        conn.close()  # a cancelled or timed-out request leaves its answer in flight on this connection
        self._open.discard(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()


def encode_body(body: dict[str, Any]) -> bytes:
    """A request body as SearchHTTP sends it (compact UTF-8 JSON)."""
    return orjson.dumps(body)


def _raise_http_error(status: int, content_type: str, data: bytes) -> None:
    """The exception opensearch-py raises for this status (same classes, same fields)."""
    message: Any = data.decode("utf-8", "replace")
    info = None
    if content_type.split(";")[0].strip() == "application/json":
        try:
            info = json.loads(data)
            message = info.get("error", message)
            if isinstance(message, dict) and "type" in message:
                message = message["type"]
        except (ValueError, TypeError, AttributeError):
            pass
    raise HTTP_EXCEPTIONS.get(status, TransportError)(status, message, info)


class CatalogOpenSearch(AsyncOpenSearch):
    """AsyncOpenSearch, plus `fast_search` (a SearchHTTP) for http:// URLs; closing closes both."""

    def __init__(self, url: str, *, search_connections: int, **kwargs: Any) -> None:
        super().__init__([url], **kwargs)
        self.fast_search = (
            SearchHTTP(url, connections=search_connections) if urlsplit(url).scheme == "http" else None
        )

    async def close(self) -> None:
        if self.fast_search is not None:
            await self.fast_search.close()
        await super().close()


def build_client(url: str, *, timeout: float, connections: int) -> AsyncOpenSearch:
    # no client retries: the circuit breaker decides what a failure means, and the fallback answers
    return CatalogOpenSearch(
        url,
        search_connections=connections,
        timeout=timeout,
        max_retries=0,
        retry_on_timeout=False,
        pool_maxsize=connections,
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
        """Make sure the alias exists (an empty index on first start) with the current mapping;
        returns the index behind it."""
        current = await self.alias_indexes()
        if current:
            # fields added to MAPPING since the index was created (strict mapping: documents that
            # carry them are refused until then); an unchanged mapping is a no-op
            await self.client.indices.put_mapping(index=self.alias, body=MAPPING)
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

    async def compact(self, name: str) -> None:
        """Merge a freshly built index into one segment before it serves searches.

        A search visits every segment (query set-up, and each segment's doc values for the facets),
        and a bulk load leaves many. Measured on the benchmark's 100K-product catalog, its query mix
        sent straight to OpenSearch by 16 clients: 15 segments holding 300K deleted documents (an
        older catch-up rewrote every document) served ~385 searches/s, p99 ~72 ms; one segment ~710/s;
        one segment without the deleted documents ~880/s, p99 ~34 ms. The index is read-mostly (a
        few product and stock writes a second), so later writes add small segments the merge policy
        folds in as usual.
        """
        await self.client.indices.forcemerge(
            index=name, max_num_segments=1, request_timeout=max(self._timeout, COMPACT_TIMEOUT_SECONDS)
        )
        await self.client.indices.refresh(index=name)

    async def swap_alias(self, new_index: str, *, delete_old: bool = True) -> tuple[list[str], list[str]]:
        """Point the alias at `new_index` only, atomically; returns the previous indexes and those of
        them left behind.

        Dropping the previous indexes comes after the swap and cannot undo it: a failure there is
        logged and reported (the left-behind indexes hold no alias and serve nothing; delete them by
        hand), never raised, since a caller that saw an error would take the swap as not done and
        clean up the index that now serves every search."""
        old = [name for name in await self.alias_indexes() if name != new_index]
        actions: list[dict[str, Any]] = [{"remove": {"index": name, "alias": self.alias}} for name in old]
        actions.append({"add": {"index": new_index, "alias": self.alias}})
        await self.client.indices.update_aliases(body={"actions": actions})
        if not (delete_old and old):
            return old, []
        try:
            await self.client.indices.delete(index=",".join(old), ignore_unavailable=True)
        except Exception as exc:  # the swap is done: see above
            log.warning(
                "swap_alias: alias %s now on %s, dropping %s failed: %r", self.alias, new_index, old, exc
            )
            return old, old
        return old, []

    async def discard_unless_live(self, name: str) -> bool:
        """Delete an index a failed job built, unless the alias points at it (a swap that raised
        after OpenSearch applied it, e.g. a timeout); True when it was deleted."""
        if name in await self.alias_indexes():
            return False
        await self.client.indices.delete(index=name, ignore_unavailable=True)
        return True

    @property
    def search_target(self) -> str:
        """Path and query of every search request (the benchmark's direct requests use it too).

        allow_partial_search_results=false: by default a search that fails on some shards (a
        breaker trips, a shard relocates, a node leaves) still answers 200 with the other shards'
        hits, and the filter path drops `_shards`, so catalog served too few hits and facet counts
        as complete and never used the PostgreSQL fallback. Now that is an error, and falls back."""
        return (
            f"/{quote(self.alias, safe='')}/_search?filter_path={RESPONSE_FILTER_PATH}"
            "&allow_partial_search_results=false"
        )

    async def search(self, body: dict[str, Any]) -> dict[str, Any]:
        fast: SearchHTTP | None = getattr(self.client, "fast_search", None)
        if fast is not None:
            return await fast.post_json(self.search_target, encode_body(body), timeout=self._timeout)
        return await self.client.search(
            index=self.alias,
            body=body,
            filter_path=RESPONSE_FILTER_PATH,
            allow_partial_search_results=False,
            request_timeout=self._timeout,
        )

    async def write_documents(
        self,
        docs: Sequence[dict[str, Any]],
        *,
        index: str | None = None,
        refresh: bool = False,
        only_newer: bool = False,
    ) -> int:
        """Bulk-write documents with external_gte versions; stale ones are skipped. Returns #written.

        `only_newer`: external versions instead, so a document the index already holds at the same
        version is skipped too. A version names one state of a product, except after reconcile
        repairs in_stock from inventory (same version, other content): reconcile writes those itself,
        with external_gte. Rewriting an identical document would only leave a deleted copy behind
        for searches to step over.
        """
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
                        "version_type": "external" if only_newer else "external_gte",
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
        rejected: dict[int, str] = {}
        retryable = False
        for item in reply["items"]:
            result = item["index"]
            status = result.get("status", 500)
            if status in (200, 201):
                written += 1
            elif status != 409:  # 409: the index already has this or newer state
                failures.append(f"{result.get('_id')}: {status} {result.get('error')}")
                if status == 429 or status >= 500:
                    retryable = True
                else:
                    rejected[int(result["_id"])] = str(result.get("error"))[:300]
        if failures:
            raise BulkError(
                f"{len(failures)} documents failed, e.g. {failures[0]}"[:500],
                rejected=rejected,
                retryable=retryable,
                written=written,
            )
        return written

    async def fetch_states(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """id -> {catalog_version, inventory_version, in_stock, is_active, price_cents} of the
        indexed documents (price_cents absent from those written before it existed)."""
        if not ids:
            return {}
        reply = await self.client.mget(
            index=self.alias,
            body={"ids": [str(i) for i in ids]},
            params={"_source_includes": "catalog_version,inventory_version,in_stock,is_active,price_cents"},
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

    async def count_without_price_cents(self) -> int:
        """Documents written before price_cents existed (reconcile rewrites them)."""
        reply = await self.client.count(
            index=self.alias,
            body={"query": {"bool": {"must_not": {"exists": {"field": "price_cents"}}}}},
            request_timeout=self._timeout,
        )
        return int(reply["count"])

    async def count(self) -> int:
        reply = await self.client.count(index=self.alias, request_timeout=max(self._timeout, 30))
        return int(reply["count"])
