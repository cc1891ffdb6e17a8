"""`make bench`: run every benchmark against the local stack, then write docs/PERFORMANCE.md.

Each benchmark module has `main(...) -> dict` and writes bench/results/<name>.json; a benchmark that
fails is reported as failed in the document, and the run goes on with the next one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench import report
from bench.common import write_result

# (module, kwargs for the default run, kwargs for --full)
BENCHMARKS: list[tuple[str, dict, dict]] = [
    ("bench.framework_echo", {}, {}),
    ("bench.inventory_hot_sku", {}, {}),
    ("bench.catalog_search", {}, {"full": True}),
    ("bench.order_checkout", {}, {}),
    ("bench.gateway_bench", {}, {}),
    ("bench.ghz_all", {}, {}),
    ("bench.flash_sale", {}, {}),
    ("bench.memory", {}, {}),
    ("bench.warm_start", {}, {}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--full", action="store_true", help="add the 1M-product runs (recorded, not gated)")
    parser.add_argument(
        "--only", action="append", default=[], help="run only benchmarks whose module contains this"
    )
    args = parser.parse_args(argv)
    failed = 0
    for module_name, default_kwargs, full_kwargs in BENCHMARKS:
        if args.only and not any(part in module_name for part in args.only):
            continue
        started = time.monotonic()
        print(f"== {module_name}", flush=True)
        try:
            module = importlib.import_module(module_name)
            result = module.main(**(full_kwargs if args.full else default_kwargs))
            # correctness checks under load (the flash sale's) fail the run; timing goals never do
            broken = [
                g["goal"] for g in (result or {}).get("goals", []) if g.get("correctness") and not g["met"]
            ]
            if broken:
                failed += 1
                print(f"== {module_name}: correctness check failed: {'; '.join(broken)}", flush=True)
        except Exception:
            failed += 1
            traceback.print_exc()
            write_result(
                module_name.rsplit(".", 1)[-1],
                {"title": module_name, "error": traceback.format_exc()[-2000:]},
            )
        print(f"== {module_name} took {time.monotonic() - started:.0f}s", flush=True)
    report.main()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
