"""What the code exports (metric names and label names) and what a PromQL query asks for.

The exported set comes from prometheus_client's default registry after importing every module that
defines metrics: all of meshkit, and each service's (and the gateway's) `metrics` module. Importing is
safe: modules do no I/O at import time (STYLE.md). The queried set comes from parsing the query with
promql-parser, so a metric name is never confused with a function, a label or a keyword.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from functools import cache
from pathlib import Path

import grpc
import promql_parser
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
# packages with their own metrics module; a missing one is an error (the dashboard names its metrics)
METRICS_MODULES = ("inventory_svc.metrics", "catalog_svc.metrics", "order_svc.metrics", "gateway.metrics")
# labels Prometheus (and the Prometheus Operator's ServiceMonitors) attach to every scraped series
TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod", "container", "endpoint"})
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Grafana's interval variables, replaced by a duration so the query parses
GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}")


@dataclasses.dataclass(frozen=True)
class Selector:
    """One vector selector in a query: `name{label op "value", ...}`."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@dataclasses.dataclass(frozen=True)
class QueryShape:
    selectors: tuple[Selector, ...]
    grouping_labels: tuple[tuple[str, frozenset[str]], ...]  # (label in by(...), names selected inside)


@cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every sample name the code can export (`x_total`, `x_bucket`, ...) -> its label names."""
    for info in pkgutil.walk_packages([str(ROOT / "meshkit")], prefix="meshkit."):
        importlib.import_module(info.name)
    for module in METRICS_MODULES:
        importlib.import_module(module)
    exported: dict[str, frozenset[str]] = {}
    # a labelled metric with no child yet collects as a family without samples, so the sample names
    # come from the family type; the label names from the metric object (prometheus_client keeps the
    # collector list private, and nothing public lists a family's label names before it has samples)
    for collector in list(REGISTRY._collector_to_names):
        labels = frozenset(getattr(collector, "_labelnames", ()))
        for family in collector.collect():
            for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
                exported[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
            for sample in family.samples:
                exported[sample.name] = exported.get(sample.name, labels) | frozenset(sample.labels)
    return exported


def grpc_methods() -> dict[str, frozenset[str]]:
    """Full gRPC service name -> method names, from the generated descriptors of protos/."""
    services: dict[str, frozenset[str]] = {}
    for module_path in sorted((ROOT / "generated" / "shop").glob("*/v1/*_pb2.py")):
        module = ".".join(module_path.relative_to(ROOT / "generated").with_suffix("").parts)
        descriptor = importlib.import_module(module).DESCRIPTOR
        for service in descriptor.services_by_name.values():
            services[service.full_name] = frozenset(m.name for m in service.methods)
    return services


GRPC_CODES = frozenset(code.name for code in grpc.StatusCode)


def parse(query: str) -> promql_parser.Expr:
    return promql_parser.parse(GRAFANA_INTERVALS.sub("5m", query))


def shape_of(query: str) -> QueryShape:
    selectors: list[Selector] = []
    grouping: list[tuple[str, frozenset[str]]] = []

    def names_inside(node: object) -> frozenset[str]:
        found: list[str] = []

        def visit(inner: object) -> None:
            if isinstance(inner, promql_parser.VectorSelector) and inner.name:
                found.append(inner.name)

        promql_parser.walk(node, visit)
        return frozenset(found)

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple(
                (m.name, str(m.op).rsplit(".", 1)[-1], m.value)
                for m in node.matchers.matchers
                if m.name != "__name__"
            )
            selectors.append(Selector(node.name or "", matchers))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            if node.modifier.type == promql_parser.AggModifierType.By:  # without (...) only drops
                inside = names_inside(node.expr)
                grouping.extend((label, inside) for label in node.modifier.labels)

    promql_parser.walk(parse(query), visit)
    return QueryShape(tuple(selectors), tuple(grouping))


def problems_in(query: str, *, recorded: frozenset[str] = frozenset()) -> list[str]:
    """Why `query` cannot work against what the code exports ([] when it can).

    `recorded` are names produced by recording rules: they are valid selectors with any labels.
    """
    exported = exported_metrics()
    methods = grpc_methods()
    shape = shape_of(query)
    problems: list[str] = []
    for selector in shape.selectors:
        if selector.name in recorded:
            continue
        if selector.name not in exported:
            problems.append(f"metric {selector.name!r} is exported by no module")
            continue
        labels = exported[selector.name] | TARGET_LABELS
        for label, _, _ in selector.matchers:
            if label not in labels:
                problems.append(
                    f"{selector.name} has no label {label!r} (has {sorted(exported[selector.name])})"
                )
        accepted = {
            label: _values(op, value) for label, op, value in selector.matchers if op in ("Equal", "Re")
        }
        problems += [
            f"{v!r} is not a gRPC status code name" for v in accepted.get("grpc_code", set()) - GRPC_CODES
        ]
        services = accepted.get("grpc_service", set())
        problems += [f"no gRPC service {s!r} in protos/" for s in services - set(methods)]
        known = frozenset().union(*(methods.get(s, frozenset()) for s in services or methods))
        problems += [
            f"no RPC {m!r} in {sorted(services) or 'any service'}"
            for m in accepted.get("grpc_method", set()) - known
        ]
    for label, inside in shape.grouping_labels:
        available = TARGET_LABELS.union(*(exported.get(n, frozenset()) for n in inside))
        if inside - recorded and label not in available:
            problems.append(f"grouping by {label!r}, which none of {sorted(inside)} has")
    return problems


def _values(op: str, value: str) -> set[str]:
    """The label values a positive matcher accepts: `=` one, `=~` a plain a|b|c alternation."""
    return set(value.split("|")) if op == "Re" else {value}
