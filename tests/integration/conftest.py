"""Fixtures shared by the integration tests (`mesh` itself comes from tests/harness.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
async def inventory(mesh):
    """The session mesh with inventory_svc running."""
    await mesh.start("inventory_svc")
    return mesh
