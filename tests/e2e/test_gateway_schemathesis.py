"""schemathesis against /openapi.json with every service up: no 5xx, no response outside the schema.

Bounded (-n examples per operation, fixed seed, no example database) so it runs in the suite. The
token is an admin's, so admin routes are exercised too; the gateway's buckets are the e2e ones.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Gateway, new_user

SERVICES = ("catalog_svc", "inventory_svc", "order_svc")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
MAX_EXAMPLES = 15
SEED = 20251125


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    gateway: Gateway, tmp_path: Path
) -> None:
    for service in SERVICES:
        await gateway.mesh.start(service)
    token = gateway.token(new_user("fuzz-admin"), "admin", ttl=1800)
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        # one worker: with two, schemathesis's threads hit CPython 3.11.7's "AST constructor recursion
        # depth mismatch" SystemError (gh-106905, fixed in 3.11.8) in a clean-clone run
        "--workers",
        "1",
        "--request-timeout",
        "25",
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=540, check=False
    )
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    assert result.returncode == 0, output[-8000:]
    assert "API Operations" in output and "Tested: 0" not in output, output[-3000:]
