"""Pose2Mesh losses: zero at the truth, units and weights from the config, masks, the edge-loss start."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import trimesh

from p2m.pose2mesh.config import LossConfig
from p2m.pose2mesh.losses import (
    Pose2MeshLoss,
    coord_loss,
    edge_length_loss,
    mesh_edges,
    mesh_targets,
    normal_loss,
)
from p2m.pose2mesh.model import Pose2MeshOutput


@pytest.fixture(scope="module")
def sphere():
    s = trimesh.creation.icosphere(subdivisions=2, radius=500.0)  # mm
    return torch.tensor(s.vertices, dtype=torch.float32), torch.tensor(s.faces, dtype=torch.int64)


def _output(mesh: torch.Tensor, lifted: torch.Tensor | None = None) -> Pose2MeshOutput:
    joints = mesh[:, :17]
    return Pose2MeshOutput(joints if lifted is None else lifted, mesh, joints)


def test_all_terms_vanish_at_the_truth(sphere):
    verts, faces = sphere
    gt = verts[None].repeat(2, 1, 1)
    loss = Pose2MeshLoss(LossConfig(edge_start_epoch=0), faces)
    out = loss(_output(gt), mesh=gt, joints=gt[:, :17], lifted=gt[:, :17], epoch=0)
    assert set(out) == {"vertex", "normal", "edge", "joint", "lift", "total"}
    for k, v in out.items():
        assert float(v) == pytest.approx(0.0, abs=1e-6), k


def test_units_and_weights(sphere):
    verts, faces = sphere
    gt = verts[None]
    shifted = gt + torch.tensor([3.0, 0.0, 0.0])  # 3 mm along x: normals and edges unchanged
    cfg = LossConfig(vertex=2.0, normal=0.1, edge=20.0, joint=1e-3, lift=0.5, edge_start_epoch=0)
    out = Pose2MeshLoss(cfg, faces)(_output(shifted), mesh=gt, joints=gt[:, :17], lifted=gt[:, :17])
    assert float(out["vertex"]) == pytest.approx(0.001, rel=1e-4)  # metres: 3 mm on one of 3 coordinates
    assert float(out["joint"]) == pytest.approx(1.0, rel=1e-4)  # millimetres
    assert float(out["lift"]) == pytest.approx(1.0, rel=1e-4)
    assert float(out["normal"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["edge"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["total"]) == pytest.approx(2.0 * 0.001 + 1e-3 * 1.0 + 0.5 * 1.0, rel=1e-4)


def test_edge_loss_counts_from_its_start_epoch(sphere):
    verts, faces = sphere
    gt = verts[None]
    pred = (gt * 1.1).requires_grad_()  # scaled: edge lengths differ, normals do not
    loss = Pose2MeshLoss(
        LossConfig(vertex=0, normal=0, joint=0, lift=0, edge=20.0, edge_start_epoch=3), faces
    )
    before = loss(_output(pred), mesh=gt, epoch=2)
    after = loss(_output(pred), mesh=gt, epoch=3)
    edge_after = float(after["edge"].detach())
    assert float(before["edge"]) == pytest.approx(edge_after) and edge_after > 0
    assert float(before["total"]) == 0.0 and not before["edge"].requires_grad
    assert float(after["total"].detach()) == pytest.approx(20.0 * edge_after)
    after["total"].backward()
    assert pred.grad.abs().sum() > 0


def test_edge_loss_equals_the_face_edge_mean_on_a_closed_mesh(sphere):
    verts, faces = sphere
    gt = verts[None]
    pred = gt + torch.randn_like(gt) * 5
    edges = mesh_edges(faces)
    assert len(edges) == 3 * len(faces) // 2  # closed: every edge in two faces
    face_edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    torch.testing.assert_close(edge_length_loss(pred, gt, edges), edge_length_loss(pred, gt, face_edges))


def test_normal_loss_sees_bending_not_translation(sphere):
    verts, faces = sphere
    gt = verts[None]
    assert float(normal_loss(gt + 7.0, gt, faces)) == pytest.approx(0.0, abs=1e-6)
    bent = gt.clone()
    bent[..., 2] = bent[..., 2] * 0.2  # squash: faces tilt
    assert float(normal_loss(bent, gt, faces)) > 0.05


def test_masks_average_over_valid_samples_only():
    gt = torch.zeros(2, 4, 3)
    pred = gt.clone()
    pred[1] += 10.0  # the second sample is wrong...
    valid = torch.tensor([True, False])  # ...but invalid
    assert float(coord_loss(pred, gt, valid)) == 0.0
    pred[0] += 2.0
    assert float(coord_loss(pred, gt, valid)) == pytest.approx(2.0)  # valid elements only, not halved
    per_joint = torch.tensor([[True, True, False, False], [False, False, False, False]])
    assert float(coord_loss(pred, gt, per_joint)) == pytest.approx(2.0)
    assert float(coord_loss(pred, gt, torch.zeros(2, dtype=torch.bool))) == 0.0


@pytest.mark.parametrize(("form", "expected"), [("l1", 4.0), ("l2", np.sqrt(3 * 16.0)), ("smooth_l1", 3.5)])
def test_coordinate_loss_forms(form, expected):
    gt = torch.zeros(1, 2, 3)
    pred = gt + 4.0
    assert float(coord_loss(pred, gt, form=form, beta=1.0)) == pytest.approx(expected, rel=1e-5)


def test_weight_zero_skips_and_posenet_only():
    cfg = dataclasses.replace(LossConfig(), vertex=0, normal=0, edge=0, joint=0, lift=1.0)
    lifted = torch.randn(2, 17, 3, requires_grad=True)
    out = Pose2MeshLoss(cfg)(Pose2MeshOutput(lifted, None, None), lifted=torch.zeros(2, 17, 3))
    assert set(out) == {"lift", "total"}
    out["total"].backward()
    with pytest.raises(ValueError, match="faces"):
        Pose2MeshLoss(LossConfig())(_output(torch.zeros(1, 20, 3)), mesh=torch.zeros(1, 20, 3))


def test_mesh_targets_are_root_relative_mm():
    verts = torch.tensor([[[1.0, 2.0, 3.0], [1.5, 2.0, 3.0]]])
    joints = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])
    mesh, jts = mesh_targets(verts, joints)
    torch.testing.assert_close(mesh, torch.tensor([[[0.0, 0.0, 1000.0], [500.0, 0.0, 1000.0]]]))
    torch.testing.assert_close(jts[:, 0], torch.zeros(1, 3))
