"""Joint sets (H36M-17, COCO-17, COCO-19), skeletons, flip pairs and the conversions between them.

Everything here is pure numpy. Arrays of joints have the joint axis second to last: ``(..., J, C)`` with C = 2
(pixels), 3 (pixels + visibility, or x, y, z) and so on. Convert joint orders only at the boundary of p2m
(readers of other tools' files); inside p2m the order is always :data:`H36M_JOINTS` (DESIGN.md, Contract 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Human3.6M, 17 joints, in Pose2Mesh's order (the order of the Human3.6M release and of VideoPose3D).
# ----------------------------------------------------------------------------------------------------------------
H36M_JOINTS: tuple[str, ...] = (
    "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck", "Nose", "Head",
    "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist",
)  # fmt: skip
H36M_NUM_JOINTS = 17
H36M_ROOT = 0
H36M_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 7), (7, 8), (8, 9), (9, 10), (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
    (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6),
)  # fmt: skip
H36M_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13))
#: The 14 joints over which Pose2Mesh averages MPJPE / PA-MPJPE on Human3.6M: all but Pelvis, Torso and Nose.
H36M_EVAL_14: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)

# ----------------------------------------------------------------------------------------------------------------
# COCO, 17 keypoints (the order of person_keypoints_*.json), and Pose2Mesh's COCO-19 (+ Pelvis, Neck).
# ----------------------------------------------------------------------------------------------------------------
COCO_JOINTS: tuple[str, ...] = (
    "Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow",
    "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle",
)  # fmt: skip
COCO_NUM_JOINTS = 17
#: COCO's own skeleton (the ``skeleton`` of the person category, made 0-based).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
    (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)
#: OKS sigmas of the 17 COCO keypoints (pycocotools), for metrics and noise synthesis.
COCO_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087,
    0.089, 0.089,
)  # fmt: skip

COCO19_JOINTS: tuple[str, ...] = (*COCO_JOINTS, "Pelvis", "Neck")
COCO19_NUM_JOINTS = 19
#: Root of the COCO-19 set: the added Pelvis (mean of the hips).
COCO19_ROOT = 17
COCO19_SKELETON: tuple[tuple[int, int], ...] = (
    (1, 2), (0, 1), (0, 2), (2, 4), (1, 3), (6, 8), (8, 10), (5, 7), (7, 9), (12, 14), (14, 16), (11, 13),
    (13, 15), (17, 11), (17, 12), (17, 18), (18, 5), (18, 6), (18, 0),
)  # fmt: skip
COCO19_FLIP_PAIRS: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS

# ----------------------------------------------------------------------------------------------------------------
# Other tools' orders (boundary only).
# ----------------------------------------------------------------------------------------------------------------
#: mmpose's Human3.6M names (``configs/_base_/datasets/h36m.py``). NB: the joint *order* of mmpose's H36M data is
#: the same as ours; only the names differ (spine = Torso, thorax = Neck, neck_base = Nose). Some mmpose files
#: (e.g. the test fixture ``tests/data/h36m/h36m_coco.json``) list the names left-first ("left_hip" at index 1)
#: while their numbers are right-first: there the names are wrong, not the data (see :func:`h36m_index_from_names`).
MMPOSE_H36M_JOINTS: tuple[str, ...] = (
    "root", "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "spine", "thorax",
    "neck_base", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)  # fmt: skip
#: The left-first listing of the same names, as found in mmpose's h36m_coco.json test fixture.
MMPOSE_H36M_JOINTS_LEFT_FIRST: tuple[str, ...] = (
    "root (pelvis)", "left_hip", "left_knee", "left_foot", "right_hip", "right_knee", "right_foot", "spine",
    "thorax", "neck_base", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
    "right_wrist",
)  # fmt: skip

# Names other tools use for our H36M joints (lower case, spaces/underscores/parentheses folded).
_H36M_ALIASES: dict[str, str] = {
    "root": "Pelvis", "rootpelvis": "Pelvis", "pelvis": "Pelvis", "hip": "Pelvis", "bottomtorso": "Pelvis",
    "righthip": "R_Hip", "rhip": "R_Hip", "rightknee": "R_Knee", "rknee": "R_Knee",
    "rightfoot": "R_Ankle", "rightankle": "R_Ankle", "rankle": "R_Ankle", "rfoot": "R_Ankle",
    "lefthip": "L_Hip", "lhip": "L_Hip", "leftknee": "L_Knee", "lknee": "L_Knee",
    "leftfoot": "L_Ankle", "leftankle": "L_Ankle", "lankle": "L_Ankle", "lfoot": "L_Ankle",
    "spine": "Torso", "torso": "Torso", "centertorso": "Torso", "spine1": "Torso",
    "thorax": "Neck", "neck": "Neck", "uppertorso": "Neck",
    "neckbase": "Nose", "nose": "Nose", "headbase": "Nose",
    "head": "Head", "headtop": "Head", "centerhead": "Head",
    "leftshoulder": "L_Shoulder", "lshoulder": "L_Shoulder", "leftelbow": "L_Elbow", "lelbow": "L_Elbow",
    "leftwrist": "L_Wrist", "lwrist": "L_Wrist", "lefthand": "L_Wrist",
    "rightshoulder": "R_Shoulder", "rshoulder": "R_Shoulder", "rightelbow": "R_Elbow", "relbow": "R_Elbow",
    "rightwrist": "R_Wrist", "rwrist": "R_Wrist", "righthand": "R_Wrist",
}  # fmt: skip

#: MediaPipe Pose's 33 landmark names (``mediapipe.solutions.pose.PoseLandmark``, lower case).
MEDIAPIPE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
#: MediaPipe Pose's 33 landmarks -> COCO-17: ``coco = landmarks[..., MEDIAPIPE_TO_COCO, :]``.
MEDIAPIPE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
MEDIAPIPE_NUM_LANDMARKS = 33

#: H36M joint -> the COCO joint(s) whose mean it is; joints missing here (Head) COCO does not determine.
#: Torso is the mean of Pelvis and Neck, i.e. of the four hip/shoulder keypoints.
COCO_TO_H36M_PARENTS: dict[int, tuple[int, ...]] = {
    0: (11, 12), 1: (12,), 2: (14,), 3: (16,), 4: (11,), 5: (13,), 6: (15,), 7: (11, 12, 5, 6), 8: (5, 6),
    9: (0,), 11: (5,), 12: (7,), 13: (9,), 14: (6,), 15: (8,), 16: (10,),
}  # fmt: skip


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def flip_permutation(flip_pairs: Sequence[tuple[int, int]], num_joints: int) -> np.ndarray:
    """The index array that swaps left and right joints: ``flipped = joints[..., perm, :]``.

    Args:
        flip_pairs: pairs of (left, right) or (right, left) joint indices.
        num_joints: J, the size of the joint set.

    Returns:
        int64 array (J,).
    """
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def h36m_index_from_names(names: Sequence[str]) -> np.ndarray:
    """The gather index that reorders joints listed under ``names`` into :data:`H36M_JOINTS` order.

    Names are matched case-insensitively through an alias table (mmpose's ``right_hip``/``spine``/``thorax``/
    ``neck_base``, VideoPose3D's ``RHip``..., ours). Use it at the boundary: ``ours = theirs[..., idx, :]``.

    Args:
        names: the 17 joint names of the source, in the source's order.

    Returns:
        int64 array (17,): ``idx[k]`` is the source index of our joint k.

    Raises:
        ValueError: a name is unknown, or the names do not cover the 17 joints exactly once.
    """
    ours: list[str] = []
    for n in names:
        key = _fold(n)
        if key not in _H36M_ALIASES and n not in H36M_JOINTS:
            raise ValueError(f"unknown H36M joint name {n!r}; expected one of {sorted(set(_H36M_ALIASES))}")
        ours.append(n if n in H36M_JOINTS else _H36M_ALIASES[key])
    missing = [j for j in H36M_JOINTS if j not in ours]
    if len(ours) != H36M_NUM_JOINTS or missing:
        raise ValueError(
            f"names {list(names)} do not map onto the 17 H36M joints once each (missing {missing})"
        )
    return np.array([ours.index(j) for j in H36M_JOINTS], dtype=np.int64)


#: Gather index from mmpose's H36M order (:data:`MMPOSE_H36M_JOINTS`) to ours (the identity, by the names).
MMPOSE_TO_H36M: np.ndarray = h36m_index_from_names(MMPOSE_H36M_JOINTS)


def mmpose_h36m_to_ours(joints: np.ndarray, names: Sequence[str] = MMPOSE_H36M_JOINTS) -> np.ndarray:
    """Reorder mmpose H36M joints (..., 17, C) listed under ``names`` into :data:`H36M_JOINTS` order."""
    joints = np.asarray(joints)
    _check_joint_axis(joints, H36M_NUM_JOINTS, "mmpose H36M joints")
    return joints[..., h36m_index_from_names(names), :]


def mediapipe_to_coco(landmarks: np.ndarray) -> np.ndarray:
    """Pick the 17 COCO keypoints from MediaPipe Pose's 33 landmarks.

    Args:
        landmarks: (..., 33, C) array (pixels, visibility... whatever C holds).

    Returns:
        (..., 17, C) array in :data:`COCO_JOINTS` order.
    """
    landmarks = np.asarray(landmarks)
    _check_joint_axis(landmarks, MEDIAPIPE_NUM_LANDMARKS, "MediaPipe landmarks")
    return landmarks[..., list(MEDIAPIPE_TO_COCO), :]


def coco_to_coco19(kp: np.ndarray) -> np.ndarray:
    """Add Pose2Mesh's Pelvis (mean of the hips) and Neck (mean of the shoulders) to COCO-17 keypoints.

    Args:
        kp: (..., 17, 3) array: x, y (px) and visibility v (COCO's 0/1/2, or a confidence).

    Returns:
        (..., 19, 3) array in :data:`COCO19_JOINTS` order. An added joint's visibility is the minimum of its
        parents' (so it is 0 when either parent is unlabelled).
    """
    kp = np.asarray(kp, dtype=np.float64)
    _check_joint_axis(kp, COCO_NUM_JOINTS, "COCO keypoints", channels=3)
    pelvis = _mean_joint(kp, (11, 12))
    neck = _mean_joint(kp, (5, 6))
    return np.concatenate([kp, pelvis[..., None, :], neck[..., None, :]], axis=-2)


def coco_to_h36m(kp: np.ndarray) -> np.ndarray:
    """The H36M-17 joints that COCO-17 keypoints determine.

    Hips, knees, ankles, shoulders, elbows, wrists and nose are copied; Pelvis is the mean of the hips, Neck
    (H36M's thorax) the mean of the shoulders, Torso the mean of Pelvis and Neck. Head (top of head) is not
    determined by COCO and gets zeros with visibility 0.

    Args:
        kp: (..., 17, 3) COCO keypoints: x, y (or any coordinates) and visibility in the last column.

    Returns:
        (..., 17, 3) float64 array in :data:`H36M_JOINTS` order. A derived joint's visibility is the minimum of
        its parents' visibilities (visible only if all parents are); its coordinates are zero when it is not
        visible.
    """
    kp = np.asarray(kp, dtype=np.float64)
    _check_joint_axis(kp, COCO_NUM_JOINTS, "COCO keypoints", channels=3)
    out = np.zeros(kp.shape, dtype=np.float64)
    for h36m_idx, parents in COCO_TO_H36M_PARENTS.items():
        out[..., h36m_idx, :] = _mean_joint(kp, parents)
    return out


def _mean_joint(kp: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """Mean of the parents' coordinates, visibility = min of theirs; coordinates zeroed where invisible."""
    sel = kp[..., list(parents), :]
    vis = sel[..., -1].min(axis=-1)
    xy = sel[..., :-1].mean(axis=-2) * (vis > 0)[..., None]
    return np.concatenate([xy, vis[..., None]], axis=-1)


def _check_joint_axis(arr: np.ndarray, num_joints: int, what: str, channels: int | None = None) -> None:
    if arr.ndim < 2 or arr.shape[-2] != num_joints or (channels is not None and arr.shape[-1] != channels):
        want = f"(..., {num_joints}, {channels if channels is not None else 'C'})"
        raise ValueError(f"{what}: shape {arr.shape}, expected {want}")
