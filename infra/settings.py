"""Typed settings of the local infrastructure, read once from SHOPMESH_* environment variables."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from meshkit.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class InfraSettings:
    """Ports, folders and limits of `python -m infra`; field `pg_port` reads `SHOPMESH_PG_PORT`."""

    pg_port: int = 15432
    pg_database: str = "shopmesh"
    pg_max_connections: int = 400
    pg_shared_buffers: str = "512MB"
    valkey_port: int = 16379
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap: str = "512m"
    opensearch_port: int = 19200
    opensearch_transport_port: int = 19300
    opensearch_heap: str = "768m"
    # empty: <repo>/.data and <repo>/.cache
    infra_data_dir: str = ""
    infra_cache_dir: str = ""
    # the unprivileged account the servers run as when infra is started by root
    infra_user: str = "shopmesh"
    # empty: the JDK that `java` on PATH belongs to
    java_home: str = ""
    infra_ready_timeout_seconds: float = 240.0
    infra_stop_timeout_seconds: float = 40.0

    @property
    def data_dir(self) -> Path:
        return Path(self.infra_data_dir).resolve() if self.infra_data_dir else REPO_ROOT / ".data"

    @property
    def cache_dir(self) -> Path:
        return Path(self.infra_cache_dir).resolve() if self.infra_cache_dir else REPO_ROOT / ".cache"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{self.pg_database}"

    @property
    def valkey_url(self) -> str:
        return f"valkey://127.0.0.1:{self.valkey_port}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def opensearch_url(self) -> str:
        return f"http://127.0.0.1:{self.opensearch_port}"


def load_infra_settings() -> InfraSettings:
    return load_settings(InfraSettings)


def child_environment(settings: InfraSettings, **extra: str) -> dict[str, str]:
    """The environment for commands run by `exec` and `run-mesh`: this one, plus where the servers are.

    Server addresses are only filled in when not set already, so a caller's own SHOPMESH_DATABASE_URL
    (say, a test database) wins; PYTHONPATH gets the repo root and generated/ in front.
    """
    env = dict(os.environ)
    for key, value in {
        "SHOPMESH_DATABASE_URL": settings.database_url,
        "SHOPMESH_VALKEY_URL": settings.valkey_url,
        "SHOPMESH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SHOPMESH_OPENSEARCH_URL": settings.opensearch_url,
    }.items():
        env.setdefault(key, value)
    paths = [str(REPO_ROOT), str(REPO_ROOT / "generated")]
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env
