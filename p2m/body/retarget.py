"""Retarget CMU motion capture (BVH) onto anny's ``cmu_mb`` rig: axis-angle poses in anny "local-ref".

The derivation, for an anny bone c with parent p (rotations are 3x3, "world" means anny's frame):

* anny "local-ref" chains deltas like SMPL: the bone's global rotation is ``G_c = G_p @ D_c`` (``G_0 = D_0``),
  where G_c rotates the rest (A-pose) geometry of the bone into place.
* A BVH joint j has a global rotation ``B_j`` (product of its ancestors' Euler rotations) relative to the
  file's rest pose (all channels zero: roughly a T-pose for CMU files). In anny axes it is ``B'_j = C B_j C^T``,
  C being the change of axes (BVH Y up, facing +Z; anny Z up, facing -Y; +X is the subject's left in both).
* ``S_c``, the rest offset rotation, is the global rotation that puts bone c of anny's A-pose into the BVH rest
  pose. It is built parent first: ``S_c = S_p @ swing(a_c -> S_p^T b_c)``, a_c being the bone's direction in
  anny's rest pose, b_c the matching segment of the BVH rest pose and ``swing`` the smallest rotation between
  them (relative to its parent, a bone swings and does not twist between the two rest poses). Two exceptions:
  the upper arms and thighs take the twist that lines anny's elbow/knee hinge axis up with the BVH joint's
  (:data:`HINGES`), and the three spine bones share one offset that points anny's lower back -> shoulder centre
  along CMU's (CMU's spine joints lie in the plane of its shoulders, anny's 6-7 cm behind them). A bone with no
  matching BVH segment keeps its parent's: ``S_c = S_p``.
* Then ``G_c = B'_{j(c)} @ S_c`` (j(c) the BVH joint driving bone c) and ``D_c = G_p^T @ G_c
  = S_p^T B'_{j(p)}^T B'_{j(c)} S_c``: the ``R_anny = Q_parent^-1 R_bvh Q`` of the brief, with Q = S.

So limbs, feet, neck and head point exactly along their BVH segments in every frame. The hands are rigid: CMU
did not capture fingers or thumbs (their channels are to be ignored), so anny's finger and thumb bones keep the
wrist's rotation (``D = I``). LHipJoint, RHipJoint, LeftShoulder and RightShoulder are zero-length and constant
zero in the CMU files, so their ``D = I`` too.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from p2m.body.bvh import CMU_UNIT_M, BVHError, BVHMotion, BVHSkeleton

logger = logging.getLogger(__name__)

#: anny's ``cmu_mb`` bones, in anny's order (the order of the pose array's bone axis).
ANNY_CMU_MB_BONES: tuple[str, ...] = (
    "Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "LowerBack", "Spine", "Spine1",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LThumb", "LeftFingerBase", "LeftHandFinger1", "Neck",
    "Neck1", "Head", "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RThumb", "RightFingerBase",
    "RightHandFinger1", "RHipJoint", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase",
)  # fmt: skip

#: The CMU BVH joints (MotionBuilder-friendly names) every retargeted file must have.
CMU_MB_JOINTS: tuple[str, ...] = (
    "Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "RHipJoint", "RightUpLeg",
    "RightLeg", "RightFoot", "RightToeBase", "LowerBack", "Spine", "Spine1", "Neck", "Neck1", "Head",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftFingerBase", "LeftHandIndex1", "LThumb",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RightFingerBase", "RightHandIndex1", "RThumb",
)  # fmt: skip

#: cgspeed's 3dsMax-friendly names of the same CMU skeleton -> the MotionBuilder-friendly names.
CMU_3DSMAX_TO_MB: dict[str, str] = {
    "LeftHip": "LeftUpLeg", "LeftKnee": "LeftLeg", "LeftAnkle": "LeftFoot", "LeftToe": "LeftToeBase",
    "RightHip": "RightUpLeg", "RightKnee": "RightLeg", "RightAnkle": "RightFoot", "RightToe": "RightToeBase",
    "lowerback": "LowerBack", "Chest": "Spine", "Chest2": "Spine1", "lowerneck": "Neck", "Neck": "Neck1",
    "LeftCollar": "LeftShoulder", "LeftShoulder": "LeftArm", "LeftElbow": "LeftForeArm", "LeftWrist": "LeftHand",
    "lhand": "LeftFingerBase", "LFingers": "LeftHandIndex1",
    "RightCollar": "RightShoulder", "RightShoulder": "RightArm", "RightElbow": "RightForeArm",
    "RightWrist": "RightHand", "rhand": "RightFingerBase", "RFingers": "RightHandIndex1",
}  # fmt: skip

# anny bone -> (driving BVH joint or None for rigid, anny point at the bone's far end, BVH point there).
# Points: "head:<bone>", "tail:<bone>" (anny), "<joint>" or "end:<joint>" (BVH End Site). None: no direction.
_LEFT_MAP: dict[str, tuple[str | None, str | None, str | None]] = {
    "LHipJoint": ("LHipJoint", None, None),
    "LeftUpLeg": ("LeftUpLeg", "head:LeftLeg", "LeftLeg"),
    "LeftLeg": ("LeftLeg", "head:LeftFoot", "LeftFoot"),
    "LeftFoot": ("LeftFoot", "head:LeftToeBase", "LeftToeBase"),
    "LeftToeBase": ("LeftToeBase", "tail:LeftToeBase", "end:LeftToeBase"),
    "LeftShoulder": ("LeftShoulder", None, None),
    "LeftArm": ("LeftArm", "head:LeftForeArm", "LeftForeArm"),
    "LeftForeArm": ("LeftForeArm", "head:LeftHand", "LeftHand"),
    "LeftHand": ("LeftHand", "head:LeftHandFinger1", "LeftHandIndex1"),
    "LThumb": (None, None, None),
    "LeftFingerBase": (None, None, None),
    "LeftHandFinger1": (None, None, None),
}


def _mirror(name: str) -> str:
    for a, b in (("Left", "Right"), ("LHip", "RHip"), ("LThumb", "RThumb")):
        if a in name:
            return name.replace(a, b)
    return name


BONE_MAP: dict[str, tuple[str | None, str | None, str | None]] = {
    "Hips": ("Hips", None, None),
    # The trunk as a whole: CMU's spine joints are not anatomical (its shoulders sit in the plane of its
    # spine; anny's sit 6-7 cm in front of its spine bones), so the three spine bones share one rest offset
    # that points anny's lower back -> shoulder centre along CMU's; their motion still comes joint by joint.
    "LowerBack": ("LowerBack", "mid:head:LeftArm,head:RightArm", "mid:LeftArm,RightArm"),
    "Spine": ("Spine", None, None),
    "Spine1": ("Spine1", None, None),
    "Neck": ("Neck", "head:Neck1", "Neck1"),
    "Neck1": ("Neck1", "head:Head", "Head"),
    "Head": ("Head", "tail:Head", "end:Head"),
    **_LEFT_MAP,
    **{
        _mirror(k): tuple(None if v is None else _mirror(v) for v in vals)  # type: ignore[misc]
        for k, vals in _LEFT_MAP.items()
    },
}

#: anny bone -> (BVH hinge joint below it, anny child bone, anny grandchild bone). The bone's twist is chosen
#: so that anny's hinge axis (rest upper x lower segment) meets the BVH joint's hinge axis, estimated from the
#: clip (:func:`hinge_axis`): the elbow and knee then bend about their own axis, not sideways.
HINGES: dict[str, tuple[str, str, str]] = {
    "LeftArm": ("LeftForeArm", "LeftForeArm", "LeftHand"),
    "RightArm": ("RightForeArm", "RightForeArm", "RightHand"),
    "LeftUpLeg": ("LeftLeg", "LeftLeg", "LeftFoot"),
    "RightUpLeg": ("RightLeg", "RightLeg", "RightFoot"),
}

#: Candidate length units of BVH files, in metres, tried when guessing a file's unit from its stature.
_UNITS_M = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254, "cmu": CMU_UNIT_M}


@dataclass(frozen=True)
class AnnyRest:
    """The rest (A-pose) skeleton of anny's ``cmu_mb`` rig at the default phenotype.

    Attributes:
        names: (J,) bone names (anny order).
        parents: (J,) parent index, -1 for the root.
        heads: (J, 3) rest bone heads, metres, anny frame.
        tails: (J, 3) rest bone tails, metres, anny frame.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    heads: np.ndarray
    tails: np.ndarray

    def point(self, spec: str) -> np.ndarray:
        """A rest point: ``"head:<bone>"``, ``"tail:<bone>"`` or ``"mid:<point>,<point>"`` (their midpoint)."""
        if spec.startswith("mid:"):
            a, b = spec[4:].split(",")
            return 0.5 * (self.point(a) + self.point(b))
        kind, name = spec.split(":", 1)
        return (self.heads if kind == "head" else self.tails)[self.names.index(name)]


