"""UV layouts for exported meshes: anny's own MakeHuman UVs where they fit the topology, a triangle atlas elsewhere.

Conventions: ``uv`` in [0, 1], u to the right, **v up** (OBJ / OpenGL: v = 0 is the bottom row of the image).
glTF counts v downwards; :mod:`p2m.export.gltf` flips it when writing. A layout is indexed per face corner,
like OBJ's ``f v/vt``: ``uv[face_uv[f, k]]`` is the UV of corner k of face f, so UV seams need no split vertices
until a format demands them (:func:`split_seams`).

Which layout a body mesh gets (:func:`body_uv_layout`):

- anny ``full`` topology: anny's own UVs (``texture_coordinates``, MakeHuman's layout, 62.6 % of the square used,
  no overlaps).
- anny ``notoes``: the same UVs carried over. 97.8 % of its faces are faces of the full mesh (same vertices,
  exactly); the remaining 542 (toes, re-meshed) take the affine UV map of the nearest full-mesh face, which
  overlaps other faces on 0.03 % of the used texels.
- anything else (the decimated ``notoes_collapse*`` meshes, SMPL, any mesh): a per-triangle atlas, two triangles
  per square cell with a one-texel gutter. Decimated triangles straddle the MakeHuman seams, so carried-over UVs
  would overlap on 4-5 % of the texels; the atlas never overlaps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy, closest_points

logger = logging.getLogger(__name__)

__all__ = [
    "UVLayout",
    "anny_uv_layout",
    "body_uv_layout",
    "per_vertex_layout",
    "rasterize_uv",
    "split_seams",
    "triangle_atlas",
]

#: Bump when the layout construction changes: cached layouts of another version are rebuilt.
UV_VERSION = 2
#: Share of a topology's faces that must be faces of anny's full mesh for the MakeHuman UVs to be carried over.
MIN_EXACT_SHARE = 0.9


@dataclass(frozen=True)
class UVLayout:
    """Texture coordinates indexed per face corner.

    Attributes:
        uv: (T, 2) float64 texture coordinates in [0, 1], v up (OBJ convention).
        face_uv: (F, 3) int64 indices into ``uv``, one per corner of each mesh face.
        kind: where it came from: ``"anny"`` (MakeHuman UVs), ``"atlas"`` (per-triangle atlas) or ``"given"``.
    """

    uv: np.ndarray
    face_uv: np.ndarray
    kind: str = "given"

    def __post_init__(self) -> None:
        uv = np.asarray(self.uv, np.float64)
        face_uv = np.asarray(self.face_uv, np.int64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"UVLayout: uv has shape {uv.shape}, expected (T, 2)")
        if face_uv.ndim != 2 or face_uv.shape[1] != 3:
            raise ValueError(f"UVLayout: face_uv has shape {face_uv.shape}, expected (F, 3)")
        if face_uv.size and (face_uv.min() < 0 or face_uv.max() >= len(uv)):
            raise ValueError(
                f"UVLayout: face_uv indexes {face_uv.min()}..{face_uv.max()}, uv has {len(uv)} rows"
            )
        object.__setattr__(self, "uv", uv)
        object.__setattr__(self, "face_uv", face_uv)

    @property
    def num_faces(self) -> int:
        return int(self.face_uv.shape[0])

    def corners(self) -> np.ndarray:
        """(F, 3, 2) UV of every face corner."""
        return self.uv[self.face_uv]


def per_vertex_layout(uv: Any, faces: Any) -> UVLayout:
    """A layout from one UV per vertex (no seams).

    Args:
        uv: (V, 2) texture coordinates, v up.
        faces: (F, 3) int vertex indices.
    """
    return UVLayout(as_numpy(uv), as_numpy(faces, np.int64), kind="given")


def as_layout(uv: UVLayout | Any, faces: Any) -> UVLayout:
    """``uv`` itself when it is a :class:`UVLayout`, else :func:`per_vertex_layout` of a (V, 2) array."""
    layout = uv if isinstance(uv, UVLayout) else per_vertex_layout(uv, faces)
    num_faces = len(as_numpy(faces, np.int64))
    if layout.num_faces != num_faces:
        raise ValueError(f"UV layout has {layout.num_faces} faces, the mesh has {num_faces}")
    return layout


def triangle_atlas(num_faces: int, tex_size: int = 1024, gutter: float = 1.0) -> UVLayout:
    """A per-triangle atlas: face pairs share a square cell, split along its diagonal, with a gutter.

    Every triangle is drawn as a right isosceles triangle regardless of its 3D shape (so texel density
    varies over the body), no two triangles share a texel, and the gutter (``gutter`` texels on each side
    of each triangle) keeps bilinear lookups inside a cell.

    Args:
        num_faces: F.
        tex_size: the side of the square texture in texels the atlas is laid out for.
        gutter: texels kept free around each triangle.

    Returns:
        A :class:`UVLayout` with 3 UVs per face (``face_uv = arange(3F).reshape(F, 3)``), ``kind="atlas"``.

    Raises:
        ValueError: cells would be under 8 texels: use a bigger ``tex_size``.
    """
    if num_faces <= 0:
        raise ValueError(f"triangle_atlas: num_faces {num_faces} must be positive")
    cells = math.ceil(math.sqrt(math.ceil(num_faces / 2)))
    size = tex_size / cells
    if size < 8:
        need = 8 * cells
        raise ValueError(
            f"triangle_atlas: {num_faces} faces in a {tex_size}-texel texture leave {size:.1f}-texel cells "
            f"(at least 8 needed): use tex_size >= {need}"
        )
    g = float(gutter)
    idx = np.arange(num_faces)
    cell = idx // 2
    x0, y0 = (cell % cells) * size, (cell // cells) * size  # texel units, y down from the top row
    lower = np.stack([[g, g], [size - 2 * g, g], [g, size - 2 * g]])
    upper = np.stack([[size - g, size - g], [2 * g, size - g], [size - g, 2 * g]])
    local = np.where((idx % 2 == 0)[:, None, None], lower[None], upper[None])  # (F, 3, 2) x right, y down
    pix = local + np.stack([x0, y0], axis=1)[:, None, :]
    uv = np.empty_like(pix)
    uv[..., 0] = pix[..., 0] / tex_size
    uv[..., 1] = 1.0 - pix[..., 1] / tex_size  # v up
    return UVLayout(uv.reshape(-1, 2), np.arange(3 * num_faces).reshape(num_faces, 3), kind="atlas")


def _carry_over(full_model: Any, model: Any) -> tuple[UVLayout, float, int] | None:
    """anny's full-mesh UVs carried to another anny topology of the same template; None when they do not fit."""
    from scipy.spatial import cKDTree

    full_uv = as_numpy(full_model.texture_coordinates)
    full_fuv = as_numpy(full_model.face_texture_coordinate_indices, np.int64)
    full_faces = as_numpy(full_model.faces, np.int64)
    full_verts = as_numpy(full_model.template_vertices)
    verts = as_numpy(model.template_vertices)
    faces = as_numpy(model.faces, np.int64)

    dist, nearest = cKDTree(full_verts).query(verts)
    same = dist < 1e-7
    lookup = {tuple(sorted(f)): i for i, f in enumerate(full_faces.tolist())}
    out = np.empty((len(faces), 3, 2))
    exact = np.zeros(len(faces), bool)
    for i, face in enumerate(faces):
        if not same[face].all():
            continue
        j = lookup.get(tuple(sorted(nearest[face].tolist())))
        if j is None:
            continue
        corner_uv = {int(full_faces[j, k]): full_uv[full_fuv[j, k]] for k in range(3)}
        out[i] = [corner_uv[int(nearest[v])] for v in face]
        exact[i] = True
    share = float(exact.mean())
    if share < MIN_EXACT_SHARE:
        return None
    rest = np.nonzero(~exact)[0]
    if len(
        rest
    ):  # the affine UV map of the full-mesh face nearest to each face's centroid, extended to its corners
        tri, _, _ = closest_points(verts[faces[rest]].mean(axis=1), full_verts, full_faces)
        a = full_verts[full_faces[tri]]  # (n, 3, 3)
        basis = np.stack([a[:, 1] - a[:, 0], a[:, 2] - a[:, 0]], axis=2)  # (n, 3, 2)
        rel = verts[faces[rest]] - a[:, :1]  # (n, 3 corners, 3)
        gram = np.einsum("nda,ndb->nab", basis, basis)
        rhs = np.einsum("nda,nkd->nka", basis, rel)
        ab = np.linalg.solve(gram[:, None], rhs[..., None])[
            ..., 0
        ]  # (n, 3, 2) coordinates in the face's edges
        u = full_uv[full_fuv[tri]]  # (n, 3, 2)
        out[rest] = u[:, :1] + ab[..., :1] * (u[:, 1:2] - u[:, :1]) + ab[..., 1:] * (u[:, 2:3] - u[:, :1])
    uv, face_uv = np.unique(out.reshape(-1, 2), axis=0, return_inverse=True)  # corners share identical UVs
    return UVLayout(uv, face_uv.reshape(-1, 3), kind="anny"), share, len(rest)


