"""Steady-state memory: each service process after a short mixed load, and the whole local stack.

The load is the flash-sale driver at a small size (every service and the gateway get traffic). Then,
after a short idle, /proc is sampled a few times: VmRSS (and the VmHWM peak) of every service process,
workers included, and the proportional set size (Pss, smaps_rollup) of every process of the stack:
PostgreSQL's postmaster with all its children, Valkey, the Kafka and OpenSearch JVMs (pids from
infra's pidfiles), and the services. Pss splits shared pages among the processes sharing them, so
the sum is not inflated by PostgreSQL's shared buffers being counted once per backend; the RSS sum is
shown next to it. Goals (issue 10): <= 150 MiB per service process, <= 4 GiB for the whole stack.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from pathlib import Path

from bench import flash_sale
from bench.common import bench_mesh, process_tree, write_result
from infra.control import Infra
from infra.settings import load_infra_settings

SERVICE_LIMIT_MIB = 150
STACK_LIMIT_MIB = 4096
SERVICES = ("catalog_svc", "inventory_svc", "order_svc", "gateway")


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def sample(groups: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per group (a root pid): processes, RSS sum, Pss sum and the largest single-process RSS, in KiB."""
    out = {}
    for name, root in groups.items():
        pids = process_tree(root)
        rss = [status_kib(p, "VmRSS") for p in pids]
        out[name] = {
            "processes": len(pids),
            "rss_kib": sum(rss),
            "pss_kib": sum(pss_kib(p) for p in pids),
            "max_process_rss_kib": max(rss, default=0),
            "max_process_hwm_kib": max((status_kib(p, "VmHWM") for p in pids), default=0),
        }
    return out


async def run(*, users: int = 100, duration_s: float = 30.0, idle_s: float = 5.0, samples: int = 5) -> dict:
    infra = Infra(load_infra_settings())
    servers = {name: infra.servers[name].pid() for name in ("postgres", "valkey", "kafka", "opensearch")}
    missing = [name for name, pid in servers.items() if pid is None or not infra.servers[name].running()]
    if missing:
        raise RuntimeError(f"infrastructure not running (python -m infra up): {', '.join(missing)}")
    async with bench_mesh() as mesh:
        sale, _ = await flash_sale.prepare(mesh, products=500, hot_skus=20, stock_per_sku=max(1, users // 2))
        rec, wall, _ = await flash_sale.drive(
            mesh,
            sale,
            users=users,
            duration_s=duration_s,
            think_s=0.5,
            abandon_ratio=0.1,
            max_connections=users,
        )
        requests = sum(len(v) for v in rec.latencies.values())
        await asyncio.sleep(idle_s)
        roots = {name: mesh.procs[name].proc.pid for name in SERVICES}  # type: ignore[union-attr]
        taken = []
        for _ in range(samples):
            taken.append(sample({**roots, **servers}))
            await asyncio.sleep(1.0)

    def median(name: str, key: str) -> float:
        return statistics.median(s[name][key] for s in taken)

    rows = []
    for name in (*SERVICES, *servers):
        rows.append(
            {
                "component": name,
                "kind": "service" if name in SERVICES else "infrastructure",
                "processes": taken[-1][name]["processes"],
                "rss_mib": mib(median(name, "rss_kib")),
                "pss_mib": mib(median(name, "pss_kib")),
                "largest_process_rss_mib": mib(median(name, "max_process_rss_kib")),
                "peak_process_rss_mib": mib(max(s[name]["max_process_hwm_kib"] for s in taken)),
            }
        )
    services = [r for r in rows if r["kind"] == "service"]
    worst = max(services, key=lambda r: r["largest_process_rss_mib"])
    stack_pss = sum(r["pss_mib"] for r in rows)
    stack_rss = sum(r["rss_mib"] for r in rows)
    k8s = {
        r["component"]: {
            "measured_rss_mib": r["largest_process_rss_mib"],
            "peak_rss_mib": r["peak_process_rss_mib"],
            # request = steady state + 25%, limit = 2x the peak, rounded up to 32 / 64 MiB
            "suggested_request_mib": 32 * math.ceil(r["largest_process_rss_mib"] * 1.25 / 32),
            "suggested_limit_mib": 64 * math.ceil(r["peak_process_rss_mib"] * 2 / 64),
        }
        for r in services
    }
    return {
        "title": "Steady-state memory (services and the whole local stack)",
        "rows": rows,
        "k8s_memory": k8s,
        "commands": {
            "load then /proc": f"python -m bench.memory  (flash-sale driver, {users} users, {duration_s:.0f} s)"
        },
        "goals": [
            {
                "goal": f"<= {SERVICE_LIMIT_MIB} MiB RSS per service process (steady state)",
                "measured": f"largest: {worst['component']} {worst['largest_process_rss_mib']} MiB",
                "met": all(r["largest_process_rss_mib"] <= SERVICE_LIMIT_MIB for r in services),
            },
            {
                "goal": f"<= {STACK_LIMIT_MIB // 1024} GiB for the whole local stack (Pss, JVMs included)",
                "measured": f"{stack_pss / 1024:.2f} GiB Pss ({stack_rss / 1024:.2f} GiB summing RSS)",
                "met": stack_pss <= STACK_LIMIT_MIB,
            },
        ],
        "notes": [
            f"Sampled {samples} times, 1 s apart, {idle_s:.0f} s after {requests} requests of the flash-sale "
            f"mix ({users} users, {wall:.0f} s) through the gateway; medians shown, the peak is VmHWM.",
            "PostgreSQL counts the postmaster and all its children, including backends of anything else "
            "connected to the same server at the time; the JVMs' heaps are fixed by infra (-Xms = -Xmx).",
            "k8s_memory in bench/results/memory.json: per-service figures for resource requests/limits.",
        ],
    }


def main(users: int = 100, duration_s: float = 30.0) -> dict:
    result = asyncio.run(run(users=users, duration_s=duration_s))
    write_result("memory", result)
    return result


if __name__ == "__main__":
    import sys

    args = dict(arg.split("=", 1) for arg in sys.argv[1:])
    main(users=int(args.get("users", 100)), duration_s=float(args.get("duration_s", 30.0)))
