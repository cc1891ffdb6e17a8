"""Versioned SQL migrations, one schema per service.

Each service keeps `NNNN_name.sql` files in `<service>_svc/migrations/`. They run in order inside the
service's schema (search_path), after meshkit's shared migrations (outbox, processed_events), and are
recorded in `<schema>.schema_migrations`. A file's checksum is stored, so an edited, already applied
migration is reported instead of silently ignored. `python -m meshkit.migrate` applies all services.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

import psycopg

from meshkit.settings import CommonSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(__file__).resolve().parent / "migrations"

# service package -> schema it owns
SERVICE_SCHEMAS: dict[str, str] = {
    "catalog_svc": "catalog",
    "inventory_svc": "inventory",
    "order_svc": "orders",
}


class MigrationError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Migration:
    version: str  # e.g. "meshkit:0001_outbox" or "inventory_svc:0001_init"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_for(service: str) -> list[Migration]:
    found = [Migration(f"meshkit:{p.stem}", p.read_text()) for p in sorted(SHARED_DIR.glob("*.sql"))]
    service_dir = ROOT / service / "migrations"
    found += [Migration(f"{service}:{p.stem}", p.read_text()) for p in sorted(service_dir.glob("*.sql"))]
    return found


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def apply_migrations(database_url: str, service: str) -> list[str]:
    """Apply pending migrations of one service; returns the versions applied. Safe to run concurrently."""
    schema = SERVICE_SCHEMAS[service]
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(schema),))
        try:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f"SET search_path = {schema}, public")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version TEXT PRIMARY KEY, checksum TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for migration in migrations_for(service):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(f"{schema}: applied migration {migration.version} was edited")
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(schema),))
    return applied


def pending_migrations(database_url: str, service: str) -> list[str]:
    """Versions not yet applied (services refuse to start while this is non-empty)."""
    schema = SERVICE_SCHEMAS[service]
    with psycopg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'schema_migrations'",
            (schema,),
        ).fetchone()
        done: set[str] = set()
        if exists:
            rows = conn.execute(f'SELECT version FROM "{schema}".schema_migrations').fetchall()
            done = {row[0] for row in rows}
    return [m.version for m in migrations_for(service) if m.version not in done]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshkit.migrate", description=__doc__)
    parser.add_argument("services", nargs="*", help="service packages (default: all)")
    args = parser.parse_args(argv)
    settings = load_settings(CommonSettings)
    services = args.services or [s for s in SERVICE_SCHEMAS if (ROOT / s / "migrations").is_dir()]
    for service in services:
        applied = apply_migrations(settings.database_url, service)
        print(f"{service}: {len(applied)} applied" + (f" ({', '.join(applied)})" if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
