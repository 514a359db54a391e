"""DDP: `torchrun --nproc_per_node=2 -m p2m train` on CPU (gloo); ranks in step, rank 0 alone writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from p2m.pose2mesh import checkpoint as ckpt

from .helpers import REPO, TINY_CONFIG, run_env, train_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_torchrun_two_processes_on_cpu(shards, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "p2m",
        *train_args(TINY_CONFIG, shards, run),
        "-v",
    ]  # -v: the info lines checked below
    proc = subprocess.run(cmd, cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("training pose2mesh on cpu: 2 rank(s) x 8 micro-batch") == 1  # rank 1 is quiet
    assert "Not using distributed mode" not in out
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors",
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    last = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    # 3 train shards of 60 -> ranks hold 120 and 60 samples; both run floor(60 / 8) = 7 steps per epoch
    assert last["step"] == 14 and last["rng"]["rank_steps"] == [14, 14] and len(last["rng"]["per_rank"]) == 2
    assert last["world_size"] == 2 and last["data"]["world_size"] == 2 and last["data"]["batch_size"] == 8
    assert not any(k.startswith("module.") for k in last["model"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))  # one writer
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["samples"] for r in val] == [60, 60]  # the test split is scored in full over both ranks
    from p2m.pose2mesh.config import Config, from_dict
    from p2m.pose2mesh.model import build_model

    model = build_model(from_dict(Config, last["config"]))
    model.load_state_dict(last["model"])  # strict: the result loads
    assert torch.isfinite(model(torch.randn(2, 17, 2)).mesh).all()
