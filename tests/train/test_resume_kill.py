"""Crash tests through the CLI: SIGKILL after a checkpoint, SIGKILL inside a checkpoint write, then --resume."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from p2m.pose2mesh import checkpoint as ckpt

from .helpers import TINY_CONFIG, p2m_cli, p2m_killed, train_args

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STEPS = 14  # crosses the epoch boundary at step 11 (validation, schedule step, best.pt)


def _rows(run):
    keep = ("time", "samples_per_s", "seconds")
    return [
        {k: v for k, v in json.loads(line).items() if k not in keep}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def _assert_same_run(a, b):
    ca = ckpt.load_checkpoint(a / "checkpoints" / "last.pt")
    cb = ckpt.load_checkpoint(b / "checkpoints" / "last.pt")
    assert ca["step"] == cb["step"] == STEPS
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), f"{k} differs after the crash and resume"
    assert ca["data"] == cb["data"] and ca["best"] == cb["best"] and ca["scheduler"] == cb["scheduler"]
    assert _rows(a) == _rows(b)  # metrics.jsonl: nothing lost, nothing twice


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("kill") / "a"
    proc = p2m_cli(*train_args(TINY_CONFIG, shards, run, "--max-steps", str(STEPS)))
    assert proc.returncode == 0, proc.stderr
    return run


def test_sigkill_after_a_checkpoint_then_resume_gives_identical_weights(shards, uninterrupted, tmp_path):
    run = tmp_path / "b"
    proc = p2m_killed("after-step", 6, *train_args(TINY_CONFIG, shards, run, "--max-steps", str(STEPS)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ckpt.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
    proc = p2m_cli(*train_args(TINY_CONFIG, shards, run, "--resume", "--max-steps", str(STEPS), "-v"))
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stderr  # an info line (-v)
    _assert_same_run(uninterrupted, run)


def test_sigkill_inside_a_checkpoint_write_leaves_a_loadable_checkpoint(shards, uninterrupted, tmp_path):
    run = tmp_path / "c"
    # the 2nd file written: last.pt of step 6, killed half-way
    proc = p2m_killed("during-save", 2, *train_args(TINY_CONFIG, shards, run, "--max-steps", str(STEPS)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = run / "checkpoints"
    temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # the half-written file, never renamed
    assert ckpt.load_checkpoint(folder / "last.pt")["step"] == 3  # the previous checkpoint is intact
    proc = p2m_cli(*train_args(TINY_CONFIG, shards, run, "--resume", "--max-steps", str(STEPS)))
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    _assert_same_run(uninterrupted, run)
