"""Shared fixtures of the export tests: a small anny body (skipped where the anny cache is missing)."""

from __future__ import annotations

import pytest


def _body(topology: str):
    from p2m.errors import BodyModelError

    try:
        from p2m.body import create

        return create("anny", topology=topology)
    except (BodyModelError, ImportError) as exc:  # pragma: no cover - environment without the anny cache
        pytest.skip(f"anny body model {topology} unavailable: {exc}")


@pytest.fixture(scope="session")
def body_1229():
    """anny's 1,229-vertex mesh (notoes_collapse10pc), cmu_mb rig."""
    return _body("notoes_collapse10pc")


@pytest.fixture(scope="session")
def body_369():
    """anny's 369-vertex mesh (notoes_collapse3pc), cmu_mb rig."""
    return _body("notoes_collapse3pc")