def _cache_path(topology: str) -> Any:
    from p2m.paths import cache_dir

    return cache_dir() / "export" / f"anny-uv-{topology}-v{UV_VERSION}.npz"


def anny_uv_layout(body: Any) -> UVLayout | None:
    """anny's MakeHuman UVs for an :class:`~p2m.body.anny_model.AnnyBody`'s topology, or None where they do not fit.

    ``full`` uses anny's own per-corner UVs; other topologies carry them over from the full mesh when at least
    :data:`MIN_EXACT_SHARE` of their faces are full-mesh faces (``notoes``), and the result is cached under
    ``<cache>/export/``. Decimated topologies get None (use :func:`triangle_atlas`).
    """
    import io

    from p2m.io import write_bytes

    model = body.anny
    if getattr(model, "texture_coordinates", None) is not None:
        return UVLayout(
            as_numpy(model.texture_coordinates),
            as_numpy(model.face_texture_coordinate_indices, np.int64),
            "anny",
        )
    path = _cache_path(body.topology)
    if path.exists():
        try:
            with np.load(path) as data:
                if bool(data["fits"]):
                    return UVLayout(data["uv"], data["face_uv"], kind="anny")
                return None
        except Exception as exc:  # a truncated or foreign file: rebuild it
            logger.warning("%s: unreadable UV cache (%s); rebuilding it", path, exc)
    from p2m.body.anny_model import load_anny

    full = load_anny(body.rig, "full")
    found = _carry_over(full, model)
    buf = io.BytesIO()
    if found is None:
        np.savez(buf, fits=np.array(False))
        logger.info("anny topology %s: MakeHuman UVs do not fit; using a triangle atlas", body.topology)
    else:
        layout, share, patched = found
        np.savez(buf, fits=np.array(True), uv=layout.uv, face_uv=layout.face_uv)
        logger.info(
            "anny topology %s: MakeHuman UVs carried over (%.1f %% exact faces, %d patched)",
            body.topology,
            100 * share,
            patched,
        )
    write_bytes(path, buf.getvalue())
    return None if found is None else found[0]


