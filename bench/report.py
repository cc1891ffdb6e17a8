"""Render bench/results/*.json into docs/PERFORMANCE.md and PNG plots under docs/perf/.

Every table says which command produced it and on what machine; every goal is marked met or not.
"""

from __future__ import annotations

import json
from typing import Any

from meshkit.migrate import ROOT

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
PLOTS = ROOT / "docs" / "perf"
ORDER = [
    "framework_echo",
    "inventory_hot_sku",
    "catalog_search",
    "order_checkout",
    "gateway",
    "ghz_all",
    "memory",
    "warm_start",
    "flash_sale",
]


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> list[str]:
    if not rows:
        return []
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return lines


def _goals(goals: list[dict[str, Any]]) -> list[str]:
    if not goals:
        return []
    lines = ["", "| goal | measured | met |", "|---|---|---|"]
    for goal in goals:
        lines.append(f"| {goal['goal']} | {goal['measured']} | {'yes' if goal['met'] else '**no**'} |")
    return lines


def _plot_inventory(result: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.get("rows") or []
    if not rows:
        return None
    x = [r["concurrency"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, [r["ours_rps"] for r in rows], marker="o", label="ReserveStock over gRPC (group commit)")
    ax.plot(x, [r["db_limit_tps"] for r in rows], marker="s", label="(a) pgbench: single conditional UPDATE")
    ax.plot(x, [r["seed_tps"] for r in rows], marker="^", label="(b) pgbench: seed's SELECT FOR UPDATE shape")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("reservations / s (one hot SKU)")
    ax.set_title("Hot-SKU reservation throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / "inventory_hot_sku.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT / "docs"))


# extra keys of a result rendered as tables (ghz_all, flash_sale, memory): key -> heading
EXTRA_TABLES = {
    "throughput": "Throughput",
    "error_mix": "Answers by request kind (HTTP status and ErrorInfo reason)",
    "k8s_memory": "Per-service memory for Kubernetes requests and limits (MiB)",
    "error_samples": "Sample error messages per RPC",
}


def _extra_tables(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, heading in EXTRA_TABLES.items():
        value = result.get(key) or {}
        if not value:
            continue
        if all(isinstance(v, dict) for v in value.values()):
            rows = [{"": name, **v} for name, v in value.items()]
        elif key in ("error_mix", "error_samples"):
            rows = [
                {"what": k, "count" if key == "error_mix" else "messages": str(v).replace("|", "/")}
                for k, v in value.items()
            ]
        else:
            rows = [value]
        lines += ["", f"{heading}:", "", *_table(rows)]
    checks = result.get("checks") or {}
    if checks:
        summary = {
            **checks.get("settle", {}),
            **checks.get("events", {}),
            **{f"orders {k}": v for k, v in checks.get("orders_by_status", {}).items()},
        }
        lines += ["", "Correctness checks after the load (settling, events, orders):", "", *_table([summary])]
        lines += ["", "Hot SKUs:", "", *_table(checks.get("hot_skus") or [])]
        lines += [f"- problem: {problem}" for problem in checks.get("problems") or []]
    return lines


def _plot_flash_sale(result: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.get("timeline") or []
    if not points:
        return None
    t = [p["t_s"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, [p["p50_ms"] for p in points], marker="o", label="p50")
    ax.plot(t, [p["p99_ms"] for p in points], marker="^", label="p99")
    ax.set_xlabel("seconds into the sale")
    ax.set_ylabel("latency (ms), all HTTP requests")
    ax.set_yscale("log")
    load = ax.twinx()
    load.bar(t, [p["per_s"] for p in points], width=(t[0] * 0.8), alpha=0.2, color="grey", label="requests/s")
    load.set_ylabel("requests / s")
    ax.set_zorder(load.get_zorder() + 1)  # lines over the bars
    ax.patch.set_visible(False)
    ax.set_title("Flash sale: latency against load over time")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / "flash_sale.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT / "docs"))


def _section(result: dict[str, Any]) -> list[str]:
    lines = [f"## {result.get('title', result['name'])}", ""]
    machine = result.get("machine", {})
    lines.append(
        f"Run {result.get('finished_at', '?')} on {machine.get('cores', '?')} cores, "
        f"{machine.get('memory_gib', '?')} GiB, Python {machine.get('python', '?')}."
    )
    if "error" in result:
        lines += ["", "**This benchmark failed in the last run:**", "", "```", result["error"], "```", ""]
        return lines
    commands = result.get("commands") or {}
    if commands:
        lines += ["", "Commands:", ""] + [f"- {name}: `{cmd}`" for name, cmd in commands.items()]
    if result.get("rows"):
        lines += ["", *_table(result["rows"])]
    if result.get("workers"):
        lines += ["", "Multi-process serving (SO_REUSEPORT):", "", *_table([result["workers"]])]
    lines += _extra_tables(result)
    lines += _goals(result.get("goals") or [])
    if result["name"] == "inventory_hot_sku":
        plot = _plot_inventory(result)
        if plot:
            lines += ["", f"![throughput against concurrency]({plot})"]
    if result["name"] == "flash_sale":
        plot = _plot_flash_sale(result)
        if plot:
            lines += ["", f"![latency against load during the sale]({plot})"]
    for note in result.get("notes") or []:
        lines += ["", note]
    lines.append("")
    return lines


def main() -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    names = [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]
    lines = [
        "# Performance",
        "",
        "Written by `bench/report.py` from the last `make bench` (`python -m bench`). Every figure below was",
        "measured on this project's machine (2 cores, 24 GiB, shared and noisy): compare ratios measured in",
        "the same run, not absolute numbers across runs. Load generators: ghz (gRPC, CPU capped with",
        "`--cpus=1`) and pgbench; all servers run on the same machine.",
        "",
    ]
    for name in names:
        lines += _section(results[name])
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
