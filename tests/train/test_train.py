"""train(): the run layout, metrics.jsonl, exact in-process resume, GT meshes from body parameters, masking, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from p2m.errors import CheckpointError, ConfigError
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh.train import train

from .helpers import TINY_POSENET, tiny_config


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_run_folder_holds_contract_3_and_nothing_else(tiny_run):
    run, result = tiny_run
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors",
        "checkpoints",
        "config.yaml",
        "metrics.jsonl",
    ]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    last = ckpt.load_checkpoint(run / "checkpoints" / "last.pt")
    # 180 training samples / batch 16 = 11 full batches per epoch, 2 epochs
    assert last["step"] == result["step"] == 22 and last["epoch"] == 1 and last["epoch_done"]
    assert last["data"]["epoch"] == 2 and last["data"]["batch"] == 0
    assert last["scheduler"]["last_epoch"] == 2 and last["optimizer"]["param_groups"][0][
        "lr"
    ] == pytest.approx(1e-4)
    rows = _rows(run)
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(2, 23, 2))  # log_every 2, global steps, no duplicates
    assert all(
        math.isfinite(r[k]) for r in train for k in ("loss", "vertex", "normal", "joint", "lift", "lr")
    )
    assert len({r["time"] for r in train}) == len(train)  # wall-clock times kept to the millisecond
    val = [r for r in rows if r["kind"] == "val"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert (
        [(r["epoch"], r["step"]) for r in val]
        == [(0, 11), (1, 22)]
        == [(r["epoch"], r["step"]) for r in epochs]
    )
    for r in val:
        assert r["samples"] == 60 and r["mesh_samples"] == 60
        assert 0 < r["pa_mpjpe"] < r["mpjpe"] < 2000 and 0 < r["mpvpe"] < 2000
    best = min(val, key=lambda r: r["mpjpe"])
    assert result["best"]["value"] == pytest.approx(best["mpjpe"], rel=1e-5)
    assert ckpt.load_checkpoint(run / "checkpoints" / "best.pt")["step"] == best["step"]
    assert epochs[1]["joint"] < epochs[0]["joint"]  # the mesh->joint loss goes down
    assert "MPJPE" in result["table"] and result["checkpoint_bytes"] > 0


def test_resume_in_process_continues_exactly(shards, tmp_path):
    cfg = tiny_config()
    train(cfg, tmp_path / "a", shards, device="cpu", progress=False, max_steps=12)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=5)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=12, resume=True)
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 12
    assert set(a["model"]) == set(b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa if torch.is_tensor(sa[k]))
    assert a["data"] == b["data"] and a["best"] == b["best"]

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s", "seconds")} for r in rows]

    assert strip(_rows(tmp_path / "a")) == strip(_rows(tmp_path / "b"))  # nothing lost or logged twice


def test_ground_truth_from_body_parameters_matches_the_shards_joints(shards):
    from p2m.body import create
    from p2m.pose2mesh.data import BatchPreparer, body_selection, iter_eval_batches

    cfg = tiny_config()
    body = create("anny", topology="notoes_collapse3pc")
    kwargs, chosen = body_selection(shards, "test", cfg, need_body=True)
    assert chosen == "anny/cmu_mb"
    batch = next(iter_eval_batches(shards, "test", 32, body_kwargs=kwargs))
    prep = BatchPreparer(cfg, body, torch.device("cpu"), train=False, eval_input="gt")
    mesh, joints, valid = prep._body_targets(batch, 32)
    assert bool(valid.all())
    j3d = batch["j3d"].numpy()
    rel = j3d - j3d[:, :1]
    # body joints in the camera frame (each sample's R), root-relative, vs the mocap-frame j3d
    assert np.abs(joints.numpy() - rel).max() < 1.0  # mm (rounding of the stored parameters)
    assert mesh.shape == (32, 369, 3)
    regressed = torch.einsum("jv,bvc->bjc", body.h36m_regressor, mesh)
    assert torch.allclose(regressed, joints, atol=1e-2)  # the mesh target is in the same frame as the joints


def test_samples_of_another_body_model_get_joint_supervision_only(shards, caplog):
    import dataclasses

    from p2m.body import create
    from p2m.pose2mesh.data import NO_BODY, BatchPreparer, body_selection, iter_eval_batches
    from p2m.pose2mesh.losses import Pose2MeshLoss
    from p2m.pose2mesh.model import build_model
    from p2m.pose2mesh.transforms import batch_seeds

    cfg = tiny_config()
    smpl_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, body=dataclasses.replace(cfg.model.body, model="smpl"))
    )
    with caplog.at_level("WARNING"):
        kwargs, chosen = body_selection(shards, "train", smpl_cfg, need_body=True)
    assert chosen is None and kwargs == NO_BODY and "joints-only supervision" in caplog.text
    body = create("anny", topology="notoes_collapse3pc")
    batch = next(
        iter_eval_batches(shards, "test", 8, body_kwargs=body_selection(shards, "test", cfg, True)[0])
    )
    batch["has_body"][:4] = False  # as if the first four came from another body model
    inp = BatchPreparer(cfg, body, torch.device("cpu"), train=True)(batch, batch_seeds(8, 0))
    assert inp.mesh_valid.tolist() == [False] * 4 + [True] * 4
    assert bool(inp.joints_valid.all())  # their j3d still supervise the joints
    assert torch.count_nonzero(inp.mesh[:4]) == 0
    model = build_model(cfg, body=body)
    loss = Pose2MeshLoss(cfg.loss, faces=body.faces)
    out = model(inp.pose2d)
    masked = loss(
        out,
        mesh=inp.mesh,
        joints=inp.joints,
        lifted=inp.lifted,
        mesh_valid=inp.mesh_valid,
        joints_valid=inp.joints_valid,
        lift_valid=inp.joints_valid,
        epoch=5,
    )
    half = loss(
        type(out)(*(t[4:] for t in out)),
        mesh=inp.mesh[4:],
        joints=inp.joints[4:],
        lifted=inp.lifted[4:],
        epoch=5,
    )
    torch.testing.assert_close(masked["vertex"], half["vertex"])  # masked rows do not count at all
    torch.testing.assert_close(masked["edge"], half["edge"])


def test_eval_reader_visits_every_sample_once(shards):
    from p2m.pose2mesh.data import NO_BODY, iter_eval_batches

    def keys(**kw):
        return [
            k for b in iter_eval_batches(shards, "train", 16, body_kwargs=NO_BODY, **kw) for k in b["key"]
        ]

    everything = keys()
    assert len(everything) == len(set(everything)) == 180  # the last, partial batch is kept
    r0, r1 = keys(rank=0, world_size=2), keys(rank=1, world_size=2)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == sorted(everything)
    assert keys(max_samples=70) == everything[:70]


def test_posenet_stage_and_init_posenet(shards, tmp_path):
    from p2m.pose2mesh.checkpoint import load_posenet
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.model import build_model

    cfg = load_config(TINY_POSENET, ["model.posenet.hidden=64", "train.batch_size=32", "train.epochs=1"])
    result = train(cfg, tmp_path / "posenet", shards, device="cpu", progress=False)
    assert result["step"] == 5 and result["val"]["mpjpe"] > 0 and "mpvpe" not in result["val"]
    model = build_model(tiny_config())
    load_posenet(model, tmp_path / "posenet")
    state, _, _ = ckpt.load_model_state(tmp_path / "posenet")
    for k, v in model.posenet.state_dict().items():
        assert torch.equal(v, state[f"posenet.{k}"])
    with pytest.raises(CheckpointError, match="do not fit model.posenet"):
        load_posenet(build_model(tiny_config("model.posenet.hidden=32")), tmp_path / "posenet")


def test_refusals(shards, tiny_run, tmp_path):
    run, _ = tiny_run
    with pytest.raises(CheckpointError, match="already holds a run"):
        train(tiny_config(), run, shards, device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.001 in the run, 0\.002 now"):
        train(tiny_config("train.lr=0.002"), run, shards, device="cpu", progress=False, resume=True)
    with pytest.raises(ConfigError, match="joint_set"):
        train(tiny_config("model.joint_set=coco19"), tmp_path / "x", shards, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="flip_prob"):
        train(tiny_config("transform.flip_prob=0.5"), tmp_path / "x", shards, device="cpu", progress=False)
    with pytest.raises(ConfigError, match="not divisible by accum_steps"):
        tiny_config("train.batch_size=10", "train.accum_steps=4")
    assert not (tmp_path / "x").exists()


def test_each_coordinate_loss_takes_its_own_form():
    from p2m.pose2mesh.losses import Pose2MeshLoss, coord_loss
    from p2m.pose2mesh.model import Pose2MeshOutput

    cfg = tiny_config("loss.form=l1", "loss.lift_form=l2", "loss.joint_form=smooth_l1")
    assert (cfg.loss.form_of("vertex"), cfg.loss.form_of("joint"), cfg.loss.form_of("lift")) == (
        "l1",
        "smooth_l1",
        "l2",
    )
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(4, 17, 3, generator=g) * 50, torch.randn(4, 17, 3, generator=g) * 50
    out = Pose2MeshLoss(cfg.loss)(Pose2MeshOutput(pred, None, pred), joints=gt, lifted=gt)
    torch.testing.assert_close(out["lift"], coord_loss(pred, gt, form="l2"))
    torch.testing.assert_close(out["joint"], coord_loss(pred, gt, form="smooth_l1", beta=10.0))
    with pytest.raises(ConfigError, match="vertex_form"):
        tiny_config("loss.vertex_form=l3")
