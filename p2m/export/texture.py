"""Texture from a photo: project the image onto the fitted mesh into a UV texture, fill what the camera missed.

Per texel of the UV layout (:func:`p2m.export.uv.rasterize_uv` gives its face and barycentrics), the surface
point is projected through the camera and the photo is sampled bilinearly there. A texel counts as *seen* when

- its face turns towards the camera (cosine between the face normal and the view ray above ``min_cos``; the
  faces must run counter-clockwise seen from outside, as anny's and SMPL's do),
- the z-buffer agrees: :func:`p2m.render.render_mesh`'s ``face_index`` at the nearest pixel is that face or a
  face sharing a vertex with it (a texel on a triangle edge may land on the neighbour's pixel; an occluder is
  never a neighbour), and
- all four bilinear taps show the same surface: on the mesh, at the texel's depth to within what the surface's
  slope allows over a pixel (neither the background nor the edge of an occluder bleeds in).

Unseen texels are filled, in order: from the mirror side (the texel's surface point in a left/right symmetric
rest pose, reflected across the symmetry plane, takes the colour of the nearest seen texel within
``mirror_tol``: the left sleeve lends its colour to the hidden right one), then with the mean seen colour.
Texels outside every UV triangle (gutters) copy their nearest covered texel, so viewers' mipmaps and bilinear
lookups do not bleed black into the seams.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy
from p2m.export.uv import UVLayout, as_layout, rasterize_uv

logger = logging.getLogger(__name__)

__all__ = ["TextureResult", "sample_bilinear", "texture_from_photo", "write_textured_obj"]

#: The fill colour when no texel was seen at all (RGB 0..255): p2m's render skin tone.
FALLBACK_COLOR = (205.0, 180.0, 160.0)


@dataclass(frozen=True)
class TextureResult:
    """What :func:`texture_from_photo` returns; every mask is (T, T) over the texture.

    Attributes:
        texture: (T, T, 3) uint8 texture (row 0 = top = v 1).
        seen: texels sampled from the photo.
        mirrored: unseen texels filled from the mirror side.
        covered: texels inside a UV triangle (the rest is gutter).
        mean_color: (3,) float64 mean RGB of the seen texels (what the remaining unseen texels got).
        layout: the UV layout the texture belongs to.
    """

    texture: np.ndarray
    seen: np.ndarray
    mirrored: np.ndarray
    covered: np.ndarray
    mean_color: np.ndarray
    layout: UVLayout

    @property
    def seen_fraction(self) -> float:
        """Share of the covered texels that the photo saw."""
        return float(self.seen.sum() / max(int(self.covered.sum()), 1))


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup with pixel centres at integer coordinates (clamped at the border).

    Args:
        image: (H, W, C) array.
        x, y: (N,) column and row coordinates.

    Returns:
        (N, C) float64 values.
    """
    h, w = image.shape[:2]
    x = np.clip(np.asarray(x, np.float64), 0.0, w - 1.0)
    y = np.clip(np.asarray(y, np.float64), 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = (x - x0)[:, None], (y - y0)[:, None]
    img = image.astype(np.float64, copy=False)
    top = img[y0, x0] * (1 - ax) + img[y0, x1] * ax
    bottom = img[y1, x0] * (1 - ax) + img[y1, x1] * ax
    return top * (1 - ay) + bottom * ay


def _camera(
    verts: np.ndarray, f: Any, c: Any, weak_perspective: Any
) -> tuple[np.ndarray, float | tuple[float, float], tuple[float, float], Any, Any, bool]:
    """For the two camera kinds: render vertices, render f, render c, projection (points -> u, v), pixel size
    on the surface (depths -> vertex units per pixel) and whether the camera is orthographic."""
    if weak_perspective is not None:
        if f is not None or c is not None:
            raise ValueError(
                "texture_from_photo: give either f and c (pinhole) or weak_perspective, not both"
            )
        s, tx, ty = (float(v) for v in weak_perspective)
        if s <= 0:
            raise ValueError(f"texture_from_photo: weak_perspective scale {s} must be positive")

        def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return s * p[:, 0] + tx, s * p[:, 1] + ty

        # The rasteriser is a pinhole: put the mesh far away with a long lens (relative error ~1e-6 px/px).
        extent = float(np.ptp(verts, axis=0).max()) or 1.0
        dist = 1e6 * extent
        far = verts.copy()
        far[:, 2] = verts[:, 2] - verts[:, 2].mean() + dist
        return far, s * dist, (tx, ty), project, lambda z: np.full(len(z), 1.0 / s), True
    if f is None or c is None:
        raise ValueError(
            "texture_from_photo: a camera is needed: f and c (pinhole) or weak_perspective=(s, tx, ty)"
        )
    fx, fy = (float(f), float(f)) if np.ndim(f) == 0 else (float(f[0]), float(f[1]))
    cx, cy = float(c[0]), float(c[1])
    if (verts[:, 2] <= 0).all():
        raise ValueError(
            "texture_from_photo: every vertex is behind the camera (z <= 0); expected camera-frame z > 0"
        )

    def project(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.maximum(p[:, 2], 1e-12)
        return fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy

    return verts, (fx, fy), (cx, cy), project, lambda z: z / np.sqrt(fx * fy), False


def _mirror_fill(
    rest: np.ndarray, seen_colors: np.ndarray, seen: np.ndarray, todo: np.ndarray, axis: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """For the texels ``todo`` (indices), the colour of the seen texel nearest to their mirror point."""
    from scipy.spatial import cKDTree

    if not seen.any() or not len(todo):
        return np.zeros(0, np.int64), np.zeros((0, 3))
    tree = cKDTree(rest[seen])
    query = rest[todo].copy()
    query[:, axis] *= -1.0
    dist, nearest = tree.query(query, distance_upper_bound=tol)
    hit = np.isfinite(dist)
    return todo[hit], seen_colors[nearest[hit]]


def texture_from_photo(
    image: Any,
    vertices_cam: Any,
    faces: Any,
    uv: UVLayout | Any,
    *,
    f: Any = None,
    c: Any = None,
    weak_perspective: Any = None,
    tex_size: int = 1024,
    mirror_vertices: Any = None,
    mirror_axis: int = 0,
    mirror_tol: float | None = None,
    min_cos: float = 0.2,
    fill_color: Any = None,
) -> TextureResult:
    """Project a photo onto a mesh into a UV texture (see the module docstring for the rules).

    Args:
        image: (H, W, 3) uint8 photo.
        vertices_cam: (V, 3) mesh in the camera frame (x right, y down, z forward), any unit.
        faces: (F, 3) int, counter-clockwise seen from outside.
        uv: a :class:`~p2m.export.uv.UVLayout` (e.g. :func:`p2m.export.uv.body_uv_layout`) or (V, 2) UVs.
        f: pinhole focal length in pixels, scalar or (fx, fy); with ``c`` (cx, cy) pixels.
        c: principal point.
        weak_perspective: instead of f and c: (s, tx, ty), pixel = s * (x, y) + (tx, ty).
        tex_size: texture side T in texels.
        mirror_vertices: (V, 3) the same mesh in a left/right symmetric pose (anny: its rest pose) whose
            symmetry plane is coordinate ``mirror_axis`` = 0; None skips the mirror fill.
        mirror_axis: 0, 1 or 2 (anny's rest pose: 0, x = the subject's left).
        mirror_tol: how far (``mirror_vertices`` units) a mirror point may be from the seen texel it copies;
            default 3 texel spacings (the mean texel edge on the ``mirror_vertices`` surface).
        min_cos: faces seen at a grazing angle (cosine below this) count as unseen.
        fill_color: RGB for texels left after the mirror fill; default the mean seen colour.

    Returns:
        A :class:`TextureResult`.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"texture_from_photo: image has shape {img.shape}, expected (H, W, 3)")
    verts = as_numpy(vertices_cam)
    tris = as_numpy(faces, np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"texture_from_photo: vertices_cam has shape {verts.shape}, expected (V, 3)")
    if mirror_axis not in (0, 1, 2):
        raise ValueError(f"texture_from_photo: mirror_axis {mirror_axis} must be 0, 1 or 2")
    layout = as_layout(uv, tris)
    t = int(tex_size)
    height, width = img.shape[:2]
    from p2m.render import render_mesh

    render_verts, rf, rc, project, pixel_size, ortho = _camera(verts, f, c, weak_perspective)
    render = render_mesh(render_verts, tris, rf, rc, image_size=(width, height), ambient=1.0)
    face_img, bary_img = rasterize_uv(layout, t)
    covered = face_img >= 0
    texel = np.nonzero(covered.ravel())[0]
    face = face_img.ravel()[texel]
    bary = bary_img.reshape(-1, 3)[texel].astype(np.float64)
    corner = tris[face]
    point = np.einsum("nk,nkd->nd", bary, verts[corner])
    px, py = project(point)

    normal = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
    ray = np.broadcast_to([0.0, 0.0, 1.0], point.shape) if ortho else point
    ray = ray / np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-30)
    cos = -np.einsum("nd,nd->n", normal[face], ray)

    inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
    ok = inside & (cos > min_cos)
    sel = np.nonzero(ok)[0]
    near_x = np.clip(np.rint(px[sel]), 0, width - 1).astype(np.int64)
    near_y = np.clip(np.rint(py[sel]), 0, height - 1).astype(np.int64)
    hit = render.face_index[near_y, near_x]
    near = hit >= 0
    shares = (tris[np.maximum(hit, 0)][:, :, None] == corner[sel][:, None, :]).any(axis=(1, 2))
    # The four bilinear taps must show this surface: on the mesh, at the texel's depth (to within what the
    # surface's slope allows over a pixel), so neither the background nor an occluder's edge bleeds in.
    x0 = np.clip(np.floor(px[sel]).astype(np.int64), 0, width - 1)
    y0 = np.clip(np.floor(py[sel]).astype(np.int64), 0, height - 1)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    depth = point[sel, 2]
    footprint = pixel_size(depth)
    cos_sel = cos[sel]
    tol = 2.0 * footprint * (1.0 + np.sqrt(np.maximum(1.0 - cos_sel**2, 0.0)) / cos_sel)
    taps = np.ones(len(sel), bool)
    for ty, tx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)):
        tap_face = render.face_index[ty, tx]
        tap_bary = render.bary[ty, tx].astype(np.float64)
        tap_z = np.einsum("nk,nk->n", tap_bary, verts[tris[np.maximum(tap_face, 0)], 2])
        taps &= (tap_face >= 0) & (np.abs(tap_z - depth) <= tol)
    ok[sel] = near & shares & taps

    colors = np.zeros((len(texel), 3))
    colors[ok] = sample_bilinear(img, px[ok], py[ok])
    seen_flat = np.zeros(t * t, bool)
    seen_flat[texel[ok]] = True
    mean_color = colors[ok].mean(axis=0) if ok.any() else np.asarray(FALLBACK_COLOR)

    filled = ok.copy()
    mirrored_flat = np.zeros(t * t, bool)
    if mirror_vertices is not None:
        mverts = as_numpy(mirror_vertices)
        if mverts.shape != verts.shape:
            raise ValueError(f"mirror_vertices has shape {mverts.shape}, expected {verts.shape}")
        rest = np.einsum("nk,nkd->nd", bary, mverts[corner])
        if mirror_tol is None:
            e = mverts[tris]
            area = 0.5 * np.linalg.norm(np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]), axis=1).sum()
            mirror_tol = 3.0 * float(np.sqrt(area / max(len(texel), 1)))
        todo = np.nonzero(~ok)[0]
        got, got_colors = _mirror_fill(rest, colors[ok], ok, todo, mirror_axis, float(mirror_tol))
        colors[got] = got_colors
        filled[got] = True
        mirrored_flat[texel[got]] = True
    rest_fill = np.asarray(mean_color if fill_color is None else fill_color, np.float64).reshape(3)
    colors[~filled] = rest_fill

    tex = np.zeros((t * t, 3))
    tex[texel] = colors
    tex = tex.reshape(t, t, 3)
    if not covered.all() and covered.any():  # gutters: the nearest covered texel's colour
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
        tex = tex[iy, ix]
    n_cov = max(len(texel), 1)
    logger.info(
        "texture %dx%d: %.1f %% of the surface texels seen, %.1f %% mirrored, %.1f %% mean colour",
        t,
        t,
        100 * ok.sum() / n_cov,
        100 * mirrored_flat.sum() / n_cov,
        100 * (~filled).sum() / n_cov,
    )
    return TextureResult(
        texture=np.clip(np.rint(tex), 0, 255).astype(np.uint8),
        seen=seen_flat.reshape(t, t),
        mirrored=mirrored_flat.reshape(t, t),
        covered=covered,
        mean_color=mean_color,
        layout=layout,
    )


def write_textured_obj(
    path: str | os.PathLike,
    vertices: Any,
    faces: Any,
    uv: UVLayout | Any,
    texture: Any,
    texture_name: str | None = None,
) -> tuple[Path, Path, Path]:
    """Write a textured Wavefront OBJ: ``NAME.obj`` + ``NAME.mtl`` + ``NAME.png`` side by side, each atomically.

    Args:
        path: the ``.obj`` file (the ``.mtl`` and ``.png`` take its stem).
        vertices: (V, 3) positions (written as given; OBJ viewers expect Y up, see
            :func:`p2m.export.gltf.camera_to_gltf`).
        faces: (F, 3) int, counter-clockwise seen from outside.
        uv: a :class:`~p2m.export.uv.UVLayout` or (V, 2) UVs (v up, OBJ's convention).
        texture: (H, W, 3) uint8 image (e.g. ``TextureResult.texture``).
        texture_name: file name of the texture PNG beside the .obj (default ``NAME.png``).

    Returns:
        The (obj, mtl, png) paths.
    """
    import io

    from PIL import Image

    from p2m.io import write_bytes, write_text

    verts = as_numpy(vertices)
    tris = as_numpy(faces, np.int64)
    layout = as_layout(uv, tris)
    img = np.asarray(texture)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"write_textured_obj: texture has shape {img.shape}, dtype {img.dtype}; expected (H, W, 3) uint8"
        )
    obj = Path(path)
    mtl = obj.with_suffix(".mtl")
    png = obj.with_name(texture_name) if texture_name else obj.with_suffix(".png")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    write_bytes(png, buf.getvalue())
    write_text(
        mtl,
        "# p2m\nnewmtl body\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\nd 1.0\nillum 1\n"
        f"map_Kd {png.name}\n",
    )
    lines = [f"# p2m: {len(verts)} vertices, {len(tris)} faces", f"mtllib {mtl.name}", "o body"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in layout.uv]
    lines.append("usemtl body")
    lines += [
        f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
        for (a, b, c), (ta, tb, tc) in zip(tris.tolist(), layout.face_uv.tolist())
    ]
    write_text(obj, "\n".join(lines) + "\n")
    logger.info("wrote %s (+ %s, %s)", obj, mtl.name, png.name)
    return obj, mtl, png
