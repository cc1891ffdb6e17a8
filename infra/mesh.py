"""`python -m infra run-mesh` (`make run`): infrastructure, migrations, every service, until Ctrl-C.

Only services whose package has a `__main__.py` are started, so this works with whatever exists.
Steps that need the whole mesh up (demo data, printing tokens) go into POST_START_STEPS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from infra.control import Infra
from infra.procs import InfraError, exit_with_parent, log_tail
from infra.settings import REPO_ROOT, child_environment
from meshkit.settings import CommonSettings, load_settings


@dataclasses.dataclass(frozen=True)
class MeshSettings(CommonSettings):
    """The addresses run-mesh gives the services and probes; the same variables the services read."""

    gateway_port: int = 18080
    catalog_metrics_port: int = 9151
    inventory_metrics_port: int = 9152
    order_metrics_port: int = 9153
    mesh_ready_timeout_seconds: float = 60.0
    # demo catalog loaded by `make run` (0 skips it); loading is idempotent
    demo_products: int = 3000


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    package: str
    kind: str  # "grpc" (health check SERVING) or "http" (GET /healthz)
    port: int
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        if self.kind == "http":
            return {"SHOPMESH_GATEWAY_PORT": str(self.port)}
        return {"SHOPMESH_GRPC_PORT": str(self.port), "SHOPMESH_METRICS_PORT": str(self.metrics_port)}


def service_specs(settings: MeshSettings) -> list[ServiceSpec]:
    """Start order: the gRPC services (peers of each other, retried by their clients), then the gateway."""

    def port(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    return [
        ServiceSpec("catalog_svc", "grpc", port(settings.catalog_addr), settings.catalog_metrics_port),
        ServiceSpec("inventory_svc", "grpc", port(settings.inventory_addr), settings.inventory_metrics_port),
        ServiceSpec("order_svc", "grpc", port(settings.order_addr), settings.order_metrics_port),
        ServiceSpec("gateway", "http", settings.gateway_port),
    ]


@dataclasses.dataclass
class RunningService:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclasses.dataclass
class RunningMesh:
    """What POST_START_STEPS get: the settings and the running services."""

    settings: MeshSettings
    infra: Infra
    services: list[RunningService] = dataclasses.field(default_factory=list)


# Steps run once every service answers, before the table is printed (demo data, tokens, ...).
def _load_demo_catalog(mesh: RunningMesh) -> None:
    count = mesh.settings.demo_products
    if count <= 0:
        print("mesh: demo catalog skipped (SHOPMESH_DEMO_PRODUCTS=0)")
        return
    print(f"mesh: loading the demo catalog ({count} products, stock in two warehouses)")
    done = subprocess.run(
        [sys.executable, "-m", "shopctl", "catalog", "demo-load", f"--products={count}"],
        env=child_environment(mesh.infra.settings), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    if done.returncode:
        raise InfraError("loading the demo catalog failed (see the output above)")


def _print_demo_tokens(mesh: RunningMesh) -> None:
    from shopctl.token import print_demo_tokens  # the gateway's JWT settings, read from the same env

    print_demo_tokens(mesh)


POST_START_STEPS: tuple[Callable[[RunningMesh], None], ...] = (_load_demo_catalog, _print_demo_tokens)


def _healthy(spec: ServiceSpec) -> bool:
    try:
        if spec.kind == "http":
            return httpx.get(f"http://{spec.address}/healthz", timeout=2).status_code == 200
        with grpc.insecure_channel(spec.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except (grpc.RpcError, httpx.HTTPError):
        return False


def _migrate(env: dict[str, str]) -> None:
    if importlib.util.find_spec("meshkit.migrate") is None:
        print("mesh: meshkit.migrate does not exist yet; skipping migrations")
        return
    print("mesh: applying migrations (python -m meshkit.migrate)")
    if subprocess.run(
        [sys.executable, "-m", "meshkit.migrate"], env=env, cwd=REPO_ROOT, check=False
    ).returncode:
        raise InfraError("migrations failed (see the output above)")


def _start_services(mesh: RunningMesh, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    # a service never outlives run-mesh: if run-mesh is killed (SIGKILL, OOM) before it can stop them,
    # the kernel sends each service SIGTERM, which starts its graceful shutdown
    orphan_guard = exit_with_parent(signal.SIGTERM)
    for spec in service_specs(mesh.settings):
        if not (REPO_ROOT / spec.package / "__main__.py").exists():
            print(f"mesh: {spec.package} has no __main__.py yet; not started")
            continue
        log_path = log_dir / f"{spec.package}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.package],
                env=child_environment(mesh.infra.settings, **spec.environment()),
                cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to run-mesh, which stops services in order
                preexec_fn=orphan_guard,
            )  # fmt: skip
        mesh.services.append(RunningService(spec, process, log_path))
        print(f"mesh: started {spec.package} (pid {process.pid}), log {log_path}")


def _wait_ready(mesh: RunningMesh) -> None:
    deadline = time.monotonic() + mesh.settings.mesh_ready_timeout_seconds
    for service in mesh.services:
        while not _healthy(service.spec):
            if service.process.poll() is not None:
                raise InfraError(f"{service.spec.package} exited with {service.process.returncode}:\n"
                                 f"{log_tail(service.log_path)}")  # fmt: skip
            if time.monotonic() > deadline:
                raise InfraError(f"{service.spec.package} not healthy on {service.spec.address} in time:\n"
                                 f"{log_tail(service.log_path)}")  # fmt: skip
            time.sleep(0.3)


def _stop_services(mesh: RunningMesh) -> None:
    """SIGTERM each service's process group (all its workers), newest first; SIGKILL after the grace."""
    grace = mesh.settings.shutdown_grace_seconds + 5
    for service in reversed(mesh.services):
        if service.process.poll() is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            print(f"mesh: {service.spec.package} still running {grace:.0f}s after SIGTERM; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=10)
        # workers of a multi-process service share its group: make sure none outlives the parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGKILL)
        print(f"mesh: stopped {service.spec.package}")


def _print_table(mesh: RunningMesh) -> None:
    rows = [
        (s.name, f"127.0.0.1:{s.port}", str(s.pid() or "-"))
        for s in (mesh.infra.servers[name] for name in ("postgres", "valkey", "kafka", "opensearch"))
    ]
    for service in mesh.services:
        spec = service.spec
        where = f"http://{spec.address}" if spec.kind == "http" else f"grpc {spec.address}"
        if spec.metrics_port:
            where += f", metrics http://127.0.0.1:{spec.metrics_port}/metrics"
        rows.append((spec.package, where, str(service.process.pid)))
    width = max(len(r[1]) for r in rows)
    print(f"\n{'component':<14} {'listens on':<{width}}  pid")
    for name, where, pid in rows:
        print(f"{name:<14} {where:<{width}}  {pid}")
    print("\nmesh: running; Ctrl-C stops the services, then the infrastructure this command started")


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_mesh(infra: Infra) -> int:
    settings = load_settings(MeshSettings)
    # Ctrl-C stops the mesh even when SIGINT came in ignored: a shell starts background jobs (`&` in a
    # script) with SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    with infra.locked():
        lease = infra.take_lease(infra.up())
    mesh = RunningMesh(settings=settings, infra=infra)
    code = 0
    try:
        _migrate(child_environment(infra.settings))
        _start_services(mesh, infra.settings.data_dir / "mesh")
        _wait_ready(mesh)
        for step in POST_START_STEPS:
            step(mesh)
        _print_table(mesh)
        while True:
            for service in mesh.services:
                if service.process.poll() is not None:
                    raise InfraError(f"{service.spec.package} exited with {service.process.returncode}:\n"
                                     f"{log_tail(service.log_path)}")  # fmt: skip
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nmesh: stopping")
    except InfraError as exc:
        print(f"mesh: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_services(mesh)
        with infra.locked():
            to_stop = infra.release_lease(lease)
            infra.down(to_stop)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return code
