"""observability/alerts.yml: valid for promtool, unit-tested, and every alert's tests actually bite.

promtool comes from Debian's `prometheus` package (infra/tools.sh installs it); without it these
tests fail, never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.metric_registry import problems_in

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "observability" / "alerts.yml"
RULE_TESTS = ROOT / "observability" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

REQUIRED_ALERTS = {
    "HighCheckoutFailureRate",
    "InventoryOversell",
    "SearchLatencyHigh",
    "OpenSearchCircuitOpen",
    "CheckoutErrorBudgetBurnFast",
    "CheckoutErrorBudgetBurnSlow",
    "BrowseErrorBudgetBurnFast",
    "BrowseErrorBudgetBurnSlow",
    "OutboxBacklogOld",
    "KafkaConsumerLagHigh",
    "ReservationSweeperStalled",
}


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.fail(
            "promtool is not installed: run `make tools` (Debian's prometheus package)", pytrace=False
        )
    return found


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def rule_tests() -> dict:
    return yaml.safe_load(RULE_TESTS.read_text())


def test_rules_file_passes_promtool_check() -> None:
    done = run_promtool("check", "rules", str(RULES), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_required_alert_exists() -> None:
    assert REQUIRED_ALERTS <= set(alerts())


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in rule_tests()["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(alerts()) - firing == set(), "alerts with no case where they fire"
    assert set(alerts()) - quiet == set(), "alerts with no case where they must stay quiet"
    assert firing | quiet <= set(alerts()), "tests for alerts that do not exist"


@pytest.mark.parametrize("alertname", sorted(alerts()))
def test_the_firing_cases_fail_when_the_alert_can_never_fire(alertname: str, tmp_path: Path) -> None:
    """Mutation check: with this alert's expression replaced by one that is never true, its own
    promtool cases must fail, so they really depend on the expression."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alertname:
                rule["expr"] = "vector(0) > 1"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    suite = rule_tests()
    suite["tests"] = [
        {**case, "alert_rule_test": mine}
        for case in suite["tests"]
        if (mine := [c for c in case.get("alert_rule_test", []) if c["alertname"] == alertname])
    ]
    suite["tests"] = [
        case for case in suite["tests"] if any(c.get("exp_alerts") for c in case["alert_rule_test"])
    ]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    done = run_promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0, (
        f"{alertname}'s firing cases pass even when it can never fire:\n{done.stdout}"
    )


@pytest.mark.parametrize("alertname", sorted(alerts()))
def test_alert_has_severity_summary_description_and_a_runbook_section(alertname: str) -> None:
    rule = alerts()[alertname]
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    path, _, anchor = annotations["runbook_url"].partition("#")
    assert path == "docs/OPERATIONS.md" and anchor == alertname.lower()
    assert OPERATIONS.is_file(), "docs/OPERATIONS.md is missing"
    assert anchor in markdown_anchors(OPERATIONS.read_text()), f"no section '{alertname}' in OPERATIONS.md"


def markdown_anchors(text: str) -> set[str]:
    """GitHub-style heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in text.splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            title = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


def test_every_rule_queries_metrics_and_labels_the_code_exports() -> None:
    recorded = frozenset(rule["record"] for rule in rules() if "record" in rule)
    problems = {
        rule.get("alert") or rule["record"]: found
        for rule in rules()
        if (found := problems_in(rule["expr"], recorded=recorded))
    }
    assert problems == {}


def test_recording_rules_are_used_and_alerts_use_only_defined_recordings() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set()
    for rule in alerts().values():
        used |= set(re.findall(r"shopmesh:[a-z_:0-9]+", rule["expr"]))
    assert used == recorded, f"undefined: {used - recorded}; unused: {recorded - used}"
