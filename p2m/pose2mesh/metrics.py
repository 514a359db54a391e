"""Evaluation metrics: MPJPE, PA-MPJPE (similarity Procrustes), MPVPE and MRPE in millimetres; mesh quality
(relative edge-length error, share of flipped-looking faces); the camera-frame root from 2D + root-relative 3D.

All functions take numpy arrays or torch tensors (any device; computed in float64 numpy) and return a float,
the mean over samples x joints, or the per-sample means with ``reduce=False``. With equal joint counts per
sample, the mean over samples x joints equals the mean of per-sample means (what Pose2Mesh's ``evaluate`` and
VideoPose3D's ``p_mpjpe`` print). Root alignment is the caller's choice: ``root=k`` subtracts joint ``k`` of each
pose first (Pose2Mesh's protocol aligns at the pelvis, then scores the 14 joints of
:data:`p2m.joints.H36M_EVAL_14`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _as_numpy(x: Any, name: str, last: int = 3) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (any dtype, bfloat16 included), without importing torch
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != last:
        raise ValueError(f"{name}: shape {a.shape}, expected (..., {last})")
    return a


def _prepare(
    pred: Any, gt: Any, joints: Sequence[int] | None, root: int | None
) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_numpy(pred, "pred"), _as_numpy(gt, "gt")
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and gt {g.shape}: expected equal shapes (N, J, 3)")
    if root is not None:
        p = p - p[:, root : root + 1]
        g = g - g[:, root : root + 1]
    if joints is not None:
        idx = list(joints)
        p, g = p[:, idx], g[:, idx]
    return p, g


def _reduce(per_joint: np.ndarray, reduce: bool) -> float | np.ndarray:
    return float(per_joint.mean()) if reduce else per_joint.mean(axis=-1)


def mpjpe(
    pred: Any, gt: Any, joints: Sequence[int] | None = None, root: int | None = None, reduce: bool = True
) -> float | np.ndarray:
    """Mean per-joint position error: mean Euclidean distance.

    Args:
        pred: (N, J, 3) predicted joints, mm.
        gt: (N, J, 3) ground truth, mm.
        joints: subset of joint indices to score (e.g. ``H36M_EVAL_14``); None = all.
        root: subtract this joint from each pose first (before taking the subset); None = no alignment.
        reduce: False returns the (N,) per-sample means.
    """
    p, g = _prepare(pred, gt, joints, root)
    return _reduce(np.linalg.norm(p - g, axis=-1), reduce)


def mpvpe(
    pred: Any, gt: Any, root_pred: Any = None, root_gt: Any = None, reduce: bool = True
) -> float | np.ndarray:
    """Mean per-vertex position error: mean Euclidean distance over (N, V, 3) meshes in mm.

    Args:
        pred: (N, V, 3) predicted vertices.
        gt: (N, V, 3) ground-truth vertices.
        root_pred: optional (N, 3) point subtracted from ``pred`` (its own root joint, as the original did).
        root_gt: optional (N, 3) point subtracted from ``gt``.
        reduce: False returns the (N,) per-sample means.
    """
    p, g = _as_numpy(pred, "pred"), _as_numpy(gt, "gt")
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and gt {g.shape}: expected equal shapes (N, V, 3)")
    if root_pred is not None:
        p = p - _as_numpy(root_pred, "root_pred")[:, None]
    if root_gt is not None:
        g = g - _as_numpy(root_gt, "root_gt")[:, None]
    return _reduce(np.linalg.norm(p - g, axis=-1), reduce)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-align each predicted pose to its ground truth (Umeyama).

    Finds scale ``c``, rotation ``R`` (det +1: when the best orthogonal map is a reflection, the sign of the
    smallest singular direction is flipped) and translation ``t`` minimising ``|c R p + t - g|^2``.

    Args:
        pred: (N, J, 3).
        gt: (N, J, 3).

    Returns:
        (N, J, 3) aligned prediction.
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    mu_p, mu_g = p.mean(axis=1, keepdims=True), g.mean(axis=1, keepdims=True)
    p0, g0 = p - mu_p, g - mu_g
    var_p = (p0**2).sum(axis=(1, 2))
    cov = np.einsum("nji,njk->nik", g0, p0)  # (N, 3, 3): sum_j g_j p_j^T
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d[d == 0] = 1.0
    fix = np.ones_like(s)
    fix[:, -1] = d
    rot = u @ (fix[:, :, None] * vt)  # U diag(1, 1, d) V^T
    scale = (s * fix).sum(axis=1) / np.maximum(var_p, 1e-12)
    return scale[:, None, None] * np.einsum("nik,njk->nji", rot, p0) + mu_g


def pa_mpjpe(
    pred: Any, gt: Any, joints: Sequence[int] | None = None, root: int | None = None, reduce: bool = True
) -> float | np.ndarray:
    """MPJPE after per-sample similarity Procrustes alignment on the scored joints.

    Args:
        pred: (N, J, 3) predicted joints, mm.
        gt: (N, J, 3) ground truth, mm.
        joints: subset to align and score (Pose2Mesh: ``H36M_EVAL_14``); None = all.
        root: optional root joint subtracted first (does not change the result; kept for symmetry).
        reduce: False returns the (N,) per-sample means.
    """
    p, g = _prepare(pred, gt, joints, root)
    return _reduce(np.linalg.norm(procrustes_align(p, g) - g, axis=-1), reduce)


def mrpe(pred_root: Any, gt_root: Any, reduce: bool = True) -> float | np.ndarray:
    """Mean root position error: mean Euclidean distance of (N, 3) absolute root positions (camera frame, mm)."""
    p, g = _as_numpy(pred_root, "pred_root"), _as_numpy(gt_root, "gt_root")
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"pred_root {p.shape} and gt_root {g.shape}: expected equal shapes (N, 3)")
    err = np.linalg.norm(p - g, axis=-1)
    return float(err.mean()) if reduce else err


def mesh_edges(faces: Any) -> np.ndarray:
    """Unique undirected edges (E, 2) (i < j) of a triangle mesh's (F, 3) faces."""
    f = np.asarray(faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces: shape {f.shape}, expected (F, 3)")
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def _meshes(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_numpy(pred, "pred"), _as_numpy(gt, "gt")
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and gt {g.shape}: expected equal shapes (N, V, 3)")
    return p, g


def edge_length_error(pred: Any, gt: Any, faces: Any, reduce: bool = True) -> float | np.ndarray:
    """Mean relative edge-length error ``|l_pred - l_gt| / l_gt`` over all mesh edges (a fraction, not mm).

    Smooth, untorn meshes keep it small whatever their pose error; spikes and tears make it large. Translation,
    rotation and unit do not change it.

    Args:
        pred: (N, V, 3) predicted vertices. gt: (N, V, 3) ground truth (same topology).
        faces: (F, 3) triangle indices.
        reduce: False returns the (N,) per-sample means.
    """
    p, g = _meshes(pred, gt)
    e = mesh_edges(faces)
    lp = np.linalg.norm(p[:, e[:, 0]] - p[:, e[:, 1]], axis=-1)
    lg = np.linalg.norm(g[:, e[:, 0]] - g[:, e[:, 1]], axis=-1)
    return _reduce(np.abs(lp - lg) / np.maximum(lg, 1e-12), reduce)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals (N, F, 3) of (N, V, 3) vertices' triangles (zero vectors for degenerate faces)."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    n = np.cross(v1 - v0, v2 - v0)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0, n / np.maximum(norm, 1e-300), 0.0)


def normal_deviation_share(
    pred: Any, gt: Any, faces: Any, threshold_deg: float = 60.0, reduce: bool = True
) -> float | np.ndarray:
    """Share of faces whose normal deviates by more than ``threshold_deg`` from the ground truth's (a fraction).

    A degenerate predicted face (no normal) counts as deviating. Rotation-sensitive on purpose: the prediction is
    in the ground truth's camera frame (root-relative), as Pose2Mesh's normal loss assumes.

    Args:
        pred: (N, V, 3). gt: (N, V, 3). faces: (F, 3).
        threshold_deg: the angle above which a face counts.
        reduce: False returns the (N,) per-sample shares.
    """
    p, g = _meshes(pred, gt)
    f = np.asarray(faces.detach().cpu().numpy() if hasattr(faces, "detach") else faces, dtype=np.int64)
    cos = (face_normals(p, f) * face_normals(g, f)).sum(-1)
    bad = cos < np.cos(np.radians(threshold_deg))
    return _reduce(bad.astype(np.float64), reduce)


def root_from_projection(joints2d: Any, joints3d_rel: Any, cam: Any, weights: Any = None) -> np.ndarray:
    """The camera-frame root position that best explains 2D joints given root-relative 3D joints (pinhole).

    With ``X_j = T + r_j`` and normalised image coordinates ``x_j = (u_j - cx) / fx`` (``y_j`` likewise), the
    projection ``x_j = X_j / Z_j`` is linear in ``T``: ``T_x - x_j T_z = x_j r_jz - r_jx`` (and for y). The
    (weighted) least-squares solution of these 2J equations is returned; exact 2D and 3D give the exact root.

    Args:
        joints2d: (N, J, 2) pixels (extra channels ignored).
        joints3d_rel: (N, J, 3) root-relative camera-frame joints, mm (e.g. the predicted ones).
        cam: (N, 4) intrinsics ``[fx, fy, cx, cy]`` (px).
        weights: (N, J) non-negative weights (e.g. visibility > 0); None = all 1.

    Returns:
        (N, 3) root positions, camera frame, mm.
    """
    uv = np.asarray(
        joints2d.detach().cpu().double().numpy() if hasattr(joints2d, "detach") else joints2d,
        dtype=np.float64,
    )[..., :2]
    r = _as_numpy(joints3d_rel, "joints3d_rel")
    k = _as_numpy(cam, "cam", last=4)
    if uv.ndim != 3 or r.shape != (*uv.shape[:2], 3) or k.shape != (uv.shape[0], 4):
        raise ValueError(
            f"joints2d {uv.shape}, joints3d_rel {r.shape}, cam {k.shape}: expected (N, J, 2), "
            "(N, J, 3), (N, 4)"
        )
    w = np.ones(uv.shape[:2]) if weights is None else _as_numpy(weights, "weights", last=uv.shape[1])
    x = (uv[..., 0] - k[:, None, 2]) / k[:, None, 0]
    y = (uv[..., 1] - k[:, None, 3]) / k[:, None, 1]
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    rows_x = np.stack([ones, zeros, -x], axis=-1)  # (N, J, 3)
    rows_y = np.stack([zeros, ones, -y], axis=-1)
    a = np.concatenate([rows_x, rows_y], axis=1)  # (N, 2J, 3)
    b = np.concatenate([x * r[..., 2] - r[..., 0], y * r[..., 2] - r[..., 1]], axis=1)  # (N, 2J)
    sw = np.sqrt(np.clip(np.concatenate([w, w], axis=1), 0.0, None))
    a, b = a * sw[..., None], b * sw
    ata = np.einsum("nki,nkj->nij", a, a)
    atb = np.einsum("nki,nk->ni", a, b)
    return np.linalg.solve(ata, atb[..., None])[..., 0]
