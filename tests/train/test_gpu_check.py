"""benchmarks/gpu_check.sh --dry-run: the prepared GPU check runs its steps tiny on the CPU and writes its results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .helpers import REPO, run_env


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = run_env()
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [
            "bash",
            str(REPO / "benchmarks" / "gpu_check.sh"),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--python",
            sys.executable,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    assert out["dry_run"] is True and out["env"]["cuda"] is False
    assert set(out["throughput"]) == {"notoes_collapse3pc", "notoes_collapse10pc"}
    assert all(v["samples_per_s"] > 0 and v["steps"] == 4 for v in out["throughput"].values())
    chunk = out["recipe_chunk"]
    assert chunk["steps"] == [3, 6] and chunk["last_step_logged"] == 6 and chunk["resumed_without_gap"]
    ev = chunk["eval_gt"]
    assert ev["samples"] == 32 and ev["mpjpe"] > 0 and ev["edge_error"] is not None and ev["mrpe"] is not None
    assert "samples/s" in (tmp_path / "gpu_check.md").read_text()
