"""Skin weights and a skeleton for an exported mesh, taken from the body model's own linear blend skinning.

The skeleton a p2m ``.glb`` carries (default ``skeleton="h36m"``) is the H36M-17 skeleton of the *predicted*
3D joints: Pose2Mesh predicts those joints (regressed from its mesh), not the body model's 31 bone pivots, so
they are what an export can place exactly. Its parent chain is :data:`p2m.joints.H36M_SKELETON` rooted at the
Pelvis. The skin weights come from the body model: each body bone hands its weights to the H36M joint nearest
to its pivot (its head) in the rest pose, so anny's thigh goes to the hip, its shin to the knee, its hand and
finger bones to the wrist, its clavicle to the thorax ("Neck") and its head bone to the neck base ("Nose"); the
end joints Head (skull top) get no vertices. The blends between neighbouring bones survive this
aggregation, and :func:`p2m.export.gltf.limit_influences` keeps the 4 largest per vertex.

``skeleton="body"`` keeps the body model's own bones instead (e.g. anny cmu_mb's 31), for meshes whose bone
heads are known (a body model forward pass): pass them as ``joints``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy, closest_points, interpolate
from p2m.joints import H36M_JOINTS, H36M_ROOT, H36M_SKELETON

logger = logging.getLogger(__name__)

__all__ = ["SKELETONS", "Skin", "body_skinning_weights", "bone_to_h36m", "h36m_parents", "skin_from_body"]

#: Skeletons :func:`skin_from_body` builds.
SKELETONS = ("h36m", "body")


@dataclass(frozen=True)
class Skin:
    """A skeleton and per-vertex weights, ready for :func:`p2m.export.gltf.write_rigged_glb`.

    Attributes:
        joints: (J, 3) bind-pose joint positions, the mesh's frame and unit.
        parents: (J,) int64 parent index per joint, -1 at the root.
        names: J joint names.
        weights: (V, J) float64 skin weights, rows summing to 1 (all influences, before the top-4 cut).
        bone_to_joint: (B,) which skeleton joint each body bone's weights went to (identity for ``"body"``).
    """

    joints: np.ndarray
    parents: np.ndarray
    names: tuple[str, ...]
    weights: np.ndarray
    bone_to_joint: np.ndarray


def h36m_parents() -> np.ndarray:
    """(17,) parent index of each H36M-17 joint (Pelvis = -1), from :data:`p2m.joints.H36M_SKELETON`."""
    parents = np.full(len(H36M_JOINTS), -1, np.int64)
    for a, b in H36M_SKELETON:
        parents[b] = a
    if (parents < 0).sum() != 1 or parents[H36M_ROOT] != -1:
        raise RuntimeError("p2m.joints.H36M_SKELETON is not a tree rooted at the Pelvis")
    return parents


def body_skinning_weights(body: Any) -> np.ndarray:
    """The body model's linear blend skinning weights.

    Args:
        body: an anny or SMPL layer from :func:`p2m.body.create`.

    Returns:
        (Vb, B) float64, rows summing to 1, columns in ``body.bone_names`` order.
    """
    if getattr(body, "model_name", None) == "anny":
        w = body.anny.dense_vertex_bone_weights
    elif getattr(body, "model_name", None) == "smpl":
        w = body.smpl.lbs_weights
    else:
        raise ValueError(f"skin weights: unsupported body model {type(body).__name__}; expected anny or smpl")
    w = np.maximum(as_numpy(w), 0.0)  # anny stores some -1e-10 round-off
    return w / w.sum(axis=1, keepdims=True)


def _rest(body: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rest-pose vertices (Vb, 3), H36M joints (17, 3) and bone heads (B, 3) of the default shape."""
    import torch

    with torch.no_grad():
        pose = torch.zeros((1, body.num_bones, 3), device=body.device)
        out = body(pose)
    return as_numpy(out.vertices[0]), as_numpy(out.joints[0]), as_numpy(out.bone_heads[0])


