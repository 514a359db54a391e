"""The weak-perspective camera of `p2m infer`, fitted between the predicted 3D joints and the input 2D joints.

The network predicts root-relative camera-frame millimetres (x right, y down, z forward) with no camera. A
weak-perspective camera ``u = s x + tx, v = s y + ty`` (s in px/mm; (tx, ty) where the root lands) is fitted by
weighted least squares between the projected predicted joints and the known input joints (closed form).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["WeakPerspective", "fit_weak_perspective"]


@dataclass(frozen=True)
class WeakPerspective:
    """A weak-perspective camera: ``(u, v) = scale * (x, y) + (tx, ty)`` for camera-frame mm (x, y, z).

    Attributes:
        scale: pixels per millimetre.
        tx, ty: pixel position of the root (the origin of the root-relative prediction).
        rms_px: root-mean-square distance (px) between the projected predicted joints and the input joints used
            in the fit.
        joints_used: number of input joints in the fit.
    """

    scale: float
    tx: float
    ty: float
    rms_px: float = 0.0
    joints_used: int = 0

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """(..., 3) camera-frame mm -> (..., 2) pixels."""
        p = np.asarray(points_mm, dtype=np.float64)
        return self.scale * p[..., :2] + np.array([self.tx, self.ty])

    def root_translation_mm(self, focal: Sequence[float], principal: Sequence[float]) -> np.ndarray:
        """The root's camera-frame position (mm) of a pinhole camera (focal px, principal point px) with this view.

        Depth ``z = f / s`` (mean of fx, fy); ``x = (tx - cx) z / fx``, ``y = (ty - cy) z / fy``.
        """
        fx, fy = float(focal[0]), float(focal[1])
        z = 0.5 * (fx + fy) / self.scale
        return np.array([(self.tx - principal[0]) * z / fx, (self.ty - principal[1]) * z / fy, z])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "weak_perspective",
            "scale_px_per_mm": self.scale,
            "tx_px": self.tx,
            "ty_px": self.ty,
            "rms_px": self.rms_px,
            "joints_used": self.joints_used,
        }


def fit_weak_perspective(
    joints3d: np.ndarray, joints2d: np.ndarray, weights: np.ndarray | None = None
) -> WeakPerspective:
    """Least-squares ``min_{s, t} sum_j w_j |s X_j + t - p_j|^2`` (closed form).

    Args:
        joints3d: (J, 3) predicted camera-frame joints, mm.
        joints2d: (J, 2) input joints, px (NaN where missing).
        weights: (J,) non-negative weights (default 1 where ``joints2d`` is finite).

    Returns:
        The camera; ``scale`` is positive (if the best fit were not, the scale comes from the joints' spreads).

    Raises:
        ValueError: fewer than 2 joints with positive weight.
    """
    X = np.asarray(joints3d, dtype=np.float64)[:, :2]
    p = np.asarray(joints2d, dtype=np.float64)
    w = (
        np.isfinite(p).all(axis=1).astype(np.float64)
        if weights is None
        else np.asarray(weights, np.float64).copy()
    )
    w[~np.isfinite(p).all(axis=1) | ~np.isfinite(X).all(axis=1)] = 0.0
    if (w > 0).sum() < 2:
        raise ValueError(f"a weak-perspective fit needs at least 2 joints, got {(w > 0).sum()}")
    p0, X0 = np.nan_to_num(p), np.nan_to_num(X)
    wsum = w.sum()
    pm, Xm = (w[:, None] * p0).sum(0) / wsum, (w[:, None] * X0).sum(0) / wsum
    dX, dp = X0 - Xm, p0 - pm
    den = float((w[:, None] * dX * dX).sum())
    s = float((w[:, None] * dX * dp).sum()) / max(den, 1e-12)
    if not s > 0:
        s = float(np.sqrt((w[:, None] * dp * dp).sum() / max(den, 1e-12)))
        logger.debug(
            "the weak-perspective fit gave a non-positive scale; using the ratio of spreads (%.4g)", s
        )
    t = pm - s * Xm
    resid = np.linalg.norm(s * X0 + t - p0, axis=1)
    rms = float(np.sqrt((w * resid**2).sum() / wsum))
    return WeakPerspective(s, float(t[0]), float(t[1]), rms, int((w > 0).sum()))
