"""infra's Kafka cluster id (no servers)."""

from __future__ import annotations

import base64

from infra.servers.kafka import random_cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    ids = [random_cluster_id() for _ in range(5000)]  # about 78 would start with '-' if drawn plainly
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
