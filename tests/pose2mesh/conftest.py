"""Fixtures of the Pose2Mesh network tests: the small anny meshes, the tiny config and its graph cache come from
tests/conftest.py; every test here runs on one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_pose2mesh.yaml"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