@functools.lru_cache(maxsize=1)
def anny_rest() -> AnnyRest:
    """Build anny (rig ``cmu_mb``, default topology and phenotype) once and return its rest skeleton.

    The bones do not depend on the mesh topology (measured: same heads and tails to 1e-7 m).
    """
    import torch

    from p2m.body.anny_model import load_anny
    from p2m.body.common import DEFAULT_TOPOLOGY

    model = load_anny("cmu_mb", DEFAULT_TOPOLOGY)
    bones = tuple(model.bone_labels)
    with torch.no_grad():
        out = model(
            pose_parameters=torch.eye(4, dtype=model.template_vertices.dtype).expand(1, len(bones), 4, 4)
        )
    return AnnyRest(
        names=bones,
        parents=np.asarray(model.bone_parents, dtype=np.int64),
        heads=out["rest_bone_heads"][0].double().numpy(),
        tails=out["rest_bone_tails"][0].double().numpy(),
    )


@dataclass
class Retargeted:
    """Anny poses made from a BVH clip.

    Attributes:
        pose: (T, J, 3) float32 axis-angle (radians) per anny bone (``bone_names`` order), anny "local-ref".
        trans: (T, 3) float32 metres, anny frame: the body API's ``trans`` that puts anny's hip centre on the
            BVH hip centre (``trans`` = 0 puts anny's root bone head at the origin).
        frames: (T,) int64 indices of the source frames.
        bone_names: anny bone names.
        unit_m: metres per BVH file unit used for ``trans``.
    """

    pose: np.ndarray
    trans: np.ndarray
    frames: np.ndarray
    bone_names: tuple[str, ...]
    unit_m: float


