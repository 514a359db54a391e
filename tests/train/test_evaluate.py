"""evaluate.py: the metric accumulator on known errors, per-action tables, merging rank states, the table text."""

from __future__ import annotations

import numpy as np
import torch

from p2m.pose2mesh.data import BatchInputs
from p2m.pose2mesh.evaluate import MetricAccumulator, format_result
from p2m.pose2mesh.model import Pose2MeshOutput


def _inputs(gt: torch.Tensor, mesh: torch.Tensor, actions: list[int], joints_valid=None, mesh_valid=None):
    n = gt.shape[0]
    return BatchInputs(
        pose2d=torch.zeros(n, 17, 2),
        joints=gt,
        joints_valid=torch.ones(n, dtype=torch.bool) if joints_valid is None else joints_valid,
        lifted=gt,
        mesh=mesh,
        mesh_valid=torch.ones(n, dtype=torch.bool) if mesh_valid is None else mesh_valid,
        keys=[f"synth_s001_a{a:03d}_sa001_c0001_f{i:06d}_p00" for i, a in enumerate(actions)],
        meta=None,
    )


def test_known_errors():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(6, 17, 3, generator=g) * 300
    gt = gt - gt[:, :1]
    mesh = torch.randn(6, 50, 3, generator=g) * 300
    shift = torch.tensor([30.0, 40.0, 0.0])  # 50 mm on every non-root joint after pelvis alignment
    pred = gt + shift
    pred[:, 0] = gt[:, 0]  # the pelvis is exact: every other joint is off by 50 mm
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    acc = MetricAccumulator()
    out = Pose2MeshOutput(joints_lifted=(gt @ rot.T) * 1.5, mesh=mesh + 10.0, joints_from_mesh=pred)
    valid = torch.tensor([True, True, True, True, True, False])
    acc.add(
        out,
        _inputs(
            gt,
            mesh,
            [2, 2, 3, 3, 3, 3],
            joints_valid=valid,
            mesh_valid=torch.tensor([True, True, True, False, True, True]),
        ),
    )
    res = MetricAccumulator.summarize([acc.state()], with_mesh=True)
    assert res["samples"] == 5 and res["mesh_samples"] == 4
    assert abs(res["mpjpe"] - 50.0) < 1e-6  # 14 joints, none of them the pelvis
    assert abs(res["mpjpe_17"] - 50.0 * 16 / 17) < 1e-6
    assert res["pa_mpjpe"] < 1e-6  # a translation is removed by the alignment
    # MPVPE: each mesh minus its own pelvis (pred: the regressed pelvis = gt pelvis = 0; the mesh is off by 10)
    assert abs(res["mpvpe"] - np.sqrt(3) * 10.0) < 1e-5
    # PoseNet's joints are a rotated and scaled copy: large MPJPE, but nothing left after Procrustes
    assert res["lifted_mpjpe"] > 100
    assert set(res["per_action"]) == {"2", "3"} and res["per_action"]["2"]["samples"] == 2
    assert res["per_action"]["3"]["samples"] == 3


def test_rank_states_merge_like_one():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(8, 17, 3, generator=g) * 200
    pred = gt + torch.randn(8, 17, 3, generator=g) * 20
    mesh = torch.randn(8, 30, 3, generator=g)
    whole, parts = MetricAccumulator(), [MetricAccumulator(), MetricAccumulator()]
    out = Pose2MeshOutput(pred, mesh, pred)
    whole.add(out, _inputs(gt, mesh, [1] * 8))
    for i, acc in enumerate(parts):
        sl = slice(4 * i, 4 * i + 4)
        acc.add(Pose2MeshOutput(pred[sl], mesh[sl], pred[sl]), _inputs(gt[sl], mesh[sl], [1] * 4))
    a = MetricAccumulator.summarize([whole.state()], with_mesh=True)
    b = MetricAccumulator.summarize([p.state() for p in parts], with_mesh=True)
    assert a.keys() == b.keys() and "per_action" not in a  # one action: no per-action table
    for k in ("mpjpe", "pa_mpjpe", "mpjpe_17", "pa_mpjpe_17", "mpvpe"):
        assert abs(a[k] - b[k]) < 1e-9
    text = format_result({"checkpoint": "c.pt", "epoch": 1, "step": 9, "split": "test", "input": "gt", **a})
    assert "MPJPE (14 joints)" in text and "MPVPE" in text
