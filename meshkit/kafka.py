"""Kafka clients (kafka-python): the idempotent producer and admin helpers. Built by callers, never at import."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def build_producer(bootstrap: str, *, client_id: str) -> KafkaProducer:
    """acks=all + idempotence: a retried send is written once and order per partition is kept."""
    return KafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        linger_ms=2,
        retries=5,
        retry_backoff_ms=200,
        request_timeout_ms=5000,
        delivery_timeout_ms=15000,
        max_block_ms=5000,
        # kafka-python waits 30 s by default before giving up on an unreachable bootstrap server; the
        # relay should fail like any other send, count it and back off
        bootstrap_timeout_ms=5000,
        compression_type=None,
    )


def ensure_topics(bootstrap: str, topics: list[str], *, partitions: int = 3) -> None:
    """Create topics if missing (local runs; in Kubernetes, Strimzi KafkaTopic resources do this)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="shopmesh-admin")
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