def canonical_joint_index(skeleton: BVHSkeleton, path: str = "<bvh>") -> dict[str, int]:
    """Map the MotionBuilder-friendly CMU names (:data:`CMU_MB_JOINTS`) to the skeleton's joint indices.

    cgspeed's 3dsMax-friendly names (``LeftHip``, ``LeftCollar``, ``Chest2``...) are recognised too.

    Raises:
        BVHError: naming the file and the missing joints.
    """
    names = skeleton.names
    if "LeftCollar" in names or "LeftHip" in names:
        index = {CMU_3DSMAX_TO_MB.get(n, n): i for i, n in enumerate(names)}
    else:
        index = {n: i for i, n in enumerate(names)}
    missing = [n for n in CMU_MB_JOINTS if n not in index]
    if missing:
        raise BVHError(
            f"{path}: not a CMU skeleton: missing joints {', '.join(missing)}; retargeting needs the CMU BVH "
            f"joint names (MotionBuilder-friendly: {', '.join(CMU_MB_JOINTS[:6])}, ...; or the 3dsMax-friendly "
            f"ones)"
        )
    return index


def axes_to_anny(skeleton: BVHSkeleton, index: dict[str, int], path: str = "<bvh>") -> np.ndarray:
    """The rotation C taking the file's axes to anny's, found from the rest pose: up = hips to head, left =
    right hip to left hip, each snapped to the nearest file axis (CMU files: Y up, facing +Z, left +X).

    Returns:
        (3, 3) float64 with ``x_anny = C @ x_file``.
    """
    rest, ends = skeleton.rest_positions()

    def snap(v: np.ndarray, what: str) -> np.ndarray:
        k = int(np.argmax(np.abs(v)))
        if np.linalg.norm(v) == 0 or abs(v[k]) < 0.7 * np.linalg.norm(v):
            raise BVHError(f"{path}: cannot tell the {what} axis from the rest pose (direction {v.round(3)})")
        out = np.zeros(3)
        out[k] = np.sign(v[k])
        return out

    up = snap(rest[index["Head"]] - rest[index["Hips"]], "up")
    left = snap(rest[index["LeftUpLeg"]] - rest[index["RightUpLeg"]], "left")
    if abs(up @ left) > 0:
        raise BVHError(f"{path}: rest pose has up {up} and left {left} along the same axis")
    # anny is right-handed, X (left) x Y (back) = Z (up), so Y = Z x X; the other order would be a reflection
    # and mirror every motion front to back.
    back = np.cross(up, left)
    return np.stack([left, back, up])  # rows: the file directions of anny's X, Y and Z