def bone_to_h36m(body: Any) -> np.ndarray:
    """For each body bone, the H36M-17 joint nearest to its head (its pivot) in the rest pose.

    Returns:
        (B,) int64 H36M joint index per bone (``body.bone_names`` order).
    """
    _, joints, heads = _rest(body)
    dist = np.linalg.norm(heads[:, None, :] - joints[None, :, :], axis=2)
    return dist.argmin(axis=1)


def skin_from_body(
    body: Any,
    vertices: Any,
    joints: Any = None,
    *,
    skeleton: str = "h36m",
    body_vertices: Any = None,
) -> Skin:
    """Skin weights and a skeleton for a mesh, from a body model's skinning.

    Args:
        body: the body model the mesh comes from (:func:`p2m.body.create`).
        vertices: (V, 3) the mesh to rig (any frame and unit; the bind pose).
        joints: ``"h36m"``: (17, 3) H36M joints of the mesh, same frame and unit (e.g. Pose2Mesh's
            ``joints_from_mesh``); None regresses them from ``vertices`` with the body's H36M regressor
            (same topology only). ``"body"``: (B, 3) bone heads, required.
        skeleton: ``"h36m"`` (default) or ``"body"`` (see the module docstring).
        body_vertices: only when the mesh's topology differs from the body's: (Vb, 3) the body mesh in the
            same pose, frame and unit as ``vertices``; each vertex takes the weights of its closest point on
            that surface (barycentric interpolation).

    Returns:
        A :class:`Skin`.

    Raises:
        ValueError: an unknown skeleton, or shapes that do not fit.
    """
    if skeleton not in SKELETONS:
        raise ValueError(f"unknown skeleton {skeleton!r}; expected one of: {', '.join(SKELETONS)}")
    verts = as_numpy(vertices)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"vertices: expected (V, 3), got shape {verts.shape}")
    bone_w = body_skinning_weights(body)
    same_topology = len(verts) == len(bone_w)
    if body_vertices is None:
        if not same_topology:
            raise ValueError(
                f"the mesh has {len(verts)} vertices and the body model {len(bone_w)}: pass body_vertices, the body "
                "mesh in the same pose and frame, to carry the weights over"
            )
        weights = bone_w
    else:
        bverts = as_numpy(body_vertices)
        if bverts.shape != (len(bone_w), 3):
            raise ValueError(f"body_vertices has shape {bverts.shape}, expected ({len(bone_w)}, 3)")
        tris = as_numpy(body.faces, np.int64)
        face, bary, dist = closest_points(verts, bverts, tris)
        weights = interpolate(bone_w, tris, face, bary)
        weights /= weights.sum(axis=1, keepdims=True)
        logger.info(
            "skin weights carried over: closest-point distance mean %.4g, max %.4g", dist.mean(), dist.max()
        )

    if skeleton == "body":
        if joints is None:
            raise ValueError(
                f"skeleton 'body' needs joints: the ({len(body.bone_names)}, 3) bone heads of the mesh"
            )
        jpos = as_numpy(joints)
        if jpos.shape != (len(body.bone_names), 3):
            raise ValueError(
                f"joints has shape {jpos.shape}, expected ({len(body.bone_names)}, 3) bone heads"
            )
        mapping = np.arange(len(body.bone_names))
        return Skin(jpos, np.asarray(body.bone_parents, np.int64), tuple(body.bone_names), weights, mapping)

    if joints is None:
        if not same_topology:
            raise ValueError(
                "joints=None regresses the H36M joints from the mesh, which needs the body's topology"
            )
        jpos = as_numpy(body.h36m_regressor) @ verts
    else:
        jpos = as_numpy(joints)
    if jpos.shape != (len(H36M_JOINTS), 3):
        raise ValueError(f"joints has shape {jpos.shape}, expected ({len(H36M_JOINTS)}, 3) H36M joints")
    mapping = bone_to_h36m(body)
    joint_w = np.zeros((len(verts), len(H36M_JOINTS)))
    np.add.at(joint_w.T, mapping, weights.T)
    return Skin(jpos, h36m_parents(), tuple(H36M_JOINTS), joint_w, mapping)
