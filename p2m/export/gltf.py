"""A rigged, optionally textured glTF 2.0 binary (.glb) writer, by hand (json + struct): no glTF package needed.

What a written file holds (glTF 2.0, Y up, metres, a mesh's front towards +Z):

- one mesh (POSITION, NORMAL, JOINTS_0, WEIGHTS_0, and TEXCOORD_0 when textured; UINT32 indices);
- one skin: a joint node per skeleton joint, chained by ``parents``, and inverse bind matrices;
- the bind pose is the mesh as given: joint nodes carry a translation (offset from the parent joint) and no
  rotation, so every joint frame has world-aligned axes at bind and its inverse bind matrix is a pure
  translation by ``-joint``. Rotating a joint node swings the vertices it weighs (and its children's) about it;
- ``pose`` (optional): per-joint rotations written into the joint nodes, in those world-aligned joint axes
  (the convention of anny's "local-ref" and SMPL axis-angle);
- per vertex at most 4 joint influences, summing to 1 (the largest weights of the input, renormalised);
- a material: the embedded PNG texture (``baseColorTexture``) or a plain skin tone.

p2m's camera frame (x right, y down, z forward) becomes glTF's by :func:`camera_to_gltf` (a 180 degree turn
about x): a person facing the camera then stands upright facing +Z, glTF's front.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy
from p2m.export.uv import UVLayout, as_layout, split_seams

logger = logging.getLogger(__name__)

__all__ = [
    "CAMERA_TO_GLTF",
    "MAX_INFLUENCES",
    "camera_to_gltf",
    "limit_influences",
    "write_rigged_glb",
]

#: Influences per vertex a glTF JOINTS_0 / WEIGHTS_0 pair holds.
MAX_INFLUENCES = 4
#: p2m camera axes (x right, y down, z forward) -> glTF axes (x right, y up, z towards the viewer).
CAMERA_TO_GLTF = np.diag([1.0, -1.0, -1.0])
#: The colour of an untextured mesh (linear RGBA).
DEFAULT_BASE_COLOR = (0.8, 0.62, 0.5, 1.0)

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT8, _UINT16, _UINT32 = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def camera_to_gltf(points: Any, unit: float = 1.0) -> np.ndarray:
    """Points in p2m's camera frame to glTF axes, optionally rescaled (``unit=1e-3`` for millimetres to metres).

    Args:
        points: (..., 3) camera-frame points (x right, y down, z forward).
        unit: multiplier applied first.

    Returns:
        (..., 3) float64 points with x right, y up, z towards the camera.
    """
    return as_numpy(points) * unit @ CAMERA_TO_GLTF.T


def limit_influences(weights: Any, k: int = MAX_INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` largest skin weights of every vertex and renormalise them to sum to 1.

    Args:
        weights: (V, J) non-negative weights (round-off down to -1e-6 is clipped); every row needs a positive entry.
        k: influences to keep.

    Returns:
        ``(indices, weights)``: (V, k) int64 joint indices (largest weight first; 0 in unused slots) and (V, k)
        float32 weights summing to 1 in float32 (the largest absorbs the rounding), 0 in unused slots.

    Raises:
        ValueError: a negative or non-finite weight, or a vertex without any positive weight.
    """
    w = as_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"skin weights have shape {w.shape}, expected (V, J)")
    if not np.isfinite(w).all() or (w < -1e-6).any():
        bad = int(np.nonzero(~np.isfinite(w).all(1) | (w < -1e-6).any(1))[0][0])
        raise ValueError(f"skin weights: vertex {bad} has a negative or non-finite weight: {w[bad].tolist()}")
    w = np.maximum(w, 0.0)  # round-off below zero (anny's weights hold some -1e-10)
    kk = min(k, w.shape[1])
    order = np.argsort(-w, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(w, order, axis=1)
    total = top.sum(axis=1)
    if (total <= 0).any():
        bad = int(np.nonzero(total <= 0)[0][0])
        raise ValueError(f"skin weights: vertex {bad} has no positive weight (every vertex needs a joint)")
    top = (top / total[:, None]).astype(np.float32)
    top[:, 0] = np.float32(1.0) - top[:, 1:].sum(axis=1, dtype=np.float32)
    order = np.where(top > 0, order, 0)
    idx = np.zeros((len(w), k), np.int64)
    out = np.zeros((len(w), k), np.float32)
    idx[:, :kk], out[:, :kk] = order, top
    return idx, out


def _influences(skin_weights: Any, num_vertices: int, num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(skin_weights, tuple):
        if len(skin_weights) != 2:
            raise ValueError(
                "skin_weights: expected a (V, J) array or a pair (indices (V, K), weights (V, K))"
            )
        idx = as_numpy(skin_weights[0], np.int64)
        w = as_numpy(skin_weights[1])
        if idx.shape != w.shape or idx.ndim != 2 or len(idx) != num_vertices:
            raise ValueError(
                f"skin_weights: indices {idx.shape} and weights {w.shape} must both be ({num_vertices}, K)"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= num_joints):
            raise ValueError(
                f"skin_weights: joint indices {idx.min()}..{idx.max()}, skeleton has {num_joints}"
            )
        dense = np.zeros((num_vertices, num_joints))
        np.add.at(dense, (np.repeat(np.arange(num_vertices), idx.shape[1]), idx.ravel()), w.ravel())
    else:
        dense = as_numpy(skin_weights)
        if dense.shape != (num_vertices, num_joints):
            raise ValueError(f"skin_weights has shape {dense.shape}, expected ({num_vertices}, {num_joints})")
    return limit_influences(dense)


def _check_parents(parents: Any, num_joints: int) -> np.ndarray:
    """(J,) parent indices -> a topological order (parents before children); raises on cycles or bad indices."""
    par = as_numpy(parents, np.int64)
    if par.shape != (num_joints,):
        raise ValueError(f"parents has shape {par.shape}, expected ({num_joints},)")
    if ((par < -1) | (par >= num_joints)).any():
        raise ValueError(f"parents: indices must be -1 (root) or 0..{num_joints - 1}, got {par.tolist()}")
    depth = np.full(num_joints, -1)
    for j in range(num_joints):
        chain: list[int] = []
        k = j
        while k != -1 and depth[k] < 0:
            if k in chain:
                raise ValueError(f"parents: joint {j} is its own ancestor (cycle through {chain})")
            chain.append(k)
            k = int(par[k])
        base = -1 if k == -1 else int(depth[k])
        for step, node in enumerate(reversed(chain)):
            depth[node] = base + 1 + step
    order = sorted(range(num_joints), key=lambda j: depth[j])
    return np.asarray(order, np.int64)


def _quaternions(pose: Any, num_joints: int) -> np.ndarray:
    """(J, 3) axis-angle, (J, 3, 3) matrices or (J, 4) xyzw quaternions -> (J, 4) unit xyzw quaternions."""
    from scipy.spatial.transform import Rotation

    p = as_numpy(pose)
    if p.shape == (num_joints, 3):
        rot = Rotation.from_rotvec(p)
    elif p.shape == (num_joints, 3, 3):
        rot = Rotation.from_matrix(p)
    elif p.shape == (num_joints, 4):
        rot = Rotation.from_quat(p)
    else:
        raise ValueError(
            f"pose has shape {p.shape}, expected ({num_joints}, 3) axis-angle, ({num_joints}, 3, 3) rotation "
            f"matrices or ({num_joints}, 4) xyzw quaternions"
        )
    return rot.as_quat()


class _Buffer:
    """The BIN chunk under construction: 4-byte aligned buffer views and their accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, blob: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        entry: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(blob)}
        if target is not None:
            entry["target"] = target
        self.data.extend(blob)
        self.views.append(entry)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int | None, bounds: bool = False) -> int:
        component = {np.float32: _FLOAT, np.uint8: _UINT8, np.uint16: _UINT16, np.uint32: _UINT32}[
            array.dtype.type
        ]
        entry: dict[str, Any] = {
            "bufferView": self.view(np.ascontiguousarray(array).tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if bounds:
            flat = array.reshape(array.shape[0], -1)
            entry["min"] = [float(x) for x in flat.min(axis=0)]
            entry["max"] = [float(x) for x in flat.max(axis=0)]
        self.accessors.append(entry)
        return len(self.accessors) - 1


def _png(image: Any) -> bytes:
    from PIL import Image

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ValueError(
            f"texture image has shape {img.shape} and dtype {img.dtype}, expected (H, W, 3) uint8"
        )
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_rigged_glb(
    path: str | os.PathLike,
    vertices: Any,
    faces: Any,
    joints: Any,
    parents: Any,
    skin_weights: Any,
    names: Any = None,
    *,
    pose: Any = None,
    texture: tuple[Any, UVLayout | Any] | None = None,
    mesh_name: str = "body",
) -> None:
    """Write a skinned mesh as a glTF 2.0 binary, atomically (temp file + rename via :mod:`p2m.io`).

    Args:
        path: the ``.glb`` file to write.
        vertices: (V, 3) bind-pose positions in metres, glTF axes (Y up; see :func:`camera_to_gltf`).
        faces: (F, 3) int vertex indices, counter-clockwise seen from outside.
        joints: (J, 3) bind-pose joint positions, same frame.
        parents: (J,) parent joint index per joint, -1 for a root.
        skin_weights: (V, J) weights, or ``(indices (V, K), weights (V, K))``; reduced to the 4 largest per
            vertex and renormalised (:func:`limit_influences`).
        names: J joint names (default ``joint_<j>``).
        pose: optional per-joint rotations in the joint's world-aligned bind axes: (J, 3) axis-angle radians,
            (J, 3, 3) matrices or (J, 4) xyzw quaternions; None = the bind pose.
        texture: optional ``(image, uv)``: (H, W, 3) uint8 image and a :class:`~p2m.export.uv.UVLayout` or a
            (V, 2) per-vertex UV array (v up). Seams split vertices (their weights are copied).
        mesh_name: the glTF mesh and node name.

    Raises:
        ValueError: shapes that do not fit together, a cycle in ``parents``, bad weights.
    """
    from p2m.io import write_bytes
    from p2m.render import vertex_normals

    verts = as_numpy(vertices)
    tris = as_numpy(faces, np.int64)
    jpos = as_numpy(joints)
    if verts.ndim != 2 or verts.shape[1] != 3 or not np.isfinite(verts).all():
        raise ValueError(f"vertices: expected finite (V, 3) metres, got shape {verts.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3 or (tris.size and (tris.min() < 0 or tris.max() >= len(verts))):
        raise ValueError(f"faces: expected (F, 3) indices into {len(verts)} vertices, got shape {tris.shape}")
    if jpos.ndim != 2 or jpos.shape[1] != 3 or len(jpos) == 0 or not np.isfinite(jpos).all():
        raise ValueError(f"joints: expected finite (J, 3) metres, got shape {jpos.shape}")
    num_joints = len(jpos)
    par = as_numpy(parents, np.int64)
    _check_parents(par, num_joints)
    joint_names = [f"joint_{j}" for j in range(num_joints)] if names is None else [str(n) for n in names]
    if len(joint_names) != num_joints:
        raise ValueError(f"names: {len(joint_names)} names for {num_joints} joints")
    idx, wts = _influences(skin_weights, len(verts), num_joints)
    quats = None if pose is None else _quaternions(pose, num_joints)
    normals = vertex_normals(verts, tris)

    uv = None
    if texture is not None:
        image, uv_in = texture
        png = _png(image)
        source, uv, tris = split_seams(tris, as_layout(uv_in, tris))
        verts, normals, idx, wts = verts[source], normals[source], idx[source], wts[source]

    buf = _Buffer()
    attributes = {
        "POSITION": buf.accessor(verts.astype(np.float32), "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": buf.accessor(normals.astype(np.float32), "VEC3", _ARRAY_BUFFER),
    }
    if uv is not None:  # glTF's v runs down the image
        gl_uv = np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1).astype(np.float32)
        attributes["TEXCOORD_0"] = buf.accessor(gl_uv, "VEC2", _ARRAY_BUFFER)
    joint_type = np.uint8 if num_joints <= 256 else np.uint16
    attributes["JOINTS_0"] = buf.accessor(idx.astype(joint_type), "VEC4", _ARRAY_BUFFER)
    attributes["WEIGHTS_0"] = buf.accessor(wts, "VEC4", _ARRAY_BUFFER)
    indices = buf.accessor(tris.reshape(-1).astype(np.uint32), "SCALAR", _ELEMENT_ARRAY_BUFFER, bounds=True)

    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (num_joints, 1, 1))
    inverse_bind[:, :3, 3] = -jpos.astype(np.float32)
    # glTF matrices are column-major: the transpose's row-major bytes.
    ibm = buf.accessor(np.ascontiguousarray(inverse_bind.transpose(0, 2, 1)), "MAT4", None)

    nodes: list[dict[str, Any]] = []
    for j in range(num_joints):
        offset = jpos[j] - (jpos[par[j]] if par[j] >= 0 else 0.0)
        node: dict[str, Any] = {"name": joint_names[j], "translation": [float(x) for x in offset]}
        children = [int(c) for c in np.nonzero(par == j)[0]]
        if children:
            node["children"] = children
        if quats is not None and not np.allclose(quats[j], [0.0, 0.0, 0.0, 1.0], atol=0.0):
            node["rotation"] = [float(x) for x in quats[j]]
        nodes.append(node)
    roots = [int(j) for j in np.nonzero(par < 0)[0]]
    nodes.append({"name": mesh_name, "mesh": 0, "skin": 0})
    skin: dict[str, Any] = {"name": "skeleton", "inverseBindMatrices": ibm, "joints": list(range(num_joints))}
    if len(roots) == 1:
        skin["skeleton"] = roots[0]

    material: dict[str, Any] = {"name": "skin", "doubleSided": False}
    pbr: dict[str, Any] = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "p2m"},
        "scene": 0,
        "scenes": [{"name": "scene", "nodes": [num_joints, *roots]}],
        "nodes": nodes,
        "meshes": [
            {
                "name": mesh_name,
                "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}],
            }
        ],
        "skins": [skin],
    }
    if uv is not None:
        gltf["images"] = [{"name": "texture", "mimeType": "image/png", "bufferView": buf.view(png)}]
        gltf["samplers"] = [
            {
                "magFilter": _LINEAR,
                "minFilter": _LINEAR_MIPMAP_LINEAR,
                "wrapS": _CLAMP_TO_EDGE,
                "wrapT": _CLAMP_TO_EDGE,
            }
        ]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
    else:
        pbr["baseColorFactor"] = list(DEFAULT_BASE_COLOR)
    material["pbrMetallicRoughness"] = pbr
    gltf["materials"] = [material]
    buf.data.extend(b"\0" * (-len(buf.data) % 4))
    gltf["accessors"] = buf.accessors
    gltf["bufferViews"] = buf.views
    gltf["buffers"] = [{"byteLength": len(buf.data)}]

    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(buf.data)
    blob = b"".join(
        [
            struct.pack("<III", _GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), _JSON_CHUNK),
            text,
            struct.pack("<II", len(buf.data), _BIN_CHUNK),
            bytes(buf.data),
        ]
    )
    write_bytes(path, blob)
    logger.info(
        "wrote %s: %d vertices, %d faces, %d joints%s",
        path,
        len(verts),
        len(tris),
        num_joints,
        ", textured" if uv is not None else "",
    )
