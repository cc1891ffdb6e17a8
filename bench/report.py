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
    lines += _goals(result.get("goals") or [])
    if result["name"] == "inventory_hot_sku":
        plot = _plot_inventory(result)
        if plot:
            lines += ["", f"![throughput against concurrency]({plot})"]
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
