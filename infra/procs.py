"""Process plumbing: the unprivileged account, pidfiles, liveness, stopping, waiting, log tails."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class InfraError(RuntimeError):
    """A server could not be fetched, started, checked or stopped; the message says which and why."""


@dataclass(frozen=True)
class RunAs:
    """Who the servers run as: root may not run initdb or OpenSearch, so root hands them to `user`."""

    user: str | None  # None: run as the current (non-root) user
    uid: int
    gid: int

    @classmethod
    def resolve(cls, user: str) -> RunAs:
        if os.geteuid() != 0:
            return cls(user=None, uid=os.geteuid(), gid=os.getegid())
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            print(f"infra: creating unprivileged system user {user!r} to run the servers")
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", user],
                check=True,
            )  # fmt: skip
            entry = pwd.getpwnam(user)
        return cls(user=user, uid=entry.pw_uid, gid=entry.pw_gid)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv for a one-shot command (initdb, pg_ctl, daemonizing servers) run as the account."""
        return ["runuser", "-u", self.user, "--", *argv] if self.user else list(argv)

    def popen_kwargs(self) -> dict[str, object]:
        """Popen arguments that switch user in the child itself, so the pid we keep is the server's."""
        if not self.user:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, *paths: Path) -> None:
        """Make folders (recursively) belong to the account; a no-op when not root."""
        if not self.user:
            return
        for path in paths:
            os.chown(path, self.uid, self.gid)
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    with contextlib.suppress(FileNotFoundError):
                        os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)

    def can_use(self, path: Path, *, execute: bool = False) -> bool:
        """Whether the account can read (and run) `path`, checked as that account."""
        if not self.user:
            return os.access(path, os.X_OK if execute else os.R_OK)
        flag = "-x" if execute else "-r"
        return subprocess.run(self.wrap(["test", flag, str(path)]), check=False).returncode == 0

    def make_reachable(self, path: Path) -> None:
        """Give others the traverse bit on every ancestor of `path` the account cannot enter."""
        if not self.user:
            return
        for parent in reversed(path.resolve().parents):
            if not self.can_use(parent, execute=True):
                mode = parent.stat().st_mode
                print(f"infra: adding o+x to {parent} so {self.user!r} can reach {path}")
                os.chmod(parent, mode | 0o001)


def run(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300.0, log: Path | None = None) -> str:  # fmt: skip
    """Run a one-shot command; raise InfraError with its output when it fails.

    Give `log` for launchers that daemonize: their child inherits stdout, so a pipe would never close.
    """
    try:
        if log is None:
            done = subprocess.run(
                list(argv), env=dict(env) if env is not None else None, cwd=cwd, timeout=timeout,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
            )  # fmt: skip
            output, code = done.stdout, done.returncode
        else:
            with log.open("ab") as out:
                code = subprocess.run(
                    list(argv), env=dict(env) if env is not None else None, cwd=cwd, timeout=timeout,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False,
                ).returncode  # fmt: skip
            output = log_tail(log)
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{what}: timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    if code != 0:
        raise InfraError(f"{what} failed (exit {code}): {' '.join(argv)}\n{output[-4000:]}")
    return output


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` making the child receive `signum` when the process that spawns it dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG; the setting survives exec). None where prctl is missing.

    The kernel ties it to the spawning *thread*: spawn from a thread that lives as long as the parent
    (run-mesh spawns from its main thread). libc and its prctl are looked up here, in the parent, so
    the child only makes one foreign call between fork and exec."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # the process's own libc
    if prctl is None:
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the kernel will not signal now
            os.kill(os.getpid(), signum)

    return set_parent_death_signal


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().split()
    except (FileNotFoundError, PermissionError):
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def is_running(pid: int | None, marker: str) -> bool:
    """A live, non-zombie process whose command line contains `marker` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker in cmdline(pid)


def stop_pid(pid: int, marker: str, *, name: str, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; return only once the process is gone."""
    if not is_running(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for(lambda: not is_running(pid, marker), timeout=timeout):
        return
    print(f"infra: {name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_for(lambda: not is_running(pid, marker), timeout=10):
        raise InfraError(f"{name} (pid {pid}) survived SIGKILL")


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def java_home(configured: str) -> Path:
    if configured:
        return Path(configured)
    java = shutil.which("java")
    if not java:
        raise InfraError("no `java` on PATH and SHOPMESH_JAVA_HOME unset: Kafka and OpenSearch need Java 17+")
    return Path(java).resolve().parent.parent


def make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
