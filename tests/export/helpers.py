"""Test helpers written independently of p2m.export: a UV sphere, a textured render, a glTF reader and LBS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2m.export import UVLayout
from p2m.render import render_mesh


def uv_sphere(
    n_lat: int = 32, n_lon: int = 64, radius: float = 1.0
) -> tuple[np.ndarray, np.ndarray, UVLayout]:
    """A latitude-longitude sphere with one pole vertex each and a UV seam at longitude 0.

    Faces run counter-clockwise seen from outside. UV: u = longitude / 2 pi, v = 1 - latitude / pi (v up).
    """
    lat = np.linspace(0.0, np.pi, n_lat + 1)
    lon = np.linspace(0.0, 2.0 * np.pi, n_lon + 1)
    index: dict[tuple[int, int], int] = {}
    verts: list[list[float]] = []
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    face_uv: list[list[int]] = []

    def vertex(i: int, j: int) -> int:
        key = (i, 0) if i in (0, n_lat) else (i, j % n_lon)
        if key not in index:
            th, ph = lat[key[0]], lon[key[1]]
            index[key] = len(verts)
            verts.append(
                [radius * np.sin(th) * np.cos(ph), -radius * np.cos(th), radius * np.sin(th) * np.sin(ph)]
            )
        return index[key]

    def texcoord(i: int, j: int) -> int:
        uvs.append([j / n_lon, 1.0 - i / n_lat])
        return len(uvs) - 1

    for i in range(n_lat):
        for j in range(n_lon):
            for tri in (((i, j), (i + 1, j + 1), (i, j + 1)), ((i, j), (i + 1, j), (i + 1, j + 1))):
                vs = [vertex(*p) for p in tri]
                if len(set(vs)) == 3:
                    faces.append(vs)
                    face_uv.append([texcoord(*p) for p in tri])
    v, f = np.asarray(verts), np.asarray(faces)
    normal = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.einsum("fd,fd->f", normal, v[f].mean(axis=1)) > 0).all(), "sphere faces must wind outwards"
    return v, f, UVLayout(np.asarray(uvs), np.asarray(face_uv))


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup, pixel centres at integers, clamped (the test's own, not p2m's)."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.clip(np.floor(x).astype(int), 0, w - 2), np.clip(np.floor(y).astype(int), 0, h - 2)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    im = image.astype(np.float64)
    top = im[y0, x0] * (1 - ax) + im[y0, x0 + 1] * ax
    bottom = im[y0 + 1, x0] * (1 - ax) + im[y0 + 1, x0 + 1] * ax
    return top * (1 - ay) + bottom * ay


def render_textured(
    verts: np.ndarray,
    faces: np.ndarray,
    layout: UVLayout,
    texture: np.ndarray,
    f: float,
    c,
    size: tuple[int, int],
    background=(0, 255, 0),
) -> np.ndarray:
    """A photo of a textured mesh: per pixel, the visible face and barycentrics -> UV -> bilinear texture lookup."""
    r = render_mesh(verts, faces, f, c, image_size=size, background=background)
    pix = np.nonzero(r.mask.ravel())[0]
    face = r.face_index.ravel()[pix]
    bary = r.bary.reshape(-1, 3)[pix].astype(np.float64)
    uv = np.einsum("nk,nkd->nd", bary, layout.uv[layout.face_uv[face]])
    t_h, t_w = texture.shape[:2]
    photo = r.image.reshape(-1, 3).copy()
    photo[pix] = np.clip(
        np.rint(bilinear(texture, uv[:, 0] * t_w - 0.5, (1.0 - uv[:, 1]) * t_h - 0.5)), 0, 255
    )
    return photo.reshape(size[1], size[0], 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two 0..255 arrays."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------------------------
# Reading a .glb back with pygltflib, and linear blend skinning from what was read.
# ---------------------------------------------------------------------------------------------------------------
_COMPONENTS = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def load_glb(path: Path):
    import pygltflib

    return pygltflib.GLTF2().load(str(path))


def accessor(gltf, index: int) -> np.ndarray:
    """An accessor's data as a (count, width) array (tightly packed views only, as p2m writes them)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    dtype = np.dtype(_COMPONENTS[acc.componentType])
    width = _WIDTH[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    data = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    return data.reshape(acc.count, width)


def node_local(node) -> np.ndarray:
    """A node's local 4x4 matrix from translation / rotation (xyzw) / scale."""
    from scipy.spatial.transform import Rotation

    m = np.eye(4)
    if node.rotation is not None:
        m[:3, :3] = Rotation.from_quat(node.rotation).as_matrix()
    if node.scale is not None:
        m[:3, :3] = m[:3, :3] * np.asarray(node.scale)[None, :]
    if node.translation is not None:
        m[:3, 3] = node.translation
    return m


def world_matrices(gltf, rotations: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """World matrix of every node reachable from the scene, with optional extra local rotations (3x3) by node."""
    rotations = rotations or {}
    out: dict[int, np.ndarray] = {}

    def visit(n: int, parent: np.ndarray) -> None:
        local = node_local(gltf.nodes[n])
        if n in rotations:
            local[:3, :3] = local[:3, :3] @ rotations[n]
        out[n] = parent @ local
        for child in gltf.nodes[n].children or []:
            visit(child, out[n])

    for root in gltf.scenes[gltf.scene].nodes:
        visit(root, np.eye(4))
    return out


def skin_data(gltf) -> dict[str, np.ndarray]:
    """POSITION, JOINTS_0, WEIGHTS_0, indices and the inverse bind matrices (row-major 4x4) of mesh 0 / skin 0."""
    prim = gltf.meshes[0].primitives[0]
    skin = gltf.skins[0]
    ibm = (
        accessor(gltf, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    )  # column-major on disk
    return {
        "positions": accessor(gltf, prim.attributes.POSITION).astype(np.float64),
        "joints": accessor(gltf, prim.attributes.JOINTS_0).astype(np.int64),
        "weights": accessor(gltf, prim.attributes.WEIGHTS_0).astype(np.float64),
        "indices": accessor(gltf, prim.indices).reshape(-1, 3).astype(np.int64),
        "ibm": ibm.astype(np.float64),
        "skin_joints": np.asarray(skin.joints),
    }


def lbs(gltf, rotations: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Linear blend skinning of the glb's mesh, per the glTF spec: sum_k w_k * world(joint_k) @ ibm_k @ v."""
    data = skin_data(gltf)
    world = world_matrices(gltf, rotations)
    joint_mats = np.stack([world[n] @ data["ibm"][k] for k, n in enumerate(data["skin_joints"])])  # (J, 4, 4)
    blend = np.einsum("vk,vkab->vab", data["weights"], joint_mats[data["joints"]])
    homog = np.concatenate([data["positions"], np.ones((len(data["positions"]), 1))], axis=1)
    return np.einsum("vab,vb->va", blend, homog)[:, :3]
