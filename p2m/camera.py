"""Cameras of the dataset layout: world <-> camera, projection with Human3.6M's distortion model, bboxes.

Conventions (DESIGN.md, Contract 1): world and camera coordinates are in millimetres; the camera frame is
x right, y down, z forward (OpenCV); ``X_cam = R @ X_world + t``; pixels are ``u = f * x' + c`` where
``x'`` is the (optionally distorted) normalised coordinate. Every function works on ``(..., 3)`` arrays.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2m.errors import LayoutError, short_repr

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | Sequence[float] | Sequence[Sequence[float]]

# The cameras p2m synth and the trainer's synthetic source draw (p2m.annotate.synth, p2m.pose2mesh.synthetic).
H36M_IMAGE_SIZE = (1000, 1000)
H36M_FOCAL = 1145.0
#: Human3.6M-like rig: camera distance from the target (mm), lens height (mm), target (mm, world), target jitter
#: (mm, each axis), focal jitter (factor) and principal-point jitter (px).
H36M_RIG = {"distance": (4500.0, 5500.0), "height": (1300.0, 1900.0), "target": (0.0, 0.0, 900.0),
            "target_jitter": 150.0, "focal_jitter": 0.03, "centre_jitter": 8.0, "azimuth_jitter": 0.25}  # fmt: skip
#: Random cameras: focal in image sizes, share of the image height the person fills, elevation (degrees),
#: principal-point jitter (image sizes) and target jitter (mm).
RANDOM_CAMERA = {"focal": (0.9, 1.8), "fill": (0.45, 0.85), "elevation_deg": (-5.0, 30.0), "centre_jitter": 0.02,
                 "target_jitter": 100.0, "margin_mm": 300.0}  # fmt: skip


def _vec(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer too large for a float
        raise LayoutError(
            f"camera field {name!r}: {short_repr(value)} is not {_shape_str(shape)} numbers"
        ) from exc
    if not np.all(np.isfinite(arr)):
        raise LayoutError(f"camera field {name!r}: {short_repr(value)} has non-finite values")
    arr.setflags(write=False)
    return arr


def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated camera.

    Attributes:
        R: (3, 3) rotation world -> camera.
        t: (3,) translation in mm: ``X_cam = R @ X_world + t``.
        f: (2,) focal lengths fx, fy in px.
        c: (2,) principal point cx, cy in px.
        k: (3,) radial coefficients k1, k2, k3 of Human3.6M's model, or None.
        p: (2,) tangential coefficients **p1, p2** (in that order; VideoPose3D stores [p2, p1]), or None.
    """

    R: np.ndarray
    t: np.ndarray
    f: np.ndarray
    c: np.ndarray
    k: np.ndarray | None = None
    p: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "R", _vec(self.R, (3, 3), "R"))
        set_(self, "t", _vec(self.t, (3,), "t"))
        set_(self, "f", _vec(self.f, (2,), "f"))
        set_(self, "c", _vec(self.c, (2,), "c"))
        if self.k is not None:
            set_(self, "k", _vec(self.k, (3,), "k"))
        if self.p is not None:
            set_(self, "p", _vec(self.p, (2,), "p"))
        if np.any(self.f <= 0):
            raise LayoutError(
                f"camera field 'f': {self.f.tolist()}, expected two positive focal lengths in px"
            )
        err = np.abs(self.R @ self.R.T - np.eye(3)).max()
        if err > 1e-4 or np.linalg.det(self.R) < 0:
            raise LayoutError(
                f"camera field 'R': not a rotation (|R R^T - I| = {err:.2g}, det {np.linalg.det(self.R):.3g})"
            )

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def identity(
        cls, f: ArrayLike, c: ArrayLike, k: ArrayLike | None = None, p: ArrayLike | None = None
    ) -> Camera:
        """A camera whose frame is the world frame (R = I, t = 0): what a single photo gets."""
        return cls(R=np.eye(3), t=np.zeros(3), f=f, c=c, k=k, p=p)

    @classmethod
    def look_at(
        cls,
        eye: ArrayLike,
        target: ArrayLike,
        f: ArrayLike,
        c: ArrayLike,
        up: ArrayLike = (0.0, 0.0, 1.0),
    ) -> Camera:
        """A pinhole camera at ``eye`` (world mm) looking at ``target``, with image-up along world ``up``.

        Args:
            eye: (3,) camera centre in world mm.
            target: (3,) point on the optical axis, world mm.
            f: (2,) focal lengths (px). c: (2,) principal point (px).
            up: (3,) world direction that appears upward in the image (Human3.6M's world is z-up).
        """
        eye_, target_, up_ = (np.asarray(v, dtype=np.float64).reshape(3) for v in (eye, target, up))
        z = target_ - eye_
        if np.linalg.norm(z) == 0:
            raise ValueError("look_at: eye and target coincide")
        z = z / np.linalg.norm(z)
        x = np.cross(z, up_)  # image right; then y = z x x points image-down (= -up, projected)
        if np.linalg.norm(x) < 1e-9:
            raise ValueError(f"look_at: up {up_.tolist()} is parallel to the viewing direction")
        x = x / np.linalg.norm(x)
        y = np.cross(z, x)
        R = np.stack([x, y, z])
        return cls(R=R, t=-R @ eye_, f=f, c=c)

    @classmethod
    def from_mmpose(
        cls,
        R: ArrayLike,
        T_m: ArrayLike,
        f: ArrayLike,
        c: ArrayLike,
        k: ArrayLike | None = None,
        p: ArrayLike | None = None,
    ) -> Camera:
        """Convert a camera of mmpose's Human3.6M ``cameras.pkl`` into ours (world in mm).

        mmpose stores R camera -> world and T, the camera centre in metres: ``X_cam = R.T @ (X_world - T)``.
        Ours is ``X_cam = R' @ X_world + t`` in mm, so ``R' = R.T`` and ``t = -R.T @ T * 1000``. ``k`` and ``p``
        are taken as stored (k1..k3 and p1, p2).

        Args:
            R: (3, 3) camera -> world. T_m: (3,) or (3, 1) camera centre, metres. f, c: (2,) or (2, 1) px.
            k: (3,) radial. p: (2,) tangential p1, p2.
        """
        R_cw = np.asarray(R, dtype=np.float64).reshape(3, 3)
        T = np.asarray(T_m, dtype=np.float64).reshape(3)
        return cls(
            R=R_cw.T,
            t=-(R_cw.T @ T) * 1000.0,
            f=np.ravel(f),
            c=np.ravel(c),
            k=None if k is None else np.ravel(k),
            p=None if p is None else np.ravel(p),
        )

    # ------------------------------------------------------------------------------------------------ transforms
    @property
    def centre(self) -> np.ndarray:
        """(3,) the camera centre in world mm."""
        return -self.R.T @ self.t

    @property
    def has_distortion(self) -> bool:
        """True if radial or tangential coefficients are set and not all zero."""
        return any(v is not None and np.any(v != 0) for v in (self.k, self.p))

    def world_to_camera(self, X: ArrayLike) -> np.ndarray:
        """World (..., 3) mm -> camera (..., 3) mm."""
        X = np.asarray(X, dtype=np.float64)
        return X @ self.R.T + self.t

    def camera_to_world(self, X: ArrayLike) -> np.ndarray:
        """Camera (..., 3) mm -> world (..., 3) mm."""
        X = np.asarray(X, dtype=np.float64)
        return (X - self.t) @ self.R

    def project(self, X_world: ArrayLike, distort: bool = True) -> np.ndarray:
        """Project world points to pixels.

        Args:
            X_world: (..., 3) world mm.
            distort: apply the Human3.6M distortion when the camera has coefficients.

        Returns:
            (..., 2) pixels. Points at or behind the camera plane (z <= 0) give non-finite or meaningless values.
        """
        return self.project_camera(self.world_to_camera(X_world), distort=distort)

    def project_camera(self, X_cam: ArrayLike, distort: bool = True) -> np.ndarray:
        """Project camera-frame points (..., 3) mm to pixels (..., 2).

        With ``distort`` and coefficients set, the normalised point ``x = X/Z, y = Y/Z`` goes through Human3.6M's
        MATLAB model: ``r2 = x^2 + y^2``, ``radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3``, ``tan = p1 y + p2 x``,
        ``x' = x (radial + tan) + p2 r2``, ``y' = y (radial + tan) + p1 r2``; then ``u = f x' + c``.
        """
        X_cam = np.asarray(X_cam, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = X_cam[..., :2] / X_cam[..., 2:3]
        if distort and self.has_distortion:
            xy = distort_normalised(xy, self.k, self.p)
        return xy * self.f + self.c

    # ------------------------------------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, list]:
        """The camera.json record ``{R, t, f, c[, k, p]}`` (lists of floats)."""
        out: dict[str, list] = {
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "f": self.f.tolist(),
            "c": self.c.tolist(),
        }
        if self.k is not None:
            out["k"] = self.k.tolist()
        if self.p is not None:
            out["p"] = self.p.tolist()
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "camera") -> Camera:
        """Build a camera from a camera.json record.

        Args:
            record: ``{"R": 3x3, "t": [3] mm, "f": [2] px, "c": [2] px}`` plus optional ``"k"`` [3], ``"p"`` [2].
            where: prefix for error messages, e.g. ``"S1_camera.json: cam_idx 2"``.

        Raises:
            LayoutError: naming ``where``, the field and what was expected.
        """
        if not isinstance(record, Mapping):
            raise LayoutError(f"{where}: expected an object with R, t, f, c, got {short_repr(record)}")
        missing = [key for key in ("R", "t", "f", "c") if key not in record]
        if missing:
            raise LayoutError(
                f"{where}: missing field(s) {missing}; a camera needs R (3x3), t (3, mm), f (2), c (2)"
            )
        unknown = sorted(set(record) - {"R", "t", "f", "c", "k", "p"})
        if unknown:
            logger.debug("%s: ignoring unknown camera fields %s", where, unknown)
        try:
            return cls(
                R=record["R"],
                t=record["t"],
                f=record["f"],
                c=record["c"],
                k=record.get("k"),
                p=record.get("p"),
            )
        except LayoutError as exc:
            raise LayoutError(f"{where}: {exc}") from exc