def guess_unit(skeleton: BVHSkeleton, index: dict[str, int]) -> float:
    """Metres per file unit, from the rest stature (toe to head End Site) being closest to 1.65 m."""
    rest, ends = skeleton.rest_positions()
    head_end = [e for e, p in enumerate(skeleton.end_parents) if p == index["Head"]]
    top = ends[head_end[0]] if head_end else rest[index["Head"]]
    stature = float(np.linalg.norm(top - rest[index["LeftToeBase"]]))
    if stature <= 0:
        return 1.0
    best = min(_UNITS_M.values(), key=lambda u: abs(np.log(stature * u / 1.65)))
    return float(best)


def _swing(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction u to direction v (3x3)."""
    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    axis = np.cross(u, v)
    s, c = np.linalg.norm(axis), float(u @ v)
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        axis = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
        s = np.linalg.norm(axis)
    return _rotvec_to_matrix(axis / s * np.arctan2(s, c))


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv).as_matrix()


def _align(a1: np.ndarray, a2: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Rotation taking direction a1 to b1 exactly and the part of a2 normal to a1 to the part of b2 normal to b1."""

    def frame(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
        e1 = v1 / np.linalg.norm(v1)
        e2 = v2 - (v2 @ e1) * e1
        e2 = e2 / np.linalg.norm(e2)
        return np.stack([e1, e2, np.cross(e1, e2)], 1)

    return frame(b1, b2) @ frame(a1, a2).T


def hinge_axis(
    motion: BVHMotion, joint: int, min_frames: int = 5, min_angle: float = 0.15
) -> np.ndarray | None:
    """The axis a BVH joint bends about, from its local rotations over the clip, oriented so that the clip's
    rotations about it are mostly positive (flexion positive).

    Args:
        motion: the clip.
        joint: BVH joint index (an elbow or knee).
        min_frames: fewest frames bent by more than ``min_angle`` radians for an estimate.
        min_angle: radians.

    Returns:
        (3,) unit axis in the file's rest frame, or None when the clip bends the joint too little or not about
        one axis (less than 90 % of the rotation about the dominant axis).
    """
    from scipy.spatial.transform import Rotation

    rv = Rotation.from_matrix(motion.local_rotations(joints=[joint])[:, 0]).as_rotvec()
    angle = np.linalg.norm(rv, axis=1)
    rv = rv[angle > min_angle]
    if len(rv) < min_frames:
        return None
    w, v = np.linalg.eigh(rv.T @ rv)
    if w[-1] < 0.9 * w.sum():
        return None
    k = v[:, -1]
    return k if (rv @ k).sum() >= 0 else -k


def rest_offsets(
    skeleton: BVHSkeleton,
    index: dict[str, int],
    axes: np.ndarray,
    rest: AnnyRest,
    hinge_axes: dict[str, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-bone rest offset rotations ``S`` (module docstring) and the driving joints.

    Args:
        skeleton, index, axes: the BVH skeleton, its CMU joint index and its axes change.
        rest: anny's rest skeleton.
        hinge_axes: BVH hinge joint name -> its axis in the file's rest frame (:func:`hinge_axis`); for the
            bones of :data:`HINGES` whose axis is given, the twist about the bone is set by the hinge.

    Returns:
        S (J, 3, 3) float64 in anny bone order; driver (J,) int BVH joint index per bone, -1 for rigid bones;
        mapped (J,) bool, True where the bone got a direction from the BVH.
    """
    bvh_rest, bvh_ends = skeleton.rest_positions()
    bvh_rest, bvh_ends = bvh_rest @ axes.T, bvh_ends @ axes.T

    def bvh_point(spec: str) -> np.ndarray:
        if spec.startswith("mid:"):
            a, b = spec[4:].split(",")
            return 0.5 * (bvh_point(a) + bvh_point(b))
        if spec.startswith("end:"):
            j = index[spec[4:]]
            sites = np.flatnonzero(skeleton.end_parents == j)
            if len(sites) == 0:
                return bvh_rest[j]
            return bvh_ends[sites[0]]
        return bvh_rest[index[spec]]

    n = len(rest.names)
    S = np.zeros((n, 3, 3))
    driver = np.full(n, -1, dtype=np.int64)
    mapped = np.zeros(n, dtype=bool)
    for c, name in enumerate(rest.names):
        p = rest.parents[c]
        s_parent = np.eye(3) if p < 0 else S[p]
        drv, anny_to, bvh_to = BONE_MAP[name]
        S[c] = s_parent
        if drv is None:
            continue
        driver[c] = index[drv]
        if anny_to is None or bvh_to is None:
            continue
        a = rest.point(anny_to) - rest.heads[c]
        b = bvh_point(bvh_to) - bvh_rest[index[drv]]
        if np.linalg.norm(a) < 1e-9 or np.linalg.norm(b) < 1e-9:
            continue
        k = (hinge_axes or {}).get(HINGES[name][0]) if name in HINGES else None
        if k is not None:
            _, child, grandchild = HINGES[name]
            ci, gi = rest.names.index(child), rest.names.index(grandchild)
            n = np.cross(rest.heads[ci] - rest.heads[c], rest.heads[gi] - rest.heads[ci])
            S[c] = s_parent @ _align(a, n, s_parent.T @ b, s_parent.T @ (axes @ k))
        else:
            S[c] = s_parent @ _swing(a, s_parent.T @ b)
        mapped[c] = True
    return S, driver, mapped


def retarget(
    motion: BVHMotion,
    frames: np.ndarray | slice | None = None,
    rest: AnnyRest | None = None,
    unit_m: float | None = None,
    hinge: bool = True,
) -> Retargeted:
    """Retarget a CMU BVH clip onto anny's ``cmu_mb`` rig (derivation in the module docstring).

    Args:
        motion: a parsed BVH file with the CMU skeleton (MotionBuilder- or 3dsMax-friendly names, any up axis).
        frames: which frames (index array or slice); all when None. Drop the T-pose frame 0 of cgspeed files
            yourself (``slice(1, None)``).
        rest: anny's rest skeleton (default: :func:`anny_rest`).
        unit_m: metres per file unit for ``trans``; guessed from the stature when None.
        hinge: set the upper arm and thigh twist from the elbow and knee hinge axes of the whole clip
            (:data:`HINGES`); False uses the smallest swing for them too.

    Returns:
        :class:`Retargeted` with ``pose`` (T, 31, 3) and ``trans`` (T, 3).
    """
    from scipy.spatial.transform import Rotation

    rest = rest or anny_rest()
    sk = motion.skeleton
    index = canonical_joint_index(sk, motion.path)
    axes = axes_to_anny(sk, index, motion.path)
    if unit_m is None:
        unit_m = guess_unit(sk, index)
    hinges = {j: hinge_axis(motion, index[j]) for j, _, _ in HINGES.values()} if hinge else None
    S, driver, _ = rest_offsets(sk, index, axes, rest, hinges)

    frame_idx = np.arange(motion.num_frames)[frames if frames is not None else slice(None)]
    pos, B, _ = motion.forward_kinematics(frame_idx, scale=unit_m)
    B = axes @ B @ axes.T  # (T, Jb, 3, 3) global rotations in anny axes
    t, n = B.shape[0], len(rest.names)
    G = np.empty((t, n, 3, 3))
    D = np.empty((t, n, 3, 3))
    for c in range(n):
        p = rest.parents[c]
        if driver[c] >= 0:
            G[:, c] = B[:, driver[c]] @ S[c]
        else:
            G[:, c] = G[:, p]
        D[:, c] = G[:, c] if p < 0 else np.swapaxes(G[:, p], -1, -2) @ G[:, c]
    pose = Rotation.from_matrix(D.reshape(-1, 3, 3)).as_rotvec().reshape(t, n, 3)

    # trans: anny's hip centre (rigid with its root here) onto the BVH hip centre.
    pos = pos @ axes.T
    hips_bvh = 0.5 * (pos[:, index["LeftUpLeg"]] + pos[:, index["RightUpLeg"]])
    li, ri = rest.names.index("LeftUpLeg"), rest.names.index("RightUpLeg")
    hips_anny = 0.5 * (rest.heads[li] + rest.heads[ri]) - rest.heads[0]
    trans = hips_bvh - np.einsum("tij,j->ti", G[:, 0], hips_anny)
    return Retargeted(
        pose=pose.astype(np.float32),
        trans=trans.astype(np.float32),
        frames=frame_idx.astype(np.int64),
        bone_names=rest.names,
        unit_m=float(unit_m),
    )
