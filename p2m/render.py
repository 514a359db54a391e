"""A small z-buffered CPU rasteriser (numpy + PIL) for synthetic images and mesh overlays, no OpenGL needed."""

from __future__ import annotations

import colorsys
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

__all__ = [
    "RenderResult",
    "render_mesh",
    "vertex_normals",
    "procedural_background",
    "draw_skeleton",
    "overlay_mesh",
]

DEFAULT_COLOR = (205, 180, 160)
DEFAULT_LIGHT = (0.35, -0.55, -1.0)
_CHUNK = 1 << 19  # candidate (triangle, pixel) pairs tested per vectorised step
_EXACT = 16  # bounding boxes up to this many pixels a side are grouped by exact size
_EPS = 1e-9  # barycentric slack: a pixel centre on a shared edge belongs to both triangles
_NO_TRI = np.iinfo(np.int64).max


@dataclass
class RenderResult:
    """What :func:`render_mesh` returns; every array is H x W (x 3).

    Attributes:
        image: (H, W, 3) uint8, the shaded mesh over the background.
        depth: (H, W) float32, camera-frame z of the visible surface (vertex units), ``inf`` where empty.
        mask: (H, W) bool, True where the mesh covers the pixel centre.
        face_index: (H, W) int64, index into ``faces`` of the visible triangle, -1 where empty.
        bary: (H, W, 3) float32, perspective-correct barycentric coordinates of the pixel centre on
            ``faces[face_index]`` (weights of its three vertices, summing to 1), 0 where empty. With
            ``face_index`` this interpolates any per-vertex attribute (UVs, colours, labels).
    """

    image: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    face_index: np.ndarray
    bary: np.ndarray


def _to_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, oriented like the faces' winding (right-hand rule).

    Args:
        vertices: (V, 3) float positions.
        faces: (F, 3) int vertex indices.

    Returns:
        (V, 3) float64 unit normals; a vertex used by no face gets (0, 0, 0).
    """
    v = _to_numpy(vertices)
    f = _to_numpy(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        for d in range(3):
            out[:, d] += np.bincount(f[:, k], weights=fn[:, d], minlength=len(v))
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)


def _parse_color(color: Any, n_vertices: int) -> np.ndarray:
    """(3,) or (V, 3) colour in 0..255 -> float64 array of shape (3,) or (V, 3)."""
    col = _to_numpy(color)
    if col.shape == (3,) or col.shape == (n_vertices, 3):
        return col
    raise ValueError(
        f"render_mesh: color has shape {col.shape}, expected (3,) or ({n_vertices}, 3) in 0..255"
    )


def _background(background: Any, width: int, height: int) -> np.ndarray:
    if background is None:
        return np.zeros((height, width, 3), np.uint8)
    bg = np.asarray(background)
    if bg.shape == (height, width, 3):
        return bg.astype(np.uint8, copy=True)
    if bg.shape == (3,):
        return np.broadcast_to(np.clip(np.rint(bg), 0, 255).astype(np.uint8), (height, width, 3)).copy()
    raise ValueError(
        f"render_mesh: background has shape {bg.shape}, expected ({height}, {width}, 3) uint8 or an RGB triple"
    )


def _clip_near(
    tri: np.ndarray, face_id: np.ndarray, near: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip triangles against the plane z = near, keeping their winding.

    Args:
        tri: (T, 3, 3) corner positions (camera frame).
        face_id: (T,) original face index of each triangle.
        near: the clip plane.

    Returns:
        ``(tri, face_id, corner_bary)``: the clipped triangles, their original face, and (T', 3, 3)
        barycentric coordinates of each new corner on its original face.
    """
    behind = tri[:, :, 2] < near
    if not behind.any():
        return tri, face_id, np.broadcast_to(np.eye(3), tri.shape)
    eye = np.broadcast_to(np.eye(3), tri.shape).copy()
    n_behind = behind.sum(1)
    keep = n_behind == 0
    out_tri, out_id, out_bary = [tri[keep]], [face_id[keep]], [eye[keep]]

    for count in (1, 2):
        sel = np.nonzero(n_behind == count)[0]
        if len(sel) == 0:
            continue
        # Rotate corners (keeps winding) so that the odd one out comes first.
        odd = np.argmax(behind[sel] if count == 1 else ~behind[sel], axis=1)
        perm = (odd[:, None] + np.arange(3)[None, :]) % 3
        p = np.take_along_axis(tri[sel], perm[:, :, None], axis=1)
        b = np.take_along_axis(eye[sel], perm[:, :, None], axis=1)
        a, pb, pc = p[:, 0], p[:, 1], p[:, 2]
        t_ab = ((near - a[:, 2]) / (pb[:, 2] - a[:, 2]))[:, None]
        t_ac = ((near - a[:, 2]) / (pc[:, 2] - a[:, 2]))[:, None]
        ab, ac = a + (pb - a) * t_ab, a + (pc - a) * t_ac
        bab, bac = b[:, 0] + (b[:, 1] - b[:, 0]) * t_ab, b[:, 0] + (b[:, 2] - b[:, 0]) * t_ac
        ab[:, 2] = near
        ac[:, 2] = near
        if count == 1:  # quad (ab, b, c, ac) -> (ab, b, c) + (ab, c, ac)
            out_tri += [np.stack([ab, pb, pc], 1), np.stack([ab, pc, ac], 1)]
            out_bary += [np.stack([bab, b[:, 1], b[:, 2]], 1), np.stack([bab, b[:, 2], bac], 1)]
            out_id += [face_id[sel], face_id[sel]]
        else:  # only corner a is in front -> (a, ab, ac)
            out_tri.append(np.stack([a, ab, ac], 1))
            out_bary.append(np.stack([b[:, 0], bab, bac], 1))
            out_id.append(face_id[sel])
    return np.concatenate(out_tri), np.concatenate(out_id), np.concatenate(out_bary)


