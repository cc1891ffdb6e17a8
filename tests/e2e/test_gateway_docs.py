"""The API reference page: headless Chromium (Debian's `chromium`) loads /docs, served with local
assets only, and renders every operation of /openapi.json."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=20000",
    "--dump-dom",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "headless Chromium is missing: install the Debian package `chromium` (apt-get install chromium)"
    )


async def test_docs_page_is_self_contained(gateway: Gateway) -> None:
    reply = await gateway.client.get("/docs")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    assert "://" not in reply.text  # no CDN: every asset comes from this gateway
    for asset in re.findall(r'(?:src|href)="([^"]+)"', reply.text):
        assert (await gateway.client.get(f"/{asset}")).status_code == 200, asset


async def test_chromium_renders_every_operation(gateway: Gateway, tmp_path: Path) -> None:
    document = (await gateway.client.get("/openapi.json")).json()
    expected = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert len(expected) >= 22
    profile = tmp_path / "profile"
    profile.mkdir()
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"{gateway.url}/docs"]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'id="swagger-ui"' in dom
    rendered = set(
        re.findall(
            r'class="opblock-summary-method">(\w+)</span>.*?data-path="([^"]+)"',
            dom,
            flags=re.S,
        )
    )
    assert rendered == expected, f"missing {expected - rendered}, extra {rendered - expected}"
    assert "Shopmesh API" in dom
