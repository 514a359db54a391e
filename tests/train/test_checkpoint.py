"""checkpoint.py: the key set loads with weights_only, RNG round trips, disk check, corrupt/foreign files, pruning."""

from __future__ import annotations

import random
import shutil
from collections import namedtuple
from fractions import Fraction

import numpy as np
import pytest
import torch

from p2m.errors import CheckpointError
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh.checkpoint import check_resume_config, config_diff
from p2m.pose2mesh.train import build_optimizer, build_scheduler

from .helpers import tiny_config


def _state(step: int = 7, seed: int = 0) -> dict:
    """A full checkpoint state of a small real model/optimizer/scheduler, as the trainer builds it."""
    torch.manual_seed(seed)
    cfg = tiny_config()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = build_optimizer(model.parameters(), cfg.train)
    sched = build_scheduler(opt, cfg.train)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched.step()
    return ckpt.build_state(
        model,
        opt,
        sched,
        torch.amp.GradScaler("cpu", enabled=False),
        config=cfg,
        rng={"per_rank": [ckpt.rng_state()], "rank_steps": [step]},
        epoch=1,
        epoch_done=False,
        step=step,
        data={
            "epoch": 1,
            "batch": 3,
            "seed": 123,
            "mode": "exact",
            "world_size": 1,
            "num_workers": 0,
            "batch_size": 16,
        },
        best={"metric": "mpjpe", "value": 80.5, "epoch": 0, "step": 5},
        world_size=1,
        meters={"loss": {"values": [1.0, 0.5], "total": 1.5, "count": 2}},
    )


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    state = _state()
    sizes = ckpt.save_checkpoint(tmp_path, state)
    paths = ckpt.run_paths(tmp_path)
    assert sorted(p.name for p in paths["dir"].iterdir()) == ["last.pt"]
    assert sizes["last"] == paths["last"].stat().st_size
    raw = torch.load(
        paths["last"], map_location="cpu", weights_only=True
    )  # the contract, independently of p2m
    assert set(raw) == set(ckpt.KEYS)
    back = ckpt.load_checkpoint(paths["last"])
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    assert back["step"] == 7 and back["best"]["value"] == 80.5 and back["data"]["batch"] == 3
    assert back["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    assert back["scheduler"]["last_epoch"] == 1


def test_rng_state_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = ckpt.rng_state()
    expected = (torch.rand(4), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    ckpt.set_rng_state(saved)
    again = (torch.rand(4), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_values_weights_only_cannot_load_are_refused_before_writing(tmp_path):
    class Version(str):
        pass

    state = _state()
    state["torch_version"] = Version("2.0")
    with pytest.raises(TypeError, match="torch_version"):
        ckpt.save_checkpoint(tmp_path, state)
    assert not ckpt.run_paths(tmp_path)["last"].exists()


def test_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, _state(step=3))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(
        CheckpointError, match=r"not enough free disk space.*last\.pt|last\.pt.*not enough free"
    ):
        ckpt.save_checkpoint(tmp_path, _state(step=6))
    monkeypatch.undo()
    paths = ckpt.run_paths(tmp_path)
    assert ckpt.load_checkpoint(paths["last"])["step"] == 3
    assert [p.name for p in paths["dir"].iterdir()] == ["last.pt"]  # no temporary file left


def test_corrupt_truncated_and_foreign_files_give_clear_errors(tmp_path):
    ckpt.save_checkpoint(tmp_path, _state())
    data = ckpt.run_paths(tmp_path)["last"].read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: cannot read the checkpoint"):
        ckpt.load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        ckpt.load_checkpoint(junk)
    original = tmp_path / "checkpoint12.pth.tar"  # the original Pose2Mesh's key set
    torch.save({"epoch": 12, "model_state_dict": {"w": torch.zeros(2)}, "optim_state_dict": {}}, original)
    with pytest.raises(CheckpointError, match="original Pose2Mesh"):
        ckpt.load_checkpoint(original)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": ckpt.FORMAT, "obj": Fraction(1, 3)}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        ckpt.load_checkpoint(pickled)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_best_is_linked_weights_are_written_and_snapshots_pruned(tmp_path):
    for step in (2, 4, 6, 8):
        ckpt.save_checkpoint(tmp_path, _state(step=step), best=step == 4, keep_last=2)
    paths = ckpt.run_paths(tmp_path)
    names = sorted(p.name for p in paths["dir"].iterdir())
    assert names == ["best.pt", "last.pt", "step-00000006.pt", "step-00000008.pt"]
    assert ckpt.load_checkpoint(paths["best"])["step"] == 4
    assert ckpt.load_checkpoint(paths["last"])["step"] == 8
    tensors, config, meta = ckpt.load_weights(paths["weights"])
    assert meta["step"] == "4" and config["train"]["batch_size"] == 16
    assert set(tensors) == set(_state()["model"])
    state, _, info = ckpt.load_model_state(tmp_path)  # a run folder resolves to best.pt
    assert info["step"] == 4 and set(state) == set(tensors)


def test_disk_usage_counts_hard_links_once(tmp_path):
    ckpt.save_checkpoint(tmp_path, _state(step=2), best=True)
    paths = ckpt.run_paths(tmp_path)
    if paths["last"].stat().st_nlink < 2:
        pytest.skip("this filesystem has no hard links")
    assert ckpt.disk_usage(tmp_path) == paths["last"].stat().st_size + paths["weights"].stat().st_size


def test_stale_temporary_files_are_removed(tmp_path):
    ckpt.save_checkpoint(tmp_path, _state())
    stale = ckpt.run_paths(tmp_path)["dir"] / ".last.pt.abc123.tmp"
    stale.write_bytes(b"partial")
    assert ckpt.remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and ckpt.run_paths(tmp_path)["last"].exists()


def test_config_diff_and_resume_check():
    from p2m.pose2mesh.config import to_dict

    a = tiny_config()
    assert config_diff(to_dict(a), to_dict(a)) == []
    b = tiny_config("train.lr=0.01", "loss.form=l2")
    diff = config_diff(to_dict(a), to_dict(b))
    assert ("train.lr", 0.001, 0.01) in diff and ("loss.form", "l1", "l2") in diff
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.001 in the run, 0\.01 now"):
        check_resume_config(to_dict(a), b, ckpt.run_paths("RUN")["last"])
    check_resume_config(
        to_dict(a), tiny_config("train.epochs=5", "train.log_every=7"), ckpt.run_paths("RUN")["last"]
    )
