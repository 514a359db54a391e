"""A seeded joint-range sampler of plausible body poses for anny's ``cmu_mb`` rig, used when no mocap is given.

Each bone's rotation is a product of rotations about fixed axes of anny's rest frame (the "local-ref"
parameterisation: world axes at the rest A-pose, chained parent -> child; +X the subject's left, +Y back,
+Z up), each angle drawn uniformly inside a hand-written anatomical range (bodymodel.md, section 4). Ranges
are written for the left side; the right side mirrors them (x, y, z) -> (x, -y, -z) with its own draws.

Signs, for a left limb (right-hand rule about the axis):

* hip: about +X, negative = flexion (thigh forward); about +Y, negative = abduction; about +Z = twist.
* knee: about +X, positive = flexion (anny's rest knee is about 10 degrees flexed already).
* shoulder: about +X, negative = flexion (arm forward); about +Y, negative = abduction (arm out and up) from
  anny's A-pose (arm about 48 degrees from vertical); twist about the rest upper-arm direction.
* elbow: a hinge about the rest elbow axis (upper arm x forearm); anny's rest elbow is about 43 degrees flexed,
  so the relative range [-0.6, 1.9] gives about 0.15 to 2.6 rad of flexion.
* spine, neck, head: about +X, positive = bending forward; +Y = lateral bend; +Z = twist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from p2m.body.retarget import ANNY_CMU_MB_BONES

logger = logging.getLogger(__name__)

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
#: anny's rest directions (default phenotype, cmu_mb rig) of the left upper arm and forearm, head to head.
_L_UPPER_ARM = (0.1679, -0.0041, -0.1886)
_L_FOREARM = (0.1161, -0.1576, -0.1151)


#: Ranges (low, high) of the body-shape draws of p2m synth and the trainer's on-device source.
#: Adult phenotypes: age 2/3..1 is adult; weight and height kept off the extremes (statures about 1.45-2.0 m).
SHAPE_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.67, 1.0),
    "weight": (0.15, 0.85),
    "height": (0.2, 0.8),
}


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return float(a[0]), float(a[1]), float(a[2])


_ELBOW_AXIS = _unit(np.cross(_L_UPPER_ARM, _L_FOREARM))

#: (axis, low, high) in radians, composed left to right: ``D = R(a1 t1) @ R(a2 t2) @ ...`` (the last applies
#: first to the rest geometry). Left side and middle bones; the right side mirrors the ``Left``/``L`` entries.
DEFAULT_RANGES: dict[str, tuple[tuple[tuple[float, float, float], float, float], ...]] = {
    "Hips": ((_Z, -np.pi, np.pi), (_X, -0.15, 0.25), (_Y, -0.1, 0.1)),
    "LowerBack": ((_X, -0.15, 0.35), (_Y, -0.15, 0.15), (_Z, -0.2, 0.2)),
    "Spine": ((_X, -0.15, 0.35), (_Y, -0.15, 0.15), (_Z, -0.2, 0.2)),
    "Spine1": ((_X, -0.1, 0.25), (_Y, -0.1, 0.1), (_Z, -0.15, 0.15)),
    "Neck": ((_X, -0.2, 0.3), (_Y, -0.12, 0.12), (_Z, -0.3, 0.3)),
    "Neck1": ((_X, -0.2, 0.3), (_Y, -0.12, 0.12), (_Z, -0.3, 0.3)),
    "Head": ((_X, -0.2, 0.2), (_Y, -0.12, 0.12), (_Z, -0.25, 0.25)),
    "LeftUpLeg": ((_X, -1.6, 0.35), (_Y, -0.7, 0.25), (_Z, -0.5, 0.5)),
    "LeftLeg": ((_X, -0.05, 2.2),),
    "LeftFoot": ((_X, -0.3, 0.6), (_Y, -0.2, 0.2), (_Z, -0.3, 0.3)),
    "LeftToeBase": ((_X, -0.5, 0.2),),
    "LeftShoulder": ((_Y, -0.2, 0.1), (_Z, -0.15, 0.15)),
    "LeftArm": ((_X, -1.8, 0.5), (_Y, -1.2, 0.5), (_unit(_L_UPPER_ARM), -0.8, 0.8)),
    "LeftForeArm": ((_ELBOW_AXIS, -0.6, 1.9), (_unit(_L_FOREARM), -0.5, 0.5)),
    "LeftHand": ((_X, -0.3, 0.3), (_Y, -0.3, 0.3), (_Z, -0.3, 0.3)),
}


def _right_of(name: str) -> str | None:
    for a, b in (("Left", "Right"), ("LHip", "RHip"), ("LThumb", "RThumb")):
        if name.startswith(a):
            return b + name[len(a) :]
    return None


def _compose(axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Product of axis-angle rotations. axes (K, 3) unit, angles (N, K) -> (N, 3, 3)."""
    from scipy.spatial.transform import Rotation

    out = np.broadcast_to(np.eye(3), (angles.shape[0], 3, 3)).copy()
    for k in range(axes.shape[0]):
        out = out @ Rotation.from_rotvec(angles[:, k, None] * axes[k]).as_matrix()
    return out


@dataclass
class JointRangeSampler:
    """Draw poses with every angle uniform inside its range (see :data:`DEFAULT_RANGES`).

    Attributes:
        ranges: bone -> ((axis, low, high), ...) for the left side and the middle; bones not listed stay at rest.
        bone_names: bone order of the returned poses (anny's ``cmu_mb`` order).
        scale: multiplies every range (0 = rest pose, 1 = the full ranges); the root yaw is not scaled.
    """

    ranges: dict = field(default_factory=lambda: dict(DEFAULT_RANGES))
    bone_names: tuple[str, ...] = ANNY_CMU_MB_BONES
    scale: float = 1.0

    def __post_init__(self) -> None:
        unknown = [b for b in self.ranges if b not in self.bone_names]
        if unknown:
            raise ValueError(f"joint ranges for unknown bones {unknown}; bones: {', '.join(self.bone_names)}")
        for bone, dofs in self.ranges.items():
            for axis, lo, hi in dofs:
                if not lo <= hi or abs(np.linalg.norm(axis) - 1) > 1e-6:
                    raise ValueError(
                        f"joint range of {bone}: need a unit axis and low <= high, got {axis}, {lo}, {hi}"
                    )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` poses.

        Args:
            n: number of poses.
            rng: the random generator (its state advances; same seed, same poses).

        Returns:
            (n, J, 3) float32 axis-angle (radians), anny "local-ref", ``bone_names`` order.
        """
        from scipy.spatial.transform import Rotation

        pose = np.zeros((n, len(self.bone_names), 3))
        for bone in self.bone_names:  # fixed order: the draws do not depend on dict order
            dofs = self.ranges.get(bone)
            if not dofs:
                continue
            targets = [(bone, 1.0)]
            right = _right_of(bone)
            if right is not None and right in self.bone_names:
                targets.append((right, -1.0))
            axes = np.array([d[0] for d in dofs], dtype=np.float64)
            lo = np.array([d[1] for d in dofs])
            hi = np.array([d[2] for d in dofs])
            scale = np.full(len(dofs), float(self.scale))
            if bone == self.bone_names[0]:
                scale[0] = 1.0  # keep the full root yaw
            for name, mirror in targets:
                u = rng.random((n, len(dofs)))
                angles = (lo + u * (hi - lo)) * scale
                rv = Rotation.from_matrix(_compose(axes, angles)).as_rotvec()
                if mirror < 0:
                    rv[:, 1:] *= -1.0
                pose[:, self.bone_names.index(name)] = rv
        return pose.astype(np.float32)
