"""Evaluation metrics in millimetres: MPJPE, PA-MPJPE (similarity Procrustes), MPVPE and MRPE.

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