def _bucket(size: np.ndarray) -> np.ndarray:
    """Round box sizes up: exact up to ``_EXACT``, then to 4 steps per octave (<= 25% padding)."""
    step = np.left_shift(1, np.maximum(np.floor(np.log2(np.maximum(size, 1))).astype(np.int64) - 2, 0))
    return np.where(size <= _EXACT, size, -(-size // step) * step)


def _rasterize(
    uv: np.ndarray, inv_z: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer screen triangles.

    Args:
        uv: (T, 3, 2) projected corners in pixels (integer coordinates are pixel centres).
        inv_z: (T, 3) 1 / z of the corners.
        width, height: image size.

    Returns:
        ``(depth, tri_buf, coef)``: (H*W,) nearest z (inf where empty), (H*W,) index of the winning
        triangle (``_NO_TRI`` where empty; ties go to the lowest index), and (T, 3, 3) per-triangle
        coefficients so that the screen barycentric ``b_k = coef[t, k] @ (u, v, 1)``.
    """
    x, y = uv[..., 0], uv[..., 1]
    # Edge k is opposite corner k; b_k(p) = cross(edge, p - start) / (2 * signed area).
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    coef = np.empty(uv.shape[:1] + (3, 3))
    for k in range(3):
        i, j = (k + 1) % 3, (k + 2) % 3
        coef[:, k, 0] = y[:, i] - y[:, j]
        coef[:, k, 1] = x[:, j] - x[:, i]
        coef[:, k, 2] = x[:, i] * y[:, j] - x[:, j] * y[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        coef /= area2[:, None, None]

    x0 = np.maximum(np.ceil(x.min(1)), 0)
    x1 = np.minimum(np.floor(x.max(1)), width - 1)
    y0 = np.maximum(np.ceil(y.min(1)), 0)
    y1 = np.minimum(np.floor(y.max(1)), height - 1)
    live = np.nonzero((x1 >= x0) & (y1 >= y0) & (np.abs(area2) > 1e-12) & np.isfinite(area2))[0]
    x0, x1 = x0[live].astype(np.int64), x1[live].astype(np.int64)
    y0, y1 = y0[live].astype(np.int64), y1[live].astype(np.int64)
    # Triangles with the same (bucketed) bounding-box size form one dense (n, bh * bw) block of
    # candidate pixels, so the per-triangle coefficients broadcast instead of being gathered per pixel.
    gw, gh = _bucket(x1 - x0 + 1), _bucket(y1 - y0 + 1)
    key = gw * (int(gh.max(initial=0)) + 1) + gh
    order = np.argsort(key, kind="stable")
    bounds = np.nonzero(np.diff(key[order]))[0] + 1

    depth = np.full(width * height, np.inf)
    tri_buf = np.full(width * height, _NO_TRI, np.int64)
    for group in np.split(order, bounds) if len(order) else []:
        bw, bh = int(gw[group[0]]), int(gh[group[0]])
        padded = bw > _EXACT or bh > _EXACT
        rows = max(1, min(bh, _CHUNK // bw))  # huge boxes go in horizontal strips to bound memory
        step = max(1, _CHUNK // (bw * rows))
        for r0, lo in itertools.product(range(0, bh, rows), range(0, len(group), step)):
            oy, ox = np.divmod(np.arange(bw * min(rows, bh - r0)), bw)
            oy += r0
            ids = group[lo : lo + step]
            px = x0[ids, None] + ox
            py = y0[ids, None] + oy
            fx, fy = px.astype(np.float64), py.astype(np.float64)
            cf = coef[live[ids]]
            b = [cf[:, k, 0, None] * fx + cf[:, k, 1, None] * fy + cf[:, k, 2, None] for k in range(3)]
            inside = (b[0] >= -_EPS) & (b[1] >= -_EPS) & (b[2] >= -_EPS)
            if padded:
                inside &= (px <= x1[ids, None]) & (py <= y1[ids, None])
            r, k = np.nonzero(inside)
            tri = live[ids[r]]
            bary = np.stack([b[0][r, k], b[1][r, k], b[2][r, k]], axis=1)
            z = 1.0 / np.einsum("nk,nk->n", np.clip(bary, 0.0, None), inv_z[tri])
            pix = py[r, k] * width + px[r, k]

            before = depth[pix]
            np.minimum.at(depth, pix, z)
            win = z == depth[pix]
            tri_buf[pix[win & (z < before)]] = _NO_TRI  # a nearer surface replaces the old winner
            np.minimum.at(tri_buf, pix[win], tri[win])
    return depth, tri_buf, coef


def render_mesh(
    vertices_cam: Any,
    faces: Any,
    f: float | Sequence[float],
    c: Sequence[float],
    image_size: tuple[int, int] = (512, 512),
    background: Any = None,
    color: Any = DEFAULT_COLOR,
    light_dir: Sequence[float] = DEFAULT_LIGHT,
    ambient: float = 0.35,
    cull_backfaces: bool = False,
    near: float = 1e-3,
) -> RenderResult:
    """Render a triangle mesh with a z-buffer and smooth Lambert + ambient shading.

    Camera frame: x right, y down, z forward; pinhole ``u = fx * x / z + cx``, ``v = fy * y / z + cy``,
    integer (u, v) being pixel centres (column u, row v). Depth is interpolated perspective-correctly
    (1/z is linear in screen space). Normals are area-weighted vertex normals, interpolated per pixel;
    a triangle seen from its back side is lit with flipped normals (two-sided lighting) unless
    ``cull_backfaces`` drops it. Parts in front of ``near`` are clipped away. No anti-aliasing.

    Args:
        vertices_cam: (V, 3) positions in the camera frame (numpy or torch), any length unit.
        faces: (F, 3) int vertex indices; a face is front-facing when its corners run
            counter-clockwise seen from outside (right-hand rule normal points outward).
        f: focal length in pixels, a scalar or (fx, fy).
        c: principal point (cx, cy) in pixels.
        image_size: (W, H) in pixels.
        background: None (black), an (H, W, 3) uint8 image (copied, never modified) or an RGB triple.
        color: RGB in 0..255, one (3,) colour or (V, 3) per-vertex colours (interpolated).
        light_dir: (3,) direction from the surface towards the light, camera frame (need not be unit).
        ambient: share of the colour lit regardless of orientation; diffuse share is ``1 - ambient``.
        cull_backfaces: drop triangles facing away from the camera (faster; right for closed,
            consistently wound meshes only).
        near: near clip plane in vertex units (z < near is cut away).

    Returns:
        A :class:`RenderResult`; pixels outside ``mask`` keep the background's exact bytes.
    """
    width, height = int(image_size[0]), int(image_size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"render_mesh: image_size {image_size!r} must be two positive ints (W, H)")
    verts = _to_numpy(vertices_cam)
    tris = _to_numpy(faces, np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"render_mesh: vertices_cam has shape {verts.shape}, expected (V, 3)")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"render_mesh: faces has shape {tris.shape}, expected (F, 3)")
    if tris.size and (tris.min() < 0 or tris.max() >= len(verts)):
        raise ValueError(
            f"render_mesh: faces index vertices {tris.min()}..{tris.max()}, mesh has {len(verts)}"
        )
    fx, fy = (float(f), float(f)) if np.ndim(f) == 0 else (float(f[0]), float(f[1]))
    cx, cy = float(c[0]), float(c[1])
    col = _parse_color(color, len(verts))
    light = _to_numpy(light_dir).reshape(3)
    light = light / max(np.linalg.norm(light), 1e-12)
    image = _background(background, width, height)

    # Orientation per face: the sign of the triangle plane's offset from the camera centre.
    corners = verts[tris]
    face_n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    front = np.einsum("fd,fd->f", face_n, corners[:, 0]) < 0
    face_id = np.nonzero(front)[0] if cull_backfaces else np.arange(len(tris))
    face_id = face_id[np.isfinite(corners[face_id]).all(axis=(1, 2))]
    tri, tri_face, corner_bary = _clip_near(corners[face_id], face_id, near)

    inv_z = 1.0 / tri[:, :, 2]
    uv = np.stack([fx * tri[:, :, 0] * inv_z + cx, fy * tri[:, :, 1] * inv_z + cy], axis=-1)
    depth, tri_buf, coef = _rasterize(uv, inv_z, width, height)

    pix = np.nonzero(tri_buf != _NO_TRI)[0]
    t = tri_buf[pix]
    py, px = np.divmod(pix, width)
    b = np.einsum("nkj,nj->nk", coef[t], np.stack([px, py, np.ones_like(px)], axis=1).astype(np.float64))
    w = np.clip(b, 0.0, None) * inv_z[t]
    w /= w.sum(axis=1, keepdims=True)
    bary = np.einsum("nk,nkj->nj", w, corner_bary[t])  # on the original face
    face = tri_face[t]

    vn = vertex_normals(verts, tris)
    normal = np.einsum("nj,njd->nd", bary, vn[tris[face]])
    normal[~front[face]] *= -1.0
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    shade = ambient + (1.0 - ambient) * np.clip(normal @ light, 0.0, None)
    base = col if col.ndim == 1 else np.einsum("nj,njd->nd", bary, col[tris[face]])
    rgb = np.clip(np.rint(base * shade[:, None]), 0, 255).astype(np.uint8)
    image.reshape(-1, 3)[pix] = rgb

    mask = np.zeros(width * height, bool)
    mask[pix] = True
    face_index = np.full(width * height, -1, np.int64)
    face_index[pix] = face
    bary_img = np.zeros((width * height, 3), np.float32)
    bary_img[pix] = bary
    logger.debug("rendered %d faces -> %d pixels", len(tris), len(pix))
    return RenderResult(
        image=image,
        depth=depth.astype(np.float32).reshape(height, width),
        mask=mask.reshape(height, width),
        face_index=face_index.reshape(height, width),
        bary=bary_img.reshape(height, width, 3),
    )


def _muted_color(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    """An RGB colour (0..255, float) with saturation and value drawn from the given ranges."""
    h, s, v = rng.uniform(0.0, 1.0), rng.uniform(*sat), rng.uniform(*val)
    return 255.0 * np.asarray(colorsys.hsv_to_rgb(h, s, v))


def procedural_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible indoor-ish scene: wall and floor gradients, blurred furniture/window shapes, noise.

    Deterministic for a given generator state (only ``rng`` and PIL are used).

    Args:
        width, height: image size in pixels.
        rng: numpy Generator; it is advanced.

    Returns:
        (H, W, 3) uint8 image.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"procedural_background: size {width}x{height} must be positive")
    yy = np.linspace(0.0, 1.0, height)[:, None, None]
    horizon = rng.uniform(0.45, 0.75)
    wall = _muted_color(rng, (0.03, 0.3), (0.45, 0.9))
    floor = _muted_color(rng, (0.05, 0.45), (0.2, 0.65))
    wall_img = wall * (0.8 + 0.25 * yy / horizon)
    floor_img = floor * (0.75 + 0.35 * (yy - horizon) / max(1.0 - horizon, 1e-6))
    img = np.where(yy < horizon, wall_img, floor_img) * np.ones((1, width, 1))

    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    hy = int(horizon * height)
    for _ in range(int(rng.integers(2, 6))):  # planks / tiles on the floor, converging to a vanishing point
        vx = rng.uniform(0.2, 0.8) * width
        xb = rng.uniform(-0.5, 1.5) * width
        tone = tuple(int(v) for v in np.clip(floor * rng.uniform(0.6, 0.9), 0, 255))
        draw.line([(vx, hy), (xb, height)], fill=tone, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(3, 8))):  # furniture, pictures, windows, lamps
        cw, ch = rng.uniform(0.08, 0.35) * width, rng.uniform(0.08, 0.45) * height
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(0.0, horizon + 0.1) * height - ch / 2
        tone = tuple(int(v) for v in _muted_color(rng, (0.05, 0.6), (0.1, 0.95)))
        box = [x0, y0, x0 + cw, y0 + ch]
        if rng.random() < 0.35:
            draw.ellipse(box, fill=tone)
        else:
            draw.rectangle(box, fill=tone)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 4.0))))

    out = np.asarray(canvas).astype(np.float64)
    coarse = rng.normal(0.0, 1.0, (6, 6)).astype(np.float32)  # low-frequency lighting variation
    low = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC), np.float64)
    out *= (1.0 + 0.08 * low)[:, :, None]
    out += rng.normal(0.0, 4.0, (height, width, 1)) + rng.normal(0.0, 2.0, (height, width, 3))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_skeleton(
    image: np.ndarray,
    joints2d: Any,
    edges: Sequence[tuple[int, int]],
    color: Any = (0, 255, 0),
    joint_color: Any = (255, 0, 0),
    radius: float = 3.0,
    width: int = 2,
    min_visibility: float = 0.0,
) -> np.ndarray:
    """Draw a 2D skeleton (lines, then dots) on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8; not modified.
        joints2d: (J, 2) pixel coordinates, or (J, 3) with a visibility / confidence column (COCO v);
            a joint is drawn when its third value is > ``min_visibility`` and its coordinates are finite.
        edges: pairs (i, j) of joint indices; drawn when both ends are drawn.
        color: RGB for the bones, or one RGB per edge.
        joint_color: RGB for the dots.
        radius: dot radius in pixels (0 draws none).
        width: line width in pixels.
        min_visibility: visibility threshold (see ``joints2d``).

    Returns:
        (H, W, 3) uint8 new image.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"draw_skeleton: image has shape {img.shape}, expected (H, W, 3)")
    j = _to_numpy(joints2d)
    if j.ndim != 2 or j.shape[1] not in (2, 3):
        raise ValueError(f"draw_skeleton: joints2d has shape {j.shape}, expected (J, 2) or (J, 3)")
    shown = np.isfinite(j[:, :2]).all(axis=1)
    if j.shape[1] == 3:
        shown &= j[:, 2] > min_visibility
    edge_colors = np.asarray(color)
    per_edge = edge_colors.ndim == 2
    if per_edge and len(edge_colors) != len(edges):
        raise ValueError(f"draw_skeleton: {len(edge_colors)} edge colours for {len(edges)} edges")

    canvas = Image.fromarray(img.astype(np.uint8, copy=True))
    draw = ImageDraw.Draw(canvas)
    for k, (a, b) in enumerate(edges):
        if not (0 <= a < len(j) and 0 <= b < len(j)):
            raise ValueError(f"draw_skeleton: edge {k} = ({a}, {b}) is outside the {len(j)} joints")
        if shown[a] and shown[b]:
            fill = tuple(int(v) for v in (edge_colors[k] if per_edge else edge_colors))
            draw.line([tuple(j[a, :2]), tuple(j[b, :2])], fill=fill, width=int(width))
    if radius > 0:
        dot = tuple(int(v) for v in joint_color)
        for x, y in j[shown, :2]:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=dot)
    return np.asarray(canvas).copy()


def overlay_mesh(image: np.ndarray, render: RenderResult, alpha: float = 0.6) -> np.ndarray:
    """Blend a render over a photo inside the render's mask; pixels outside keep the photo's bytes.

    Args:
        image: (H, W, 3) uint8 photo; not modified.
        render: a :class:`RenderResult` of the same size.
        alpha: opacity of the render in [0, 1].

    Returns:
        (H, W, 3) uint8 new image.
    """
    img = np.asarray(image)
    if img.shape != render.image.shape:
        raise ValueError(f"overlay_mesh: image has shape {img.shape}, render has {render.image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_mesh: alpha {alpha} is outside [0, 1]")
    out = img.astype(np.uint8, copy=True)
    m = render.mask
    mixed = (1.0 - alpha) * img[m].astype(np.float64) + alpha * render.image[m].astype(np.float64)
    out[m] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out
