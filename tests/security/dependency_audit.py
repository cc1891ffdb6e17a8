"""Known vulnerabilities of the runtime dependencies, asked of PyPI the one way this machine can.

pip-audit cannot audit from here: its PyPI service asks `/pypi/<name>/<version>/json`, which answers
404 for every version, and its OSV service cannot resolve its host (docs/RELIABILITY.md has the exact
errors). PyPI's project endpoint `/pypi/<name>/json` does answer, and its `vulnerabilities` list is
what PyPI holds (from the PyPA/OSV advisory database) for the project's *latest* release. So:

- a dependency installed at exactly that release is audited: its findings are that list (withdrawn
  advisories left out), the same data pip-audit's PyPI service would have used;
- any other (an older release, kept by a pin) is reported as *not audited*, never as clean.

Only the project's direct runtime dependencies (pyproject's `[project] dependencies`) are asked
about: one request each. `python -m tests.security.dependency_audit` prints the report as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from importlib import metadata
from pathlib import Path

import httpx
from pip._internal.models.index import PyPI

ROOT = Path(__file__).resolve().parents[2]
PYPI = PyPI.pypi_url  # the JSON API of the index pip itself installs from


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_dependencies(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Names (canonical) of pyproject's [project] dependencies."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = []
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(canonical(match.group(1)))
    return sorted(set(names))


@dataclasses.dataclass
class Finding:
    package: str
    version: str
    advisory: str
    aliases: list[str]
    fixed_in: list[str]


@dataclasses.dataclass
class AuditReport:
    audited: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> installed version
    not_audited: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> why
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> what went wrong
    findings: list[Finding] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "audited": len(self.audited),
            "not_audited": len(self.not_audited),
            "errors": len(self.errors),
            "findings": len(self.findings),
            "details": dataclasses.asdict(self),
        }


def audit(names: list[str] | None = None, *, timeout: float = 20.0) -> AuditReport:
    report = AuditReport()
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for name in names if names is not None else runtime_dependencies():
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                report.errors[name] = "not installed"
                continue
            try:
                reply = client.get(f"{PYPI}/{name}/json")
                reply.raise_for_status()
                project = reply.json()
            except (httpx.HTTPError, ValueError) as exc:
                report.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            latest = str(project.get("info", {}).get("version", ""))
            if latest != installed:
                report.not_audited[name] = f"installed {installed}, PyPI's latest is {latest}"
                continue
            report.audited[name] = installed
            for vuln in project.get("vulnerabilities") or []:
                if vuln.get("withdrawn"):
                    continue
                report.findings.append(
                    Finding(
                        package=name,
                        version=installed,
                        advisory=str(vuln.get("id", "")),
                        aliases=list(vuln.get("aliases") or []),
                        fixed_in=list(vuln.get("fixed_in") or []),
                    )
                )
    return report


if __name__ == "__main__":
    print(json.dumps(audit().as_dict(), indent=2))
