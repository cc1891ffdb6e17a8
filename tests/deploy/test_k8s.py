"""k8s/validate.sh end to end: the real overlays pass, and a broken copy of them fails.

Runs kustomize, kubeconform and the CRD fetchers for real (offline once .cache/k8s-schemas is warm).
A missing tool makes validate.sh exit non-zero, so these tests fail rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
VALIDATE = K8S / "validate.sh"


def run_validate(k8s_dir: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(VALIDATE)] + ([str(k8s_dir)] if k8s_dir else [])
    return subprocess.run(
        args, capture_output=True, text=True, timeout=600, env={**os.environ, **env}, check=False
    )


@pytest.fixture()
def k8s_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def break_file(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, f"{old!r} not in {path}: the test's anchor moved"
    path.write_text(text.replace(old, new, 1))


def test_every_overlay_is_valid_offline() -> None:
    done = run_validate()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    runs = re.findall(
        r"== Kubernetes ([\d.]+): (.*)\nSummary: (\d+) resources found in (\d+) files - Valid: (\d+), "
        r"Invalid: 0, Errors: 0, Skipped: 0",
        output,
    )
    assert len({version for version, *_ in runs}) >= 2, output
    for _, overlays, found, files, valid in runs:
        assert set(overlays.split()) == {"dev", "prod"} and files == "2", output
        assert found == valid and int(found) > 60, output
    assert "validate: all overlays valid" in output


def test_wrong_field_type_in_a_deployment_fails(k8s_copy: Path) -> None:
    break_file(k8s_copy / "base/apps/catalog.yaml", "revisionHistoryLimit: 5", 'revisionHistoryLimit: "five"')
    done = run_validate(k8s_copy, K8S_VERSIONS="1.37.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert re.search(r"Deployment catalog is invalid: .*/spec/revisionHistoryLimit", output), output


def test_unknown_field_in_a_pod_spec_fails(k8s_copy: Path) -> None:
    # strict mode: a misspelt field is an error, not silently ignored as the API server would prune it
    break_file(k8s_copy / "base/apps/order.yaml", "          readinessProbe:", "          readynessProbe:")
    done = run_validate(k8s_copy, K8S_VERSIONS="1.37.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert re.search(r"Deployment order is invalid: .*readynessProbe", output), output


def test_invalid_field_in_a_custom_resource_fails(k8s_copy: Path) -> None:
    # order-events keeps the base's partitions in prod (dev overrides them), so prod must catch it
    kafka = k8s_copy / "base/data/kafka.yaml"
    text = kafka.read_text()
    anchor = (
        "  name: order-events\n  labels:\n    strimzi.io/cluster: shopmesh-kafka\nspec:\n  partitions: 12"
    )
    assert anchor in text
    kafka.write_text(text.replace(anchor, anchor.replace("partitions: 12", 'partitions: "twelve"')))
    done = run_validate(k8s_copy, K8S_VERSIONS="1.37.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert re.search(r"KafkaTopic order-events is invalid: .*/spec/partitions", output), output


def test_unknown_field_in_a_cnpg_cluster_fails(k8s_copy: Path) -> None:
    break_file(k8s_copy / "base/data/postgres.yaml", "  primaryUpdateStrategy:", "  primaryUpdateStrateggy:")
    done = run_validate(k8s_copy, K8S_VERSIONS="1.37.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert re.search(r"Cluster shopmesh-pg is invalid: .*primaryUpdateStrateggy", output), output


def test_a_crd_whose_checksum_differs_from_the_lock_is_refused(k8s_copy: Path, tmp_path: Path) -> None:
    lock = k8s_copy / "crds.lock"
    good = "cef9869d65873457388214210adb1ad3ed8998cc36fa8feb5e1260f5fe761590"  # cnpg clusters CRD
    break_file(lock, good, "0" * 64)
    # a separate cache, so the stamp of the real cache cannot short-cut the check
    done = run_validate(k8s_copy, SHOPMESH_K8S_SCHEMA_CACHE=str(tmp_path / "cache"), K8S_VERSIONS="1.37.0")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "cnpg-clusters: sha256 of" in output and "crds.lock says " + "0" * 64 in output, output
