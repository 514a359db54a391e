"""Shared fixtures of the Pose2Mesh network tests: the small anny meshes and the tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_pose2mesh.yaml"


@pytest.fixture(scope="session")
def tiny_config():
    from p2m.pose2mesh.config import load_config

    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory):
    """A private hierarchy cache folder for the session."""
    return tmp_path_factory.mktemp("p2m-graph-cache")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run these small workloads on one intra-op thread (restored afterwards).

    On a loaded 2-core machine, OpenMP's spin-waiting made the overfit test 10x slower with 2 threads than
    with 1; the tensors here are too small for a second thread to pay off anyway.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
