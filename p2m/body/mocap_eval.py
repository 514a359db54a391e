"""How close retargeted poses come to the mocap: the body's H36M joints against the BVH joints, scale-aligned."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from p2m.body.bvh import BVHMotion, read_bvh
from p2m.body.retarget import axes_to_anny, canonical_joint_index, guess_unit, retarget

logger = logging.getLogger(__name__)

#: CMU joint (MotionBuilder names) per H36M-17 joint, Pose2Mesh order (cmu-mocap NOTES.md). "Nose" is the
#: midpoint of Head and its End Site, "Head" the End Site.
CMU_TO_H36M: tuple[str, ...] = (
    "Hips", "RightUpLeg", "RightLeg", "RightFoot", "LeftUpLeg", "LeftLeg", "LeftFoot", "Spine", "Neck",
    "nose:Head", "end:Head", "LeftArm", "LeftForeArm", "LeftHand", "RightArm", "RightForeArm", "RightHand",
)  # fmt: skip


def cmu_h36m_joints(
    motion: BVHMotion,
    frames: np.ndarray | slice | None = None,
    unit_m: float | None = None,
    definition: str = "notes",
) -> np.ndarray:
    """H36M-17 joints of a CMU clip from its BVH forward kinematics.

    Args:
        motion: the clip.
        frames: which frames; all when None.
        unit_m: metres per file unit (guessed when None).
        definition: ``"notes"``: the cmu-mocap NOTES.md table (:data:`CMU_TO_H36M`: Pelvis = Hips, Torso =
            Spine, Neck = Neck, Nose = between Head and its End Site, Head = the End Site). ``"matched"``: the
            same, except Pelvis, Neck and Torso built the way p2m's body regressor builds them (mean of the hips,
            mean of the shoulders, mean of those two), so only the joints' own definitions differ.

    Returns:
        (T, 17, 3) float64 metres, in anny's axes (Z up, facing -Y).
    """
    if definition not in ("notes", "matched"):
        raise ValueError(f"definition must be 'notes' or 'matched', got {definition!r}")
    sk = motion.skeleton
    index = canonical_joint_index(sk, motion.path)
    axes = axes_to_anny(sk, index, motion.path)
    if unit_m is None:
        unit_m = guess_unit(sk, index)
    frame_idx = np.arange(motion.num_frames)[frames if frames is not None else slice(None)]
    pos, _, ends = motion.forward_kinematics(frame_idx, scale=unit_m)
    head_end = int(np.flatnonzero(sk.end_parents == index["Head"])[0])
    out = []
    for spec in CMU_TO_H36M:
        if spec == "end:Head":
            out.append(ends[:, head_end])
        elif spec == "nose:Head":
            out.append(0.5 * (pos[:, index["Head"]] + ends[:, head_end]))
        else:
            out.append(pos[:, index[spec]])
    joints = np.stack(out, 1)
    if definition == "matched":
        joints[:, 0] = 0.5 * (pos[:, index["LeftUpLeg"]] + pos[:, index["RightUpLeg"]])
        joints[:, 8] = 0.5 * (pos[:, index["LeftArm"]] + pos[:, index["RightArm"]])
        joints[:, 7] = 0.5 * (joints[:, 0] + joints[:, 8])
    return joints @ axes.T


def scale_aligned_errors(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float]:
    """Distances after aligning ``ref`` onto ``pred`` by one global scale and a per-frame translation.

    No rotation is fitted, on purpose: a rotation would hide errors of the retargeted global orientation.
    The scale absorbs the size difference between the mocap subject and the body; the translation (the
    least-squares one, i.e. centroids matched) absorbs the root offset.

    Args:
        pred: (T, K, 3) body joints, metres.
        ref: (T, K, 3) mocap joints, metres.

    Returns:
        per-joint distances (T, K) in metres, and the fitted scale (ref units -> pred units).
    """
    p = pred - pred.mean(1, keepdims=True)
    r = ref - ref.mean(1, keepdims=True)
    scale = float((p * r).sum() / max((r * r).sum(), 1e-12))
    return np.linalg.norm(p - scale * r, axis=-1), scale


def measure_clip(
    path: str | Path,
    body,
    every: int = 4,
    batch: int = 256,
    drop_first: bool = True,
    definition: str = "notes",
) -> tuple[np.ndarray, float]:
    """Retarget one BVH clip, pose ``body`` with it and compare the body's H36M joints with the mocap's.

    Args:
        path: a CMU BVH file.
        body: a ``p2m.body`` model with the ``cmu_mb`` rig (default shape is used).
        every: keep every N-th frame.
        batch: frames per forward pass.
        drop_first: skip frame 0 (cgspeed's synthetic T-pose).
        definition: the mocap joints' definition, see :func:`cmu_h36m_joints`.

    Returns:
        (T, 17) distances in metres after :func:`scale_aligned_errors`, and the fitted scale.
    """
    import torch

    motion = read_bvh(path)
    frames = slice(1 if drop_first else 0, None, every)
    rt = retarget(motion, frames)
    ref = cmu_h36m_joints(motion, rt.frames, rt.unit_m, definition)
    pose = torch.as_tensor(rt.pose, device=body.h36m_regressor.device)
    with torch.no_grad():
        pred = [body(pose[i : i + batch]).joints.cpu().double().numpy() for i in range(0, len(pose), batch)]
    return scale_aligned_errors(np.concatenate(pred), ref)
