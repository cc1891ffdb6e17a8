"""The four real servers started by `python -m infra`, exercised through the clients the services use."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import psycopg
import pytest
import valkey
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from opensearchpy import OpenSearch

from infra.settings import REPO_ROOT


def test_postgres_is_version_18(infra_endpoints) -> None:
    with psycopg.connect(infra_endpoints.database_url) as conn:
        version = conn.execute("select version()").fetchone()[0]
        version_num = int(conn.execute("show server_version_num").fetchone()[0])
    assert version.startswith("PostgreSQL 18."), version
    assert 180000 <= version_num < 190000


def test_postgres_test_database_is_fresh_and_separate(infra_endpoints, test_database: str) -> None:
    # other tests of the session may already have migrated it: check that it is this session's own
    with psycopg.connect(test_database) as conn:
        name = conn.execute("select current_database()").fetchone()[0]
        created_by_us = conn.execute(
            "select count(*) from pg_database where datname = %s", (name,)
        ).fetchone()[0]
    assert name.startswith("shopmesh_t_")
    assert name != infra_endpoints.database_url.rsplit("/", 1)[-1]
    assert created_by_us == 1


def test_valkey_is_version_8_1(infra_endpoints, unique_name: Callable[[str], str]) -> None:
    client = valkey.Valkey.from_url(infra_endpoints.valkey_url, socket_timeout=5)
    try:
        info = client.info("server")
        key = unique_name("infra-test")
        client.set(key, "value", ex=30)
        assert client.get(key) == b"value"
        client.delete(key)
    finally:
        client.close()
    assert str(info["valkey_version"]).startswith("8.1."), info["valkey_version"]


def test_kafka_round_trip_with_idempotent_producer(infra_endpoints, unique_name) -> None:
    topic = unique_name("infra-test")
    admin = KafkaAdminClient(bootstrap_servers=infra_endpoints.kafka_bootstrap, request_timeout_ms=10000)
    producer = consumer = None
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        producer = KafkaProducer(
            bootstrap_servers=infra_endpoints.kafka_bootstrap, acks="all", enable_idempotence=True,
            request_timeout_ms=10000,
        )  # fmt: skip
        sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(10)}
        for key, value in sent.items():
            producer.send(topic, key=key, value=value, headers=[("event-id", key)])
        producer.flush(timeout=20)

        consumer = KafkaConsumer(
            topic, bootstrap_servers=infra_endpoints.kafka_bootstrap, group_id=unique_name("infra-test-group"),
            auto_offset_reset="earliest", enable_auto_commit=False,
        )  # fmt: skip
        received: dict[bytes, bytes] = {}
        headers: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    received[record.key] = record.value
                    headers[record.key] = dict(record.headers)["event-id"]
        assert received == sent
        assert headers == {key: key for key in sent}
    finally:
        if consumer is not None:
            consumer.close()
        if producer is not None:
            producer.close()
        admin.delete_topics([topic])
        admin.close()


@pytest.fixture
def opensearch(infra_endpoints):
    client = OpenSearch(hosts=[infra_endpoints.opensearch_url], timeout=30)
    yield client
    client.close()


def test_opensearch_english_analyzer_stems(opensearch) -> None:
    result = opensearch.indices.analyze(body={"analyzer": "english", "text": "running shoes"})
    assert [token["token"] for token in result["tokens"]] == ["run", "shoe"]


def test_opensearch_round_trip_finds_stemmed_words(opensearch, unique_name) -> None:
    index = unique_name("infra-test")
    opensearch.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"title": {"type": "text", "analyzer": "english"}}},
        },
    )
    try:
        opensearch.index(index=index, id="1", body={"title": "running shoes"}, refresh="wait_for")
        opensearch.index(index=index, id="2", body={"title": "leather boots"}, refresh="wait_for")
        hits = opensearch.search(index=index, body={"query": {"match": {"title": "run"}}})["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["1"]
        hits = opensearch.search(index=index, body={"query": {"match": {"title": "shoe"}}})["hits"]["hits"]
        assert [hit["_id"] for hit in hits] == ["1"]
    finally:
        opensearch.indices.delete(index=index)


def test_opensearch_indices_default_to_one_shard_no_replica(opensearch, unique_name) -> None:
    index = unique_name("infra-test")
    opensearch.indices.create(index=index)
    try:
        settings = opensearch.indices.get_settings(index=index)[index]["settings"]["index"]
        assert (settings["number_of_shards"], settings["number_of_replicas"]) == ("1", "0")
    finally:
        opensearch.indices.delete(index=index)


def test_infra_status_reports_every_server_healthy(infra_endpoints) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "infra", "status"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("postgres", "valkey", "kafka", "opensearch"):
        assert any(line.startswith(name) and "healthy" in line for line in done.stdout.splitlines()), (
            done.stdout
        )
