"""One real local Ray instance (2 CPUs) for the whole folder, plus the shared fixtures of the stage tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
# The loopback site of the crawler tests and the small datasets of the shard tests, imported by module name.
for folder in (TESTS / "crawler", TESTS / "shards"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Ray started on this machine with 2 CPUs; ``arm_fault()`` makes the next task kill its worker once."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'p2m[ray]')")
    import ray

    from p2m.scale import common

    fault = tmp_path_factory.mktemp("ray-fault") / "armed"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", common.FAULT_ENV)}
    # Workers inherit this environment: they must import this checkout and see the fault file.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p)
    os.environ[common.FAULT_ENV] = str(fault)
    common.init(common.LOCAL, num_cpus=2)
    try:
        yield fault
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
