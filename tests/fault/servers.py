"""Killing and restarting the REAL local servers (the ones `python -m infra up` runs), for fault tests.

The pid comes from infra's own pidfiles (`Server.pid()`), the kill is SIGKILL on that process (no
shutdown hook runs, exactly a crash), and the restart is infra's own `Server.start()` under infra's
lock, so a concurrent `python -m infra up` never starts a second copy. PostgreSQL is crashed with
`pg_ctl stop -m immediate` instead: SIGKILL on the postmaster alone would leave its backends holding
the shared memory, and the restart would refuse to run until they noticed. `outage()` restores the
server in a `finally`, whatever the test did meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

from infra.control import Infra
from infra.procs import is_running, run
from infra.servers import SERVER_NAMES, Server
from infra.servers.postgres import Postgres
from infra.settings import load_infra_settings


class ServerControl:
    def __init__(self) -> None:
        self.infra = Infra(load_infra_settings())

    def _server(self, name: str) -> Server:
        return self.infra.servers[name]

    def running(self, name: str) -> bool:
        return self._server(name).running()

    async def kill(self, name: str) -> int:
        """SIGKILL the server's process (PostgreSQL: immediate stop) and wait until it is gone."""
        server = self._server(name)
        pid = server.pid()
        if not server.running() or pid is None:
            raise AssertionError(f"{name} is not running: nothing to kill (start it with `make infra-up`)")
        if isinstance(server, Postgres):
            await asyncio.to_thread(self._crash_postgres, server)
        else:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while is_running(pid, server.marker):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} (pid {pid}) still running after the kill")
            await asyncio.sleep(0.05)
        return pid

    @staticmethod
    def _crash_postgres(server: Postgres) -> None:
        pg_ctl = server.bin_dir() / "pg_ctl"
        run(
            server.run_as.wrap([str(pg_ctl), "-D", str(server.pgdata), "-m", "immediate", "-w", "stop"]),
            what="pg_ctl stop -m immediate",
            timeout=30,
        )

    async def start(self, name: str) -> float:
        """Start the server again (infra's start, under infra's lock); returns seconds until it answered."""
        started = time.monotonic()
        await asyncio.to_thread(self._start_locked, name)
        return time.monotonic() - started

    def _start_locked(self, name: str) -> None:
        """infra's own `Server.start()` (prepare, launch, wait for the probe, after_ready) under its lock.

        After a SIGKILL the pidfile still names the dead process; `Server.start()` remembers that
        pid and only a pidfile written by the new launch can make it report an exit (OpenSearch's
        JVM may take tens of seconds to write one on a loaded machine).
        """
        with self.infra.locked():
            self._server(name).start()

    @contextlib.asynccontextmanager
    async def outage(self, name: str) -> AsyncIterator[dict[str, float]]:
        """Kill `name` on entry; on exit (even on failure) start it again. Yields timings."""
        timings: dict[str, float] = {}
        await self.kill(name)
        timings["killed_at"] = time.monotonic()
        try:
            yield timings
        finally:
            timings["restart_seconds"] = await self.start(name)
            timings["down_seconds"] = time.monotonic() - timings["killed_at"]

    async def ensure_all_up(self) -> list[str]:
        """Start any of the four servers that is not running (the safety net after each fault test)."""
        missing = [name for name in SERVER_NAMES if not self.running(name)]
        for name in missing:
            await self.start(name)
        return missing
