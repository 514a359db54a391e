"""Pose2Mesh training losses: vertex, surface normal, edge length, mesh->joint and lifting, weighted by config.

Units follow the original so that its weights carry over (:class:`p2m.pose2mesh.config.LossConfig`): the model
outputs millimetres, and the vertex and edge losses are taken in metres, the joint and lifting losses in mm.

Decisions: masked means divide by the number of *valid* elements (the original multiplied invalid ones by 0 but
still divided by all of them, which shrinks the loss of batches with invalid samples); the edge loss runs over
the mesh's unique edges (on a closed mesh every edge is in exactly two faces, so this equals the original's mean
over the three edges of every face).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from p2m.pose2mesh.config import LossConfig
from p2m.pose2mesh.model import Pose2MeshOutput

logger = logging.getLogger(__name__)

_MM_PER_M = 1000.0


def mesh_edges(faces: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Unique undirected edges (E, 2) int64 (i < j) of a triangle mesh's (F, 3) faces."""
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0)


def _masked_mean(per_item: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_item`` (B, ...) over the entries whose mask (B,) or (B, N) is true (0 when none is)."""
    if valid is None:
        return per_item.mean()
    m = valid.to(per_item.dtype)
    while m.dim() < per_item.dim():
        m = m.unsqueeze(-1)
    m = m.expand_as(per_item)
    return (per_item * m).sum() / m.sum().clamp_min(1.0)


def coord_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    form: str = "l1",
    beta: float = 1.0,
) -> torch.Tensor:
    """Coordinate loss between point sets.

    Args:
        pred: (B, N, 3) prediction.
        target: (B, N, 3) ground truth, same unit.
        valid: (B,) or (B, N) mask, or None.
        form: "l1" (mean absolute coordinate error, the original), "l2" (mean Euclidean distance per point) or
            "smooth_l1" (Huber per coordinate with threshold ``beta``).
        beta: smooth-L1 threshold, in the unit of the inputs.

    Returns:
        Scalar tensor.
    """
    if form == "l1":
        per = (pred - target).abs()
    elif form == "l2":
        per = (pred - target).norm(dim=-1)
    elif form == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    else:
        raise ValueError(f"loss form {form!r} is not one of ['l1', 'l2', 'smooth_l1']")
    return _masked_mean(per, valid)


def normal_loss(
    pred: torch.Tensor, target: torch.Tensor, faces: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean ``|<e_pred, n_gt>|`` over faces and their 3 predicted unit edges (unitless).

    Args:
        pred: (B, V, 3) predicted vertices (any unit).
        target: (B, V, 3) ground-truth vertices.
        faces: (F, 3) int64.
        valid: (B,) mask or None.
    """
    t0, t1, t2 = (target[:, faces[:, i]] for i in range(3))
    n = F.normalize(torch.cross(t1 - t0, t2 - t0, dim=-1), dim=-1, eps=1e-9)
    p0, p1, p2 = (pred[:, faces[:, i]] for i in range(3))
    cos = torch.stack(
        [
            (F.normalize(p1 - p0, dim=-1, eps=1e-9) * n).sum(-1).abs(),
            (F.normalize(p2 - p0, dim=-1, eps=1e-9) * n).sum(-1).abs(),
            (F.normalize(p2 - p1, dim=-1, eps=1e-9) * n).sum(-1).abs(),
        ],
        dim=-1,
    )  # (B, F, 3)
    return _masked_mean(cos, valid)


def edge_length_loss(
    pred: torch.Tensor, target: torch.Tensor, edges: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean ``| |e_pred| - |e_gt| |`` over the mesh edges, in the unit of the inputs.

    Args:
        pred: (B, V, 3).
        target: (B, V, 3).
        edges: (E, 2) int64 unique edges.
        valid: (B,) mask or None.
    """
    lp = (pred[:, edges[:, 0]] - pred[:, edges[:, 1]]).norm(dim=-1)
    lt = (target[:, edges[:, 0]] - target[:, edges[:, 1]]).norm(dim=-1)
    return _masked_mean((lp - lt).abs(), valid)


class Pose2MeshLoss(nn.Module):
    """All Pose2Mesh losses with the config's weights; terms with weight 0 (or no target) are skipped.

    Args:
        cfg: weights, coordinate-loss form, edge-loss start epoch.
        faces: (F, 3) faces of the predicted mesh (None for PoseNet-only training).
    """

    def __init__(self, cfg: LossConfig, faces: torch.Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if faces is not None:
            f = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
            self.register_buffer("faces", f, persistent=False)
            self.register_buffer("edges", mesh_edges(f), persistent=False)
        else:
            self.faces = self.edges = None

    def forward(
        self,
        output: Pose2MeshOutput,
        *,
        mesh: torch.Tensor | None = None,
        joints: torch.Tensor | None = None,
        lifted: torch.Tensor | None = None,
        mesh_valid: torch.Tensor | None = None,
        joints_valid: torch.Tensor | None = None,
        lift_valid: torch.Tensor | None = None,
        epoch: float = 0,
    ) -> dict[str, torch.Tensor]:
        """Compute the weighted losses.

        Args:
            output: the model's prediction (millimetres).
            mesh: (B, V, 3) root-relative GT mesh, mm.
            joints: (B, 17, 3) root-relative GT H36M joints for the mesh->joint loss, mm.
            lifted: (B, J, 3) root-relative GT joints of the input set for the lifting loss, mm.
            mesh_valid, joints_valid, lift_valid: masks (B,) or (B, N), or None for all valid.
            epoch: 0-based epoch, fractional within it (the edge loss counts from ``cfg.edge_start_epoch``; the
                normal and edge losses ramp in over ``cfg.ramp_epochs``).

        Returns:
            ``{"vertex", "normal", "edge", "joint", "lift"}``: the unweighted terms that ran (detached
            ``edge`` before its start epoch), and ``"total"``, the weighted sum that back-propagates.
        """
        c = self.cfg
        out: dict[str, torch.Tensor] = {}
        total = output.joints_lifted.new_zeros(())
        beta_m, beta_mm = 0.01, 10.0
        has_mesh = output.mesh is not None and mesh is not None
        ramp = self.ramp  # weights of the normal and edge losses while they enter (1 = full)
        if has_mesh and c.vertex > 0:
            out["vertex"] = coord_loss(
                output.mesh / _MM_PER_M, mesh / _MM_PER_M, mesh_valid, c.form_of("vertex"), beta_m
            )
            total = total + c.vertex * out["vertex"]
        if has_mesh and c.normal > 0:
            out["normal"] = normal_loss(output.mesh, mesh, self._need(self.faces), mesh_valid)
            total = total + c.normal * ramp(epoch, 0) * out["normal"]
        if has_mesh and c.edge > 0:
            active = epoch >= c.edge_start_epoch
            with torch.set_grad_enabled(active and torch.is_grad_enabled()):
                out["edge"] = edge_length_loss(
                    output.mesh / _MM_PER_M, mesh / _MM_PER_M, self._need(self.edges), mesh_valid
                )
            if active:
                total = total + c.edge * ramp(epoch, c.edge_start_epoch) * out["edge"]
        if output.joints_from_mesh is not None and joints is not None and c.joint > 0:
            out["joint"] = coord_loss(
                output.joints_from_mesh, joints, joints_valid, c.form_of("joint"), beta_mm
            )
            total = total + c.joint * out["joint"]
        if lifted is not None and c.lift > 0:
            out["lift"] = coord_loss(output.joints_lifted, lifted, lift_valid, c.form_of("lift"), beta_mm)
            total = total + c.lift * out["lift"]
        out["total"] = total
        return out

    def ramp(self, epoch: float, start: float) -> float:
        """Weight factor of a loss term that enters at ``start``: grows linearly from 0 to 1 over
        ``cfg.ramp_epochs`` (1 at once when that is 0, the original); ``epoch`` may be fractional."""
        if self.cfg.ramp_epochs <= 0:
            return 1.0 if epoch >= start else 0.0
        return float(min(1.0, max(0.0, (epoch - start) / self.cfg.ramp_epochs)))

    @staticmethod
    def _need(t: torch.Tensor | None) -> torch.Tensor:
        if t is None:
            raise ValueError("mesh losses need the faces: build Pose2MeshLoss(cfg, faces=body.faces)")
        return t


def mesh_targets(
    vertices: torch.Tensor, joints: torch.Tensor, root: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth in the model's frame from a body-model output: root-relative millimetres.

    Args:
        vertices: (B, V, 3) body-model vertices, metres (camera axes).
        joints: (B, 17, 3) the body's regressed H36M joints, metres.
        root: root joint index (Pelvis).

    Returns:
        (mesh, joints) in mm, both minus the regressed root joint (the original's ``mesh - joint_h36m[:1]``).
    """
    r = joints[:, root : root + 1]
    return (vertices - r) * _MM_PER_M, (joints - r) * _MM_PER_M