def distort_normalised(xy: np.ndarray, k: np.ndarray | None, p: np.ndarray | None) -> np.ndarray:
    """Apply Human3.6M's radial (k1..k3) + tangential (p1, p2) distortion to normalised points (..., 2)."""
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = np.ones_like(r2)
    if k is not None:
        radial = radial + k[0] * r2 + k[1] * r2 * r2 + k[2] * r2 * r2 * r2
    if p is None:
        return xy * radial[..., None]
    tan = p[0] * y + p[1] * x
    xd = x * (radial + tan) + p[1] * r2
    yd = y * (radial + tan) + p[0] * r2
    return np.stack([xd, yd], axis=-1)


def bbox_from_joints(
    j2d: ArrayLike,
    vis: ArrayLike | None = None,
    margin: float = 0.1,
    image_size: tuple[int, int] | None = None,
) -> list[float]:
    """A COCO ``[x, y, w, h]`` box around 2D joints.

    The tight box of the visible joints grows by ``margin`` times its width (height) on the left and right
    (top and bottom): the default 0.1 gives 1.2x the joint extent, which roughly covers the head top, hands
    and feet beyond the joints. ``margin=0`` gives Pose2Mesh's ``get_bbox`` (tight); Pose2Mesh then expands that
    to its input aspect, see :func:`expand_bbox_to_aspect`.

    Args:
        j2d: (J, 2) or (J, 3) pixels; with 3 columns and ``vis`` None, the last column is the visibility.
        vis: (J,) visibility/confidence; joints with ``vis <= 0`` are ignored.
        margin: fraction of the tight size added on each side (>= 0).
        image_size: (width, height) to clip the box to, or None.

    Returns:
        [x, y, w, h] floats (px).

    Raises:
        ValueError: no joint is visible.
    """
    j = np.asarray(j2d, dtype=np.float64)
    if j.ndim != 2 or j.shape[1] not in (2, 3):
        raise ValueError(f"bbox_from_joints: shape {j.shape}, expected (J, 2) or (J, 3)")
    if vis is None and j.shape[1] == 3:
        vis = j[:, 2]
    mask = np.ones(len(j), bool) if vis is None else np.asarray(vis, dtype=np.float64).reshape(-1) > 0
    mask &= np.all(np.isfinite(j[:, :2]), axis=1)
    if not mask.any():
        raise ValueError("bbox_from_joints: no visible joint")
    if margin < 0:
        raise ValueError(f"bbox_from_joints: margin {margin}, expected >= 0")
    lo, hi = j[mask, :2].min(axis=0), j[mask, :2].max(axis=0)
    size = hi - lo
    lo, hi = lo - margin * size, hi + margin * size
    if image_size is not None:
        lo = np.maximum(lo, 0.0)
        hi = np.minimum(hi, np.asarray(image_size, dtype=np.float64))
    return [float(lo[0]), float(lo[1]), float(max(hi[0] - lo[0], 0.0)), float(max(hi[1] - lo[1], 0.0))]


def expand_bbox_to_aspect(
    bbox: Sequence[float], aspect: float = 288 / 384, scale: float = 1.0
) -> list[float]:
    """Pose2Mesh's ``process_bbox``: grow a box about its centre to width/height ``aspect``, then by ``scale``.

    Args:
        bbox: [x, y, w, h] px.
        aspect: target width / height (Pose2Mesh: 288 / 384 = 0.75).
        scale: factor applied to both sides after the aspect fix (Pose2Mesh: 1.0).

    Returns:
        [x, y, w, h] px with ``w / h == aspect``.
    """
    x, y, w, h = (float(v) for v in bbox)
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"expand_bbox_to_aspect: bbox {list(bbox)} needs positive finite w, h")
    cx, cy = x + w / 2, y + h / 2
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * scale, h * scale
    return [cx - w / 2, cy - h / 2, w, h]