def body_uv_layout(body: Any, tex_size: int = 1024) -> UVLayout:
    """The UV layout p2m uses for a body model's mesh (see the module docstring for which one).

    Args:
        body: a body model from :func:`p2m.body.create`.
        tex_size: texture side in texels (the atlas is laid out for it).
    """
    if getattr(body, "model_name", None) == "anny":
        layout = anny_uv_layout(body)
        if layout is not None:
            return layout
    return triangle_atlas(int(body.faces.shape[0]), tex_size)


def split_seams(faces: Any, layout: UVLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One vertex per distinct (vertex, uv) pair, for formats with a single index per vertex (glTF).

    Args:
        faces: (F, 3) int vertex indices.
        layout: its UV layout.

    Returns:
        ``(source, uv, new_faces)``: (N,) index of the original vertex of each new vertex, (N, 2) its UV and
        (F, 3) the faces over the new vertices. Per-vertex data of the original mesh ``x`` becomes ``x[source]``.
    """
    tris = as_numpy(faces, np.int64)
    if layout.num_faces != len(tris):
        raise ValueError(f"split_seams: layout has {layout.num_faces} faces, mesh has {len(tris)}")
    pairs = np.stack([tris.ravel(), layout.face_uv.ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], layout.uv[unique[:, 1]], inverse.reshape(-1, 3)


def rasterize_uv(layout: UVLayout, tex_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which face covers each texel centre, and where: the UV triangles drawn into a square texture.

    Texel (row r, column c) has its centre at ``u = (c + 0.5) / T``, ``v = 1 - (r + 0.5) / T``.

    Args:
        layout: the UV layout.
        tex_size: T.

    Returns:
        ``(face, bary)``: (T, T) int face index (-1 where no triangle covers the texel) and (T, T, 3) float32
        barycentric weights of that face's corners.
    """
    from p2m.render import render_mesh

    t = int(tex_size)
    if t <= 0:
        raise ValueError(f"rasterize_uv: tex_size {tex_size} must be positive")
    corners = layout.corners().reshape(-1, 2)
    # An orthographic draw through the rasteriser: z = 1, f = 1, so pixel = (x, y) with pixel centres at integers.
    pts = np.stack([corners[:, 0] * t - 0.5, (1.0 - corners[:, 1]) * t - 0.5, np.ones(len(corners))], axis=1)
    tri = np.arange(len(corners)).reshape(-1, 3)
    r = render_mesh(pts, tri, 1.0, (0.0, 0.0), image_size=(t, t), ambient=1.0)
    return r.face_index, r.bary
