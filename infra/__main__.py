"""`python -m infra up|down|status|exec -- CMD...|run-mesh|lock`: the local servers, without Docker."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys

from infra.artifacts import write_lock
from infra.control import Infra
from infra.procs import InfraError
from infra.servers import SERVER_NAMES
from infra.settings import child_environment, load_infra_settings


def _cmd_up(infra: Infra, args: argparse.Namespace) -> int:
    with infra.locked():
        infra.up(args.servers or SERVER_NAMES)
    return 0


def _cmd_down(infra: Infra, args: argparse.Namespace) -> int:
    with infra.locked():
        stopped = infra.down(args.servers or SERVER_NAMES)
    if not stopped:
        print("infra: nothing was running")
    return 0


def _cmd_status(infra: Infra, _args: argparse.Namespace) -> int:
    rows = infra.status_rows()
    print(f"{'server':<11} {'pid':>8} {'port':>6}  {'state':<9} log")
    for server, pid, running, healthy in rows:
        state = "healthy" if healthy else ("UNHEALTHY" if running else "stopped")
        print(f"{server.name:<11} {pid or '-':>8} {server.port:>6}  {state:<9} {server.log_path}")
    return 0 if all(healthy for *_, healthy in rows) else 1


def _cmd_exec(infra: Infra, args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("infra exec: give a command after --", file=sys.stderr)
        return 2
    with infra.locked():
        running_before = {name for name, server in infra.servers.items() if server.running()}
        try:
            started = infra.up()
        except InfraError:
            infra.down([name for name in SERVER_NAMES if name not in running_before])
            raise
        lease = infra.take_lease(started)
    try:
        code = _run_forwarding_signals(command, env=child_environment(infra.settings))
    finally:
        with infra.locked():
            to_stop = infra.release_lease(lease)
            if to_stop:
                print(f"infra: stopping what this exec started: {', '.join(to_stop)}")
                infra.down(to_stop)
    return code


def _run_forwarding_signals(command: list[str], *, env: dict[str, str]) -> int:
    """Run CMD in the foreground; Ctrl-C reaches it through the terminal, SIGTERM is passed on to it."""
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"infra exec: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, _frame: proc.send_signal(signum)),
    }
    try:
        code = proc.wait()
        return code if code >= 0 else 128 - code  # killed by signal N: exit 128+N, as a shell would
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _cmd_run_mesh(infra: Infra, _args: argparse.Namespace) -> int:
    from infra.mesh import run_mesh

    return run_mesh(infra)


def _cmd_lock(infra: Infra, _args: argparse.Namespace) -> int:
    with infra.locked():
        write_lock(infra.settings.cache_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("up", "fetch (first time) and start the servers"), ("down", "stop the servers")):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("servers", nargs="*", metavar="SERVER", help=f"some of {', '.join(SERVER_NAMES)}")
    sub.add_parser("status", help="show each server's pid, port and health; exit 0 only if all healthy")
    cmd = sub.add_parser("exec", help="start what is missing, run CMD, stop what this call started")
    cmd.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("run-mesh", help="up, migrate, start every service, wait for Ctrl-C")
    sub.add_parser("lock", help="re-fetch the Maven artifacts and rewrite infra/artifacts.lock")
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "servers", None) or ()) - set(SERVER_NAMES)
    if unknown:
        parser.error(f"unknown server(s) {sorted(unknown)}; choose from {', '.join(SERVER_NAMES)}")

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # readiness probes expect refused connections
    handlers = {
        "up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "exec": _cmd_exec,
        "run-mesh": _cmd_run_mesh, "lock": _cmd_lock,
    }  # fmt: skip
    try:
        return handlers[args.cmd](Infra(load_infra_settings()), args)
    except InfraError as exc:
        print(f"infra: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
