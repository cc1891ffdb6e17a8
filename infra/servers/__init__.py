"""The four local servers, in start order (stop order is the reverse)."""

from __future__ import annotations

from infra.procs import RunAs
from infra.servers.base import Server
from infra.servers.kafka import Kafka
from infra.servers.opensearch import OpenSearch
from infra.servers.postgres import Postgres
from infra.servers.valkey import Valkey
from infra.settings import InfraSettings

SERVER_NAMES = ("postgres", "valkey", "kafka", "opensearch")
# the brokers that clients write to go first, the database last
STOP_ORDER = ("kafka", "opensearch", "valkey", "postgres")


def build_servers(settings: InfraSettings, run_as: RunAs) -> dict[str, Server]:
    servers: list[Server] = [
        Postgres(settings, run_as),
        Valkey(settings, run_as),
        Kafka(settings, run_as),
        OpenSearch(settings, run_as),
    ]
    return {server.name: server for server in servers}


__all__ = ["SERVER_NAMES", "STOP_ORDER", "Server", "build_servers"]
