"""Fixtures shared by every test folder: anny body models, built once per session (skipped without the cache)."""

from __future__ import annotations

import pytest


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
