"""Fixtures shared by every test folder: anny body models (built once per session, skipped without the cache),
the tiny Pose2Mesh config and its mesh-hierarchy cache."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The CI-sized Pose2Mesh config.
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_pose2mesh.yaml"


def anny_body(topology: str):
    """``p2m.body.create("anny", topology=...)``, or a skip naming why it is unavailable."""
    from p2m.errors import BodyModelError

    try:
        from p2m.body import create

        return create("anny", topology=topology)
    except (BodyModelError, ImportError) as exc:  # pragma: no cover - environment without the anny cache
        pytest.skip(f"anny body model {topology} unavailable: {exc}")


@pytest.fixture(scope="session")
def body_1229():
    """anny's 1,229-vertex mesh (notoes_collapse10pc), cmu_mb rig."""
    return anny_body("notoes_collapse10pc")


@pytest.fixture(scope="session")
def body_615():
    """anny's 615-vertex mesh (notoes_collapse5pc), cmu_mb rig."""
    return anny_body("notoes_collapse5pc")


@pytest.fixture(scope="session")
def body_369():
    """anny's 369-vertex mesh (notoes_collapse3pc), cmu_mb rig."""
    return anny_body("notoes_collapse3pc")


@pytest.fixture(scope="session")
def body_notoes():
    """anny's 12,272-vertex mesh (notoes), cmu_mb rig."""
    return anny_body("notoes")


@pytest.fixture(scope="session")
def body_full():
    """anny's full 13,718-vertex mesh, cmu_mb rig."""
    return anny_body("full")


@pytest.fixture(scope="session")
def tiny_config():
    """configs/tiny_pose2mesh.yaml, loaded."""
    from p2m.pose2mesh.config import load_config

    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory):
    """A private hierarchy cache folder for the session."""
    return tmp_path_factory.mktemp("p2m-graph-cache")


@pytest.fixture
def one_torch_thread():
    """Run small workloads on one intra-op thread (restored afterwards); folders opt in with an autouse wrapper.

    On a loaded 2-core machine, OpenMP's spin-waiting made the overfit test 10x slower with 2 threads than
    with 1; the tensors of the model tests are too small for a second thread to pay off anyway.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
