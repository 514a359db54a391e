"""A tiny Pose2Mesh memorises 32 synthetic bodies: the whole forward/loss/backward path learns, on CPU."""

from __future__ import annotations

import numpy as np
import torch

from p2m.pose2mesh.config import load_config
from p2m.pose2mesh.losses import Pose2MeshLoss, mesh_targets
from p2m.pose2mesh.metrics import mpjpe, mpvpe
from p2m.pose2mesh.model import build_model
from p2m.pose2mesh.transforms import normalize_pose2d

from .conftest import TINY_CONFIG

STEPS = 100


def _to_camera(x: torch.Tensor) -> torch.Tensor:
    """anny frame (+X left, -Y forward, +Z up) -> a camera in front of the subject (x right, y down, z depth)."""
    return torch.stack([x[..., 0], -x[..., 2], x[..., 1]], dim=-1)


def _samples(body, n: int, seed: int):
    """n random adults in sampled poses: normalised 2D input, root-relative mesh and joints (mm, camera)."""
    rng = np.random.default_rng(seed)
    try:
        from p2m.body.sampler import JointRangeSampler

        pose = torch.from_numpy(JointRangeSampler(scale=0.5).sample(n, rng))
    except ImportError:  # pragma: no cover - before the pose sampler existed
        pose = torch.from_numpy(rng.normal(scale=0.2, size=(n, body.num_bones, 3))).float()
    shape = torch.from_numpy(rng.uniform(0.0, 1.0, (n, body.num_shape))).float()
    shape[:, 1] = torch.from_numpy(rng.uniform(2 / 3, 1.0, n)).float()  # adults
    with torch.no_grad():
        out = body(pose, shape, torch.zeros(n, 3))
    verts, joints = _to_camera(out.vertices), _to_camera(out.joints)
    cam = joints + torch.tensor([0.0, 0.0, 4.5])  # 4.5 m in front of a 1000 px pinhole
    uv = 1000.0 * cam[..., :2] / cam[..., 2:] + 256.0
    mesh, joints_mm = mesh_targets(verts, joints)
    return torch.from_numpy(normalize_pose2d(uv.numpy())), mesh, joints_mm


def _evaluate(model, x):
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return out


def test_tiny_model_overfits_32_samples(body_615, graph_cache):
    torch.manual_seed(0)
    x, gt_mesh, gt_joints = _samples(body_615, 32, seed=0)
    cfg = load_config(
        TINY_CONFIG,
        ["model.body.topology=notoes_collapse5pc", "model.meshnet.level_channels=[[32,32],[32,32],[32,32]]"],
    )
    assert cfg.loss.edge_start_epoch >= 1  # one epoch below: the edge loss waits, as in the original schedule
    model = build_model(cfg, body=body_615, cache_dir=graph_cache)
    loss_fn = Pose2MeshLoss(cfg.loss, body_615.faces)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    start = _evaluate(model, x)
    mpvpe0, lift0 = mpvpe(start.mesh, gt_mesh), mpjpe(start.joints_lifted, gt_joints)
    mean_mesh = mpvpe(gt_mesh.mean(0, keepdim=True).expand_as(gt_mesh), gt_mesh)
    for _ in range(STEPS):
        out = model(x)
        losses = loss_fn(out, mesh=gt_mesh, joints=gt_joints, lifted=gt_joints, epoch=0)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    end = _evaluate(model, x)
    final = mpvpe(end.mesh, gt_mesh)
    assert np.isfinite(final)
    assert final < 0.5 * mpvpe0, f"MPVPE {mpvpe0:.1f} -> {final:.1f} mm"
    # it fits the individual bodies, not just their average shape
    assert final < 0.6 * mean_mesh, f"MPVPE {final:.1f} mm vs {mean_mesh:.1f} mm for the mean mesh"
    assert mpjpe(end.joints_from_mesh, gt_joints) < 0.5 * mpjpe(start.joints_from_mesh, gt_joints)
    assert mpjpe(end.joints_lifted, gt_joints) < 0.5 * lift0
    assert "edge" in losses and not losses["edge"].requires_grad


def test_sample_geometry(body_615):
    x, mesh, joints = _samples(body_615, 4, seed=1)
    assert x.shape == (4, 17, 2) and mesh.shape == (4, 615, 3)
    torch.testing.assert_close(joints[:, 0], torch.zeros(4, 3))  # root-relative
    # camera axes: the head is above the pelvis (negative y) and the body spans about 1.2-2 m
    assert (joints[:, 10, 1] < -300).all()
    height = mesh[..., 1].amax(1) - mesh[..., 1].amin(1)
    assert ((height > 700) & (height < 2300)).all()
