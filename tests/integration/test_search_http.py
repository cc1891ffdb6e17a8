"""SearchHTTP, catalog's lean HTTP/1.1 path for searches, against the real OpenSearch: the same
answers as opensearch-py, keep-alive reuse and the connection cap, the same exception classes for
HTTP errors, unreachable servers and timeouts, and recovery when an idle connection was cut."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError, ConnectionTimeout, NotFoundError, RequestError

from catalog_svc.index_client import CatalogOpenSearch, SearchHTTP, _parse_response, build_client
from tests.harness import free_port
from tests.integration.catalog_helpers import OPENSEARCH, Proxy

BODY = {
    "size": 5,
    "query": {"match": {"title": "lamp"}},
    "sort": [{"_score": "desc"}, {"n": "desc"}],
    "aggs": {"colors": {"terms": {"field": "color"}}, "cheap": {"filter": {"range": {"n": {"lt": 10}}}}},
}


def payload(body: dict) -> bytes:
    return json.dumps(body).encode()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def index_name() -> AsyncIterator[str]:
    name = f"search-http-{uuid.uuid4().hex[:8]}"
    client = AsyncOpenSearch([OPENSEARCH], timeout=30)
    try:
        await client.indices.create(
            index=name,
            body={
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "properties": {
                        "title": {"type": "text"},
                        "color": {"type": "keyword"},
                        "n": {"type": "integer"},
                    }
                },
            },
        )
        lines: list[dict] = []
        for n in range(40):
            lines.append({"index": {"_index": name, "_id": str(n)}})
            lines.append(
                {
                    "title": f"desk lamp {n}" if n % 3 else f"chair {n}",
                    "color": "red blue green".split()[n % 3],
                    "n": n,
                }
            )
        await client.bulk(body=lines, params={"refresh": "true"})
        yield name
    finally:
        await client.indices.delete(index=name, ignore_unavailable=True)
        await client.close()


async def test_answers_match_opensearch_py(index_name: str) -> None:
    reference = AsyncOpenSearch([OPENSEARCH], timeout=30)
    fast = SearchHTTP(OPENSEARCH, connections=4)
    try:
        expected = await reference.search(index=index_name, body=BODY)
        got = await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
    finally:
        await reference.close()
        await fast.close()
    assert got["hits"]["total"] == expected["hits"]["total"]
    assert [h["_id"] for h in got["hits"]["hits"]] == [h["_id"] for h in expected["hits"]["hits"]]
    assert [h["_source"] for h in got["hits"]["hits"]] == [h["_source"] for h in expected["hits"]["hits"]]
    assert got["aggregations"] == expected["aggregations"]
    assert got["hits"]["total"]["value"] == 26  # 40 documents, every third one is a chair


async def test_keep_alive_reuse_and_connection_cap(index_name: str) -> None:
    fast = SearchHTTP(OPENSEARCH, connections=3)
    try:
        for _ in range(5):
            await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
        assert len(fast._open) == 1  # sequential searches share one kept-alive connection

        replies = await asyncio.gather(
            *(fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10) for _ in range(12))
        )
        assert all(r["hits"]["total"]["value"] == 26 for r in replies)
        assert 1 <= len(fast._open) <= 3  # never more connections than the cap
    finally:
        await fast.close()
    assert not fast._open


async def test_http_errors_raise_opensearch_py_exceptions(index_name: str) -> None:
    fast = SearchHTTP(OPENSEARCH, connections=2)
    try:
        with pytest.raises(NotFoundError) as missing:
            await fast.post_json("/no-such-index-here/_search", payload(BODY), timeout=10)
        assert missing.value.status_code == 404
        assert missing.value.error == "index_not_found_exception"
        with pytest.raises(RequestError) as bad:
            await fast.post_json(f"/{index_name}/_search", b'{"query": {"no_such_query": {}}}', timeout=10)
        assert bad.value.status_code == 400
        # the connection survives error answers: the next search reuses it
        reply = await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
        assert reply["hits"]["total"]["value"] == 26
        assert len(fast._open) == 1
    finally:
        await fast.close()


async def test_unreachable_is_a_connection_error() -> None:
    fast = SearchHTTP(f"http://127.0.0.1:{free_port()}", connections=2)
    with pytest.raises(ConnectionError):
        await fast.post_json("/any/_search", payload(BODY), timeout=5)
    await fast.close()


async def test_idle_connection_cut_is_replaced_and_timeouts_drop_the_connection(index_name: str) -> None:
    proxy = Proxy()
    await proxy.up()
    fast = SearchHTTP(f"http://127.0.0.1:{proxy.port}", connections=2)
    try:
        await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
        # the proxy drops every connection (as an OpenSearch restart or an idle timeout would) and
        # listens again: the idle connection is dead, the next search goes out on a new one
        await proxy.down()
        await proxy.up()
        reply = await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
        assert reply["hits"]["total"]["value"] == 26

        proxy.delay = 1.5
        with pytest.raises(ConnectionTimeout):
            await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=0.3)
        assert not fast._open  # its late answer must not be read as the next request's
        proxy.delay = 0.0
        reply = await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
        assert reply["hits"]["total"]["value"] == 26

        await proxy.down()  # down for good: a cut idle connection, then a refused reconnect
        with pytest.raises(ConnectionError):
            await fast.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
    finally:
        await fast.close()
        await proxy.down()


async def test_build_client_searches_through_search_http_and_closes_it(index_name: str) -> None:
    client = build_client(OPENSEARCH, timeout=10, connections=2)
    assert isinstance(client, CatalogOpenSearch) and client.fast_search is not None
    await client.fast_search.post_json(f"/{index_name}/_search", payload(BODY), timeout=10)
    assert client.fast_search._open
    await client.close()
    assert not client.fast_search._open
    https = CatalogOpenSearch("https://127.0.0.1:9", search_connections=2)  # TLS stays on opensearch-py
    assert https.fast_search is None
    await https.close()


def test_parse_response_content_length_chunked_and_partial() -> None:
    whole = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{"a":1}'
    for cut in range(len(whole)):
        assert _parse_response(bytearray(whole[:cut])) is None
    buffer = bytearray(whole)
    assert _parse_response(buffer) == (200, "application/json", b'{"a":1}', True)
    assert buffer == b""

    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b'3\r\n{"a\r\n4;ext=1\r\n":1}\r\n0\r\n\r\n'
    )
    for cut in range(len(chunked)):
        assert _parse_response(bytearray(chunked[:cut])) is None
    assert _parse_response(bytearray(chunked)) == (200, "", b'{"a":1}', False)

    with pytest.raises(ValueError):
        _parse_response(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))  # neither length nor chunked
    with pytest.raises(ValueError):
        _parse_response(bytearray(b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n"))


async def test_a_search_failing_on_one_shard_is_an_error_not_a_partial_answer() -> None:
    """OpenSearch answers 200 with the other shards' hits when some shards fail; with `_shards`
    filtered out catalog took that for the whole answer and never fell back to PostgreSQL."""
    from opensearchpy.exceptions import TransportError

    from catalog_svc.index_client import SearchIndex
    from catalog_svc.search import ENGINE_ERRORS

    name = f"partial-{uuid.uuid4().hex[:8]}"
    admin = AsyncOpenSearch([OPENSEARCH], timeout=30)
    await admin.indices.create(
        index=name,
        body={
            "settings": {"number_of_shards": 2, "number_of_replicas": 0},
            "mappings": {"properties": {"n": {"type": "integer"}}},
        },
    )
    lines: list[dict] = []
    for n in range(20):
        lines += [{"index": {"_index": name, "_id": str(n)}}, {"n": n}]  # spread over both shards
    await admin.bulk(body=lines, params={"refresh": "true"})
    # a script that throws on one document: the shard holding it fails, the other answers
    body = {
        "size": 20,
        "query": {
            "script": {
                "script": {
                    "source": "if (doc['n'].value == 3) { throw new IllegalArgumentException('boom'); } return true;"
                }
            }
        },
    }
    try:
        partial = await admin.search(index=name, body=body)
        assert partial["_shards"]["failed"] == 1 and partial["hits"]["hits"]  # what OpenSearch does
        for client in (build_client(OPENSEARCH, timeout=10, connections=2), AsyncOpenSearch([OPENSEARCH])):
            index = SearchIndex(client, alias=name, shards=2, replicas=0, refresh_interval="1s", timeout=10)
            try:
                with pytest.raises(ENGINE_ERRORS) as caught:
                    await index.search(body)
                assert isinstance(caught.value, TransportError)
            finally:
                await client.close()
    finally:
        await admin.indices.delete(index=name, ignore_unavailable=True)
        await admin.close()
