"""k8s/base/monitoring/prometheusrule.yaml carries exactly the groups of observability/alerts.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

from observability import sync_rules

ROOT = Path(__file__).resolve().parents[2]


def test_prometheus_rule_groups_equal_the_rules_file() -> None:
    manifest = yaml.safe_load((ROOT / "k8s/base/monitoring/prometheusrule.yaml").read_text())
    rules = yaml.safe_load((ROOT / "observability/alerts.yml").read_text())
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == rules["groups"], "run: python -m observability.sync_rules"


def test_prometheus_rule_file_is_the_generated_text() -> None:
    assert sync_rules.main(["--check"]) == 0, "run: python -m observability.sync_rules"


def test_generated_manifest_follows_an_edited_rules_file() -> None:
    edited = (ROOT / "observability/alerts.yml").read_text().replace("> 60\n", "> 90\n", 1)
    manifest = yaml.safe_load(sync_rules.render(edited))
    assert manifest["spec"]["groups"] == yaml.safe_load(edited)["groups"]
    assert (
        manifest["spec"]["groups"]
        != yaml.safe_load((ROOT / "observability/alerts.yml").read_text())["groups"]
    )
