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


# ------------------------------------------------------------------------------------------------ mesh quality

_TETRA = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 100.0]])
_TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_edge_length_error_is_relative_and_rigid_invariant():
    from p2m.pose2mesh.metrics import edge_length_error, mesh_edges

    gt = _TETRA[None]
    assert len(mesh_edges(_TETRA_FACES)) == 6
    assert edge_length_error(gt, gt, _TETRA_FACES) == 0.0
    assert edge_length_error(gt * 1.1, gt, _TETRA_FACES) == pytest.approx(0.1)
    rot = Rotation.from_rotvec([0.3, -1.0, 0.5]).as_matrix()
    moved = gt @ rot.T + [5.0, -7.0, 300.0]
    assert edge_length_error(moved, gt, _TETRA_FACES) == pytest.approx(0.0, abs=1e-12)
    spiky = gt.copy()
    spiky[0, 3, 2] = 200.0  # apex twice as high: edges 0-3 +100 %, 1-3 and 2-3 from 141.4 to 223.6 mm
    expected = (1.0 + 2 * (np.sqrt(200**2 + 100**2) / np.sqrt(2 * 100**2) - 1)) / 6
    assert edge_length_error(spiky, gt, _TETRA_FACES) == pytest.approx(expected)
    per = edge_length_error(np.concatenate([gt, spiky]), np.concatenate([gt, gt]), _TETRA_FACES, reduce=False)
    assert per.shape == (2,) and per[0] == 0.0 and per[1] == pytest.approx(expected)


def test_normal_deviation_share_counts_faces_beyond_the_angle():
    from p2m.pose2mesh.metrics import normal_deviation_share

    tri = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    gt = np.concatenate([tri, tri + [0.0, 0.0, 50.0]])[None]
    assert normal_deviation_share(gt, gt, faces) == 0.0

    def tilted(deg: float) -> np.ndarray:
        pred = gt.copy()
        pred[0, 3:] = (tri @ Rotation.from_rotvec([np.radians(deg), 0.0, 0.0]).as_matrix().T) + [
            0.0,
            0.0,
            50.0,
        ]
        return pred

    assert normal_deviation_share(tilted(50.0), gt, faces) == 0.0
    assert normal_deviation_share(tilted(70.0), gt, faces) == pytest.approx(0.5)
    assert normal_deviation_share(tilted(70.0), gt, faces, threshold_deg=80.0) == 0.0
    flipped = gt.copy()
    flipped[0, :3] = tri[[0, 2, 1]]  # an inside-out face: 180 degrees
    degenerate = gt.copy()
    degenerate[0, 3:] = 0.0  # a face collapsed to a point has no normal: it counts
    assert normal_deviation_share(flipped, gt, faces) == pytest.approx(0.5)
    assert normal_deviation_share(degenerate, gt, faces) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected equal shapes"):
        normal_deviation_share(gt[:, :5], gt, faces)


# ------------------------------------------------------------------------------------------------ MRPE


def _scene(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rel = rng.normal(0.0, 250.0, (n, 17, 3))
    rel -= rel[:, :1]
    root = np.stack([rng.uniform(-800, 800, n), rng.uniform(-500, 500, n), rng.uniform(3000, 7000, n)], -1)
    cam = np.stack(
        [
            rng.uniform(900, 1500, n),
            rng.uniform(900, 1500, n),
            rng.uniform(400, 600, n),
            rng.uniform(400, 600, n),
        ],
        -1,
    )
    xyz = rel + root[:, None]
    uv = xyz[..., :2] / xyz[..., 2:] * cam[:, None, :2] + cam[:, None, 2:]
    return rel, root, cam, uv, rng


def test_root_from_projection_recovers_the_root():
    from p2m.pose2mesh.metrics import root_from_projection

    rel, root, cam, uv, rng = _scene(64)
    exact = root_from_projection(uv, rel, cam)
    assert mrpe(exact, root) < 1e-6  # mm
    assert (
        np.abs(root_from_projection(torch.tensor(uv), torch.tensor(rel), torch.tensor(cam)) - exact).max()
        < 1e-6
    )
    # 2 px of detector-like noise at 3-7 m: tens of mm, mostly in depth
    noisy = root_from_projection(uv + rng.normal(0.0, 2.0, uv.shape), rel, cam)
    err = noisy - root
    assert 1.0 < mrpe(noisy, root) < 60.0
    assert np.abs(err[:, 2]).mean() > np.abs(err[:, :2]).mean()
    # a joint that is far off but weighted 0 does not matter; weighted 1 it does
    bad = uv.copy()
    bad[:, 5] += 200.0
    weights = np.ones(uv.shape[:2])
    weights[:, 5] = 0.0
    assert mrpe(root_from_projection(bad, rel, cam, weights), root) < 1e-6
    assert mrpe(root_from_projection(bad, rel, cam), root) > 50.0
    # a prediction 10 % too large puts the person about 10 % too far
    far = root_from_projection(uv, rel * 1.1, cam)
    assert np.median(far[:, 2] / root[:, 2]) == pytest.approx(1.1, abs=0.02)
    with pytest.raises(ValueError, match="expected"):
        root_from_projection(uv, rel[:, :16], cam)
