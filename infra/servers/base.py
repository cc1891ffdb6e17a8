"""What every local server has: folders, a pid, a health check, start and stop."""

from __future__ import annotations

import contextlib
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

from infra.procs import InfraError, RunAs, is_running, log_tail, port_open, stop_pid, wait_for
from infra.settings import InfraSettings


class Server(ABC):
    """One server process. Subclasses say how to prepare, launch, probe and stop it."""

    name: str = ""
    # a string that must appear in the process's command line for a pid to count as this server
    marker: str = ""
    # how long a launch may take to write its pidfile before a missing (or stale) one means it died
    pidfile_grace_seconds: float = 5.0

    def __init__(self, settings: InfraSettings, run_as: RunAs) -> None:
        self.settings = settings
        self.run_as = run_as
        self.home = settings.data_dir / self.name

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    @abstractmethod
    def log_path(self) -> Path: ...

    @abstractmethod
    def pid(self) -> int | None: ...

    @abstractmethod
    def prepare(self) -> None:
        """Fetch, unpack and initialise whatever is missing; idempotent, starts nothing."""

    @abstractmethod
    def launch(self) -> None:
        """Spawn the server and return without waiting for it to be ready."""

    @abstractmethod
    def probe(self) -> None:
        """Raise if the server does not answer a real request right now (short timeouts)."""

    def after_ready(self) -> None:
        """Checks and set-up that need the running server (databases, templates); none by default."""
        return None

    def diagnostic_logs(self) -> list[Path]:
        """Logs whose tails explain a failed start; subclasses add launcher/stdout logs."""
        return [self.log_path]

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- last lines of {path}:\n{log_tail(path, 25)}" for path in self.diagnostic_logs()
        )

    def running(self) -> bool:
        return is_running(self.pid(), self.marker)

    def healthy(self) -> bool:
        try:
            self.probe()
        except Exception:
            return False
        return True

    def start(self) -> bool:
        """Make sure the server runs and answers. Returns True when this call launched it."""
        self.prepare()
        launched = False
        if not self.running():
            if port_open(self.port):
                raise InfraError(
                    f"{self.name}: port {self.port} is taken by a process that is not this project's "
                    f"{self.name} (no live pid under {self.home}); stop it or change the port setting"
                )
            started_at = time.monotonic()
            stale_pid = self.pid()  # a crashed server's pidfile still names its dead process
            self.launch()
            launched = True
        else:
            started_at = time.monotonic()
            stale_pid = None
        self._wait_ready(launched=launched, stale_pid=stale_pid)
        self.after_ready()
        if launched:
            print(
                f"infra: {self.name} ready on 127.0.0.1:{self.port} in {time.monotonic() - started_at:.1f}s"
            )
        return launched

    def _exited(self, stale_pid: int | None, launched_at: float) -> bool:
        """Whether the process this start launched is gone.

        Only a pidfile written by this launch can say so. Until one exists, the file is missing or
        still names the process a SIGKILL left dead (the stale pid, read before launching), and the
        launch counts as failed only after `pidfile_grace_seconds`: a daemonizing JVM on a loaded
        machine (OpenSearch's `-d` writes its pidfile during bootstrap) took well over the old 5 s,
        was reported "exited during start-up" while healthy, and a second start launched a second JVM.
        """
        pid = self.pid()
        if pid is not None and pid != stale_pid:
            return not is_running(pid, self.marker)
        return time.monotonic() - launched_at > self.pidfile_grace_seconds

    def _wait_ready(self, *, launched: bool, stale_pid: int | None = None) -> None:
        launched_at = time.monotonic()
        deadline = launched_at + self.settings.infra_ready_timeout_seconds
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.probe()
                return
            except Exception as exc:
                last_error = exc
            if launched and self._exited(stale_pid, launched_at):
                raise InfraError(f"{self.name} exited during start-up\n{self._log_tails()}")
            time.sleep(0.5)
        raise InfraError(
            f"{self.name} did not answer within {self.settings.infra_ready_timeout_seconds:.0f}s "
            f"(last error: {last_error})\n{self._log_tails()}"
        )

    def stop(self) -> bool:
        """Stop the server if it runs. Returns True when it was running."""
        pid = self.pid()
        if not is_running(pid, self.marker):
            return False
        assert pid is not None
        stop_pid(pid, self.marker, name=self.name, timeout=self.settings.infra_stop_timeout_seconds)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process spawned it
        if not wait_for(lambda: not port_open(self.port), timeout=10):
            raise InfraError(f"{self.name}: port {self.port} still open after its process {pid} stopped")
        return True
