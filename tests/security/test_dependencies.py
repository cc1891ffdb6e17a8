"""The runtime dependencies have no known vulnerability that PyPI reports (dependency_audit.py says
why this, not pip-audit, is what can run here, and what it cannot see)."""

from __future__ import annotations

import json

from tests.security.dependency_audit import audit, runtime_dependencies


def test_runtime_dependencies_have_no_known_vulnerability_on_pypi() -> None:
    names = runtime_dependencies()
    report = audit(names)
    print(f"\n[dependency audit] {json.dumps(report.as_dict(), default=str)}")
    assert not report.errors, report.errors
    assert set(report.audited) | set(report.not_audited) == set(names)
    # most must really be audited, or the check says nothing (only pinned-back ones are exempt)
    assert len(report.audited) >= len(names) // 2, report.not_audited
    assert not report.findings, [
        f"{f.package} {f.version}: {f.advisory} {f.aliases} fixed in {f.fixed_in}" for f in report.findings
    ]
