"""The recipe's options: one scale for both image axes, loss ramps, the shipped recipe configs, mesh-quality and
MRPE numbers in the evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from p2m.pose2mesh.config import LossConfig, TransformConfig, load_config
from p2m.pose2mesh.transforms import Pose2DTransform, normalize_pose2d

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _pose(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 17, 2, generator=g) * torch.tensor([120.0, 400.0]) + 300.0


def test_one_scale_keeps_proportions_per_axis_does_not():
    p = _pose()
    wide = p * torch.tensor([1.5, 1.0])  # the same joints, 1.5x wider
    for mode in ("per_axis", "one_scale"):
        a, b = normalize_pose2d(p, mode=mode), normalize_pose2d(wide, mode=mode)
        # both are invariant to translation and uniform scale
        assert torch.allclose(normalize_pose2d(p * 3.0 + 50.0, mode=mode), a, atol=1e-4)
        if mode == "per_axis":
            assert torch.allclose(a, b, atol=1e-4)  # the width change is lost
        else:
            assert not torch.allclose(a, b, atol=1e-2)
            ratio = a[..., 0].std(dim=-1) / a[..., 1].std(dim=-1)
            assert torch.allclose(b[..., 0].std(dim=-1) / b[..., 1].std(dim=-1), 1.5 * ratio, rtol=1e-3)
            # unit RMS spread per axis, centred
            assert torch.allclose((a**2).sum(-1).mean(-1), torch.full((4,), 2.0), atol=1e-4)
            assert a.mean(dim=-2).abs().max() < 1e-5
    # the training transform (no noise) gives the same input as the test-time normalisation
    cfg = TransformConfig(standardize="one_scale", noise=TransformConfig().noise.__class__(kind="none"))
    out = Pose2DTransform(cfg, train=True)(p, seeds=torch.arange(4)).pose2d
    assert torch.allclose(out, normalize_pose2d(p, mode="one_scale"), atol=1e-5)


def test_loss_ramp_grows_linearly_from_the_start_epoch():
    from p2m.pose2mesh.losses import Pose2MeshLoss

    original = Pose2MeshLoss(LossConfig(edge_start_epoch=3))
    assert [original.ramp(e, 3) for e in (0, 2.9, 3, 7)] == [0.0, 0.0, 1.0, 1.0]
    ramped = Pose2MeshLoss(LossConfig(edge_start_epoch=1, ramp_epochs=2.0))
    assert [ramped.ramp(e, 1) for e in (0.5, 1.0, 1.5, 2.0, 3.0, 9.0)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert ramped.ramp(0.5, 0) == 0.25  # the normal loss ramps in from epoch 0


def test_ramped_edge_and_normal_terms_enter_the_total_gradually(body_369):
    from p2m.pose2mesh.losses import Pose2MeshLoss
    from p2m.pose2mesh.model import Pose2MeshOutput

    g = torch.Generator().manual_seed(1)
    gt = torch.randn(2, body_369.num_vertices, 3, generator=g) * 200
    pred = gt + torch.randn(gt.shape, generator=g) * 20
    out = Pose2MeshOutput(torch.zeros(2, 17, 3), pred, torch.zeros(2, 17, 3))
    loss = Pose2MeshLoss(
        LossConfig(vertex=0, joint=0, lift=0, edge_start_epoch=0, ramp_epochs=2.0), body_369.faces
    )
    totals = [float(loss(out, mesh=gt, epoch=e)["total"]) for e in (0.0, 1.0, 2.0, 5.0)]
    full = 0.1 * float(loss(out, mesh=gt, epoch=5.0)["normal"]) + 20.0 * float(
        loss(out, mesh=gt, epoch=5.0)["edge"]
    )
    assert totals[0] == 0.0 and totals[1] == pytest.approx(full / 2, rel=1e-5)
    assert totals[2] == pytest.approx(full, rel=1e-5) and totals[3] == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize(
    "name", ["release_posenet", "release_pose2mesh", "release_smooth", "recipe_posenet", "recipe_pose2mesh"]
)
def test_recipe_configs_load_and_carry_the_fixes(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.transform.standardize == "one_scale" and cfg.synthetic.ratio == 1.0
    assert cfg.transform.noise.kind == "gaussian" and cfg.transform.noise.gaussian_scale == 0.08
    assert cfg.train.best_metric == "pa_mpjpe" and cfg.train.val_input == "gt"
    mean_std_px = (
        0.08
        * np.mean(
            [
                0.107,
                0.107,
                0.087,
                0.089,
                0.107,
                0.087,
                0.089,
                0.107,
                0.079,
                0.026,
                0.035,
                0.079,
                0.072,
                0.062,
                0.079,
                0.072,
                0.062,
            ]
        )
        * cfg.transform.crop_height
    )
    assert 2.1 <= mean_std_px <= 2.7  # the original's error size in the 288 x 384 crop
    if cfg.model.stage == "pose2mesh" and name != "release_smooth":  # stage 3 starts from a trained mesh
        assert cfg.loss.ramp_epochs > 0 and cfg.loss.edge_start_epoch == 0
    if name == "release_smooth":
        stage2 = load_config(CONFIGS / "release_pose2mesh.yaml")
        assert cfg.model == stage2.model and cfg.loss.normal == 10 * stage2.loss.normal
    if name.startswith("release"):
        assert cfg.model.body.topology == "notoes_collapse10pc"


def test_evaluation_reports_mesh_quality_and_mrpe():
    from p2m.pose2mesh.data import BatchInputs
    from p2m.pose2mesh.evaluate import MetricAccumulator, format_result
    from p2m.pose2mesh.model import Pose2MeshOutput

    g = torch.Generator().manual_seed(0)
    n = 5
    verts = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    gt_mesh = verts.expand(n, 4, 3).clone()
    pred_mesh = gt_mesh * 1.1  # every edge 10 % too long, no face turned
    joints = torch.randn(n, 17, 3, generator=g) * 200
    joints = joints - joints[:, :1]
    root = torch.tensor([100.0, -50.0, 4000.0]).expand(n, 3)
    cam = torch.tensor([1000.0, 1000.0, 500.0, 500.0]).expand(n, 4)
    xyz = joints + root[:, None]
    j2d = torch.cat([xyz[..., :2] / xyz[..., 2:] * 1000.0 + 500.0, torch.full((n, 17, 1), 2.0)], dim=-1)
    inp = BatchInputs(
        torch.zeros(n, 17, 2),
        joints,
        torch.ones(n, dtype=torch.bool),
        joints,
        gt_mesh,
        torch.ones(n, dtype=torch.bool),
        [f"k{i}" for i in range(n)],
        None,
        j2d=j2d,
        cam=cam,
        cam_valid=torch.ones(n, dtype=torch.bool),
        root=root,
    )
    acc = MetricAccumulator(faces=faces)
    acc.add(Pose2MeshOutput(joints, pred_mesh, joints), inp)
    res = MetricAccumulator.summarize([acc.state()], with_mesh=True)
    assert res["edge_error"] == pytest.approx(10.0) and res["normal_dev"] == 0.0
    assert res["mrpe"] < 1e-3 and res["mpjpe"] < 1e-3
    text = format_result({**res, "checkpoint": "x", "split": "test"})
    assert "10.0 %" in text and "MRPE" in text
    # a prediction 10 % too big puts the root about 10 % too far
    acc2 = MetricAccumulator(faces=faces)
    acc2.add(Pose2MeshOutput(joints * 1.1, pred_mesh, joints * 1.1), inp)
    assert MetricAccumulator.summarize([acc2.state()], with_mesh=True)["mrpe"] == pytest.approx(
        400.0, rel=0.1
    )
