"""generated/ must be exactly what protos/generate.sh produces from protos/ today."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "generated" / "shop"


def _files(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "protos" / "generate.sh"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"protos/generate.sh failed:\n{result.stdout}\n{result.stderr}"
    fresh = tmp_path / "shop"

    fresh_files, committed_files = _files(fresh), _files(COMMITTED)
    missing = sorted(fresh_files - committed_files)
    extra = sorted(committed_files - fresh_files)
    _, changed, errors = filecmp.cmpfiles(
        fresh, COMMITTED, sorted(fresh_files & committed_files), shallow=False
    )

    problems = [f"missing from generated/shop: {missing}"] if missing else []
    problems += [f"not produced by protos/: {extra}"] if extra else []
    problems += [f"stale: {sorted(changed + errors)}"] if changed or errors else []
    assert not problems, "generated/ is stale; run `make protos` and commit the result.\n" + "\n".join(
        problems
    )
