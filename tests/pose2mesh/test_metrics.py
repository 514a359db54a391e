"""Metrics: cross-check against other projects' numbers, and the Procrustes properties."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from p2m.joints import H36M_EVAL_14
from p2m.pose2mesh.metrics import mpjpe, mpvpe, mrpe, pa_mpjpe, procrustes_align

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "external-fixtures" / "mmpose-h36m"


@pytest.fixture(scope="module")
def metric_case():
    case, expected = FIXTURE / "metric_case.json", FIXTURE / "expected_metrics.json"
    if not case.exists() or not expected.exists():
        pytest.skip(f"shared fixture {FIXTURE} is absent (metric_case.json / expected_metrics.json)")
    d = json.loads(case.read_text())
    # the arrays are in Pose2Mesh/VideoPose3D order (right side first) whatever the listed names say, which is
    # how the expected numbers were computed
    return np.array(d["pred_rel_mm"]), np.array(d["gt_rel_mm"]), json.loads(expected.read_text())


def test_cross_check_against_videopose3d_and_pose2mesh(metric_case):
    pred, gt, exp = metric_case
    assert mpjpe(pred, gt) == pytest.approx(exp["videopose3d_mpjpe_17j_mm"], abs=1e-3)
    assert pa_mpjpe(pred, gt) == pytest.approx(exp["videopose3d_p_mpjpe_17j_mm"], abs=1e-3)
    assert mpjpe(pred, gt, H36M_EVAL_14) == pytest.approx(exp["pose2mesh_mpjpe_14j_mm"], abs=1e-3)
    assert pa_mpjpe(pred, gt, H36M_EVAL_14) == pytest.approx(exp["pose2mesh_pa_mpjpe_14j_mm"], abs=1e-3)
    # torch input, and root alignment (the poses are already pelvis-relative)
    assert mpjpe(torch.tensor(pred), torch.tensor(gt), H36M_EVAL_14, root=0) == pytest.approx(
        exp["pose2mesh_mpjpe_14j_mm"], abs=1e-3
    )
    per_sample = pa_mpjpe(pred, gt, H36M_EVAL_14, reduce=False)
    assert per_sample.shape == (4,) and per_sample.mean() == pytest.approx(
        exp["pose2mesh_pa_mpjpe_14j_mm"], abs=1e-3
    )


def _poses(n=8, j=17, seed=0):
    return np.random.default_rng(seed).normal(scale=300.0, size=(n, j, 3))


def test_pa_removes_exactly_a_similarity_transform():
    gt = _poses()
    rot = Rotation.random(8, random_state=1).as_matrix()
    pred = 1.7 * np.einsum("nij,nkj->nki", rot, gt) + np.array([100.0, -50.0, 2000.0])
    assert mpjpe(pred, gt) > 100
    assert pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-8)


def test_pa_does_not_reflect():
    gt = _poses(seed=2)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])  # a reflection is not a similarity transform
    aligned = procrustes_align(mirrored, gt)
    for a, m in zip(aligned, mirrored):
        # recover the fitted linear map c R from the aligned points: it must be a proper rotation (det > 0)
        lin, *_ = np.linalg.lstsq(m - m.mean(0), a - a.mean(0), rcond=None)
        assert np.linalg.det(lin) > 0
    # without the fix the mirror image would be matched exactly
    assert pa_mpjpe(mirrored, gt) > 50.0


def test_subset_root_and_errors():
    gt = _poses(2)
    pred = gt.copy()
    pred[:, 5] += [30.0, 40.0, 0.0]  # 50 mm on one joint
    assert mpjpe(pred, gt) == pytest.approx(50.0 / 17)
    assert mpjpe(pred, gt, joints=[5]) == pytest.approx(50.0)
    assert mpjpe(pred, gt, joints=[0, 1]) == 0.0
    assert mpjpe(pred + 10.0, gt, root=0) == pytest.approx(50.0 / 17)  # translation removed by the root
    with pytest.raises(ValueError, match="expected equal shapes"):
        mpjpe(pred[:, :16], gt)
    with pytest.raises(ValueError, match="expected"):
        mpjpe(pred[..., :2], gt[..., :2])


def test_mpvpe_and_mrpe():
    gt = _poses(3, 100)
    pred = gt + np.array([0.0, 0.0, 7.0])
    assert mpvpe(pred, gt) == pytest.approx(7.0)
    assert mpvpe(pred, gt, root_pred=pred[:, 0], root_gt=gt[:, 0]) == pytest.approx(0.0, abs=1e-9)
    assert mpvpe(torch.tensor(pred), torch.tensor(gt), reduce=False).shape == (3,)
    roots = np.array([[0.0, 0.0, 4000.0], [100.0, 0.0, 5000.0]])
    assert mrpe(roots + [[3.0, 4.0, 0.0], [0.0, 0.0, -10.0]], roots) == pytest.approx(7.5)
    with pytest.raises(ValueError):
        mrpe(roots[None], roots[None])
