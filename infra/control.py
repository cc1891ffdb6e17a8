"""up / down / status, and the leases that let `exec` stop only what it started.

Every command that starts or stops servers holds an exclusive flock on .data/infra.lock, so concurrent
`up` calls are serialized: the second one finds the servers running and only checks them.

An `exec` records what it started in .data/leases/<pid>.json. When it ends, it stops those servers
only if no other live `exec` is still using the infrastructure; otherwise it hands its servers to that
lease, and the last `exec` to finish stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infra.artifacts import check_wheels
from infra.procs import InfraError, RunAs, is_running
from infra.servers import SERVER_NAMES, STOP_ORDER, Server, build_servers
from infra.settings import InfraSettings


class Infra:
    """The local servers of one data dir; the composition root builds one per command."""

    def __init__(self, settings: InfraSettings) -> None:
        self.settings = settings
        self.run_as = RunAs.resolve(settings.infra_user)
        self.servers = build_servers(settings, self.run_as)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.settings.data_dir / "infra.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def up(self, names: Sequence[str] = SERVER_NAMES) -> list[str]:
        """Start every named server that is not running, in parallel; return the ones this call launched."""
        for warning in check_wheels():
            print(f"infra: warning: {warning}")
        started_at = time.monotonic()
        launched: list[str] = []
        failures: dict[str, Exception] = {}
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="infra-up") as pool:
            futures = {name: pool.submit(self.servers[name].start) for name in names}
            for name, future in futures.items():
                try:
                    if future.result():
                        launched.append(name)
                except Exception as exc:
                    failures[name] = exc
        if failures:
            for name, exc in failures.items():
                print(f"infra: FAILED {name}: {exc}")
            raise InfraError(
                f"could not start: {', '.join(failures)} (started by this call: {launched or 'none'})"
            )
        print(f"infra: all of {', '.join(names)} healthy ({time.monotonic() - started_at:.1f}s)")
        return launched

    def down(self, names: Sequence[str] = SERVER_NAMES) -> list[str]:
        """Stop the named servers (Kafka, OpenSearch, Valkey, PostgreSQL); return the ones that were running."""
        stopped = []
        for name in STOP_ORDER:
            if name in names and self.servers[name].stop():
                print(f"infra: stopped {name}")
                stopped.append(name)
        return stopped

    def status_rows(self) -> list[tuple[Server, int | None, bool, bool]]:
        rows = []
        for name in SERVER_NAMES:
            server = self.servers[name]
            running = server.running()
            rows.append((server, server.pid() if running else None, running, running and server.healthy()))
        return rows

    # --- leases for `exec` ------------------------------------------------------------------------

    @property
    def _lease_dir(self) -> Path:
        return self.settings.data_dir / "leases"

    def take_lease(self, started: list[str]) -> Path:
        self._lease_dir.mkdir(parents=True, exist_ok=True)
        lease = self._lease_dir / f"{os.getpid()}.json"
        lease.write_text(json.dumps({"pid": os.getpid(), "started": started}))
        return lease

    def release_lease(self, lease: Path) -> list[str]:
        """Drop this lease; return the servers this process must stop now (none if another lease lives)."""
        mine = json.loads(lease.read_text())["started"] if lease.exists() else []
        lease.unlink(missing_ok=True)
        for other in sorted(self._lease_dir.glob("*.json")):
            data = json.loads(other.read_text())
            if is_running(data["pid"], "python"):
                data["started"] = sorted(set(data["started"]) | set(mine))
                other.write_text(json.dumps(data))
                if mine:
                    print(f"infra: leaving {', '.join(mine)} running for exec pid {data['pid']}")
                return []
            other.unlink()  # its process died without cleaning up; its servers become ours to stop
            mine = sorted(set(mine) | set(data["started"]))
        return mine
