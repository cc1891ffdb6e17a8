"""docs/OPERATIONS.md names only shopctl commands that exist, and has a section for every alert."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from shopctl.__main__ import app

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "OPERATIONS.md").read_text()


def test_every_shopctl_command_in_the_doc_exists() -> None:
    commands = set(re.findall(r"`shopctl ([a-z][a-z-]*) ([a-z][a-z-]*)", DOC))
    assert len(commands) >= 10
    runner = CliRunner()
    missing = [f"{group} {name}" for group, name in sorted(commands)
               if runner.invoke(app, [group, name, "--help"]).exit_code != 0]  # fmt: skip
    assert missing == []


def test_every_alert_has_a_section_with_three_things_to_check() -> None:
    groups = yaml.safe_load((ROOT / "observability" / "alerts.yml").read_text())["groups"]
    names = [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^#{2,3} )", DOC, re.MULTILINE | re.DOTALL))
    for name in names:
        assert name in sections, f"no section for {name}"
        steps = re.findall(r"^([123])\. ", sections[name], re.MULTILINE)
        assert steps == ["1", "2", "3"], f"{name}: expected three numbered checks, found {steps}"
