"""Write k8s/base/monitoring/prometheusrule.yaml from observability/alerts.yml (the one source).

kustomize cannot load files outside k8s/, so the PrometheusRule carries a copy of the rules file's
groups, text and comments included. `python -m observability.sync_rules` rewrites it;
`--check` exits 1 when the copy is stale (tests/observability/test_prometheusrule.py does the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "observability" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from observability/alerts.yml by `python -m observability.sync_rules`: do not edit here.
# The rules, their promtool tests (observability/alerts_test.yml) and the runbooks (docs/OPERATIONS.md)
# live there; tests/observability fails while this copy differs.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: shopmesh-alerts
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest whose spec.groups is the rules file's `groups:` block, re-indented."""
    lines = rules_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "groups:")
    except StopIteration:
        raise ValueError("the rules file has no top-level `groups:` key") from None
    body = [f"  {line}" if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the PrometheusRule is stale")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text())
    current = PROMETHEUS_RULE.read_text() if PROMETHEUS_RULE.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{PROMETHEUS_RULE.relative_to(ROOT)} is stale: run python -m observability.sync_rules")
            return 1
        return 0
    if current != wanted:
        PROMETHEUS_RULE.write_text(wanted)
        print(f"wrote {PROMETHEUS_RULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
