"""`p2m infer`'s picture: input skeleton | mesh over the photo | side view, through the fitted camera.

The photo is shown whole, or cropped around the person when the person is small in it (:func:`person_crop`).
The mesh is drawn through the weak-perspective camera of :mod:`p2m.infer.view` with :func:`p2m.render.render_mesh`:
a pinhole camera ``ZC`` mm away with focal ``s * ZC`` px is the weak-perspective projection to within
``s * |x| * |z| / ZC`` (< 0.1 px for a person), and keeps the z-buffer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from p2m.infer.view import WeakPerspective
from p2m.render import draw_skeleton, overlay_mesh, render_mesh

logger = logging.getLogger(__name__)

#: Depth (mm) of the virtual pinhole camera that renders the weak-perspective view.
ZC = 1.0e6
MESH_COLOR = (150, 182, 238)
SIDE_BACKGROUND = (232, 233, 236)
CANVAS_BACKGROUND = (238, 238, 240)
LEFT, RIGHT, CENTRE, MISSING = (70, 150, 255), (255, 140, 40), (60, 200, 100), (170, 170, 170)
CAPTION_BG, CAPTION_FG, GAP = (36, 38, 44), (235, 235, 235), 4
#: The photo is cropped around a person shorter than this share of its height, with this padding (x height).
CROP_BELOW, CROP_PAD = 0.6, 0.15


# ------------------------------------------------------------------------------------------------ the picture


@dataclass
class Figure:
    """The composed picture and where its panels are.

    Attributes:
        image: (H, W, 3) uint8.
        panels: name ("input", "mesh", "side") -> (x, y, w, h) in ``image`` pixels.
        view: maps input pixels to the "input" / "mesh" panels: ``q = scale * (p - origin + 0.5) - 0.5`` plus the
            panel's (x, y); keys ``scale`` (sx, sy) and ``origin`` (ox, oy).
        background: (h, w, 3) uint8, the mesh panel before anything was drawn (the photo or the blank canvas).
    """

    image: np.ndarray
    panels: dict[str, tuple[int, int, int, int]]
    view: dict[str, tuple[float, float]]
    background: np.ndarray


def edge_colors(names: Sequence[str], edges: Sequence[tuple[int, int]], known: np.ndarray) -> np.ndarray:
    """(E, 3) colours: left limbs blue, right orange, centre green, bones touching a filled-in joint grey."""
    side = np.array([1 if n.startswith("L_") else -1 if n.startswith("R_") else 0 for n in names])
    out = []
    for a, b in edges:
        s = side[a] + side[b]
        out.append(MISSING if not (known[a] and known[b]) else LEFT if s > 0 else RIGHT if s < 0 else CENTRE)
    return np.array(out)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def _display_scale(width: int, height: int) -> float:
    """Panel scale for a photo: at most 720 px tall and 1280 px wide, small ones enlarged to 480 px tall."""
    d = min(720.0 / height, 1280.0 / width, 1.0)
    return min(480.0 / height, 1280.0 / width) if height < 480 else d


def person_crop(width: int, height: int, points: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the photo to show: the whole photo, or, when the person (``points``: (N, 2) projected
    mesh and joints, px) is less than :data:`CROP_BELOW` of its height, their box grown by :data:`CROP_PAD` of the
    person's height on every side (at least 4:5 wide to tall), clipped to the photo."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        return 0, 0, width, height
    lo, hi = np.clip(pts.min(axis=0), 0, [width, height]), np.clip(pts.max(axis=0), 0, [width, height])
    tall = float(hi[1] - lo[1])
    if tall >= CROP_BELOW * height or tall <= 0:
        return 0, 0, width, height
    pad = CROP_PAD * tall
    half_w = max(0.5 * (hi[0] - lo[0]) + pad, 0.4 * (tall + 2 * pad))
    cx = 0.5 * (lo[0] + hi[0])
    x0, x1 = int(max(0, np.floor(cx - half_w))), int(min(width, np.ceil(cx + half_w)))
    y0, y1 = int(max(0, np.floor(lo[1] - pad))), int(min(height, np.ceil(hi[1] + pad)))
    return x0, y0, x1, y1


def _render_weak(
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    fx: float,
    fy: float,
    c: Sequence[float],
    size: tuple[int, int],
    background: np.ndarray,
) -> Any:
    verts = np.asarray(vertices_mm, dtype=np.float64) + np.array([0.0, 0.0, ZC])
    return render_mesh(verts, faces, (fx * ZC, fy * ZC), c, size, background=background, color=MESH_COLOR)


def draw_figure(
    *,
    image: np.ndarray | None,
    joints2d: np.ndarray,
    known: np.ndarray,
    names: Sequence[str],
    edges: Sequence[tuple[int, int]],
    camera: WeakPerspective,
    vertices_mm: np.ndarray | None,
    faces: np.ndarray | None,
    joints3d_mm: np.ndarray,
    captions: Sequence[str] = ("input 2D pose", "mesh", "side view"),
    crop: bool = True,
) -> Figure:
    """Compose input skeleton | mesh (or the 3D joints when there is no mesh) over the photo | side view.

    Args:
        image: (H, W, 3) uint8 photo, or None for a blank canvas fitted around the person.
        joints2d: (J, 2) input joints in photo pixels, missing ones filled in (drawn grey where ``known`` is False).
        known: (J,) which joints came from the input.
        names, edges: joint names and skeleton of the model's joint set.
        camera: the fitted weak-perspective camera (photo pixels).
        vertices_mm: (V, 3) root-relative camera-frame mesh, or None.
        faces: (F, 3) triangles of the mesh.
        joints3d_mm: (J, 3) predicted joints (drawn when there is no mesh).
        captions: titles of the three panels.
        crop: show only the part of the photo around the person when the person fills less than
            :data:`CROP_BELOW` of its height (see :func:`person_crop`).

    Returns:
        The :class:`Figure`.
    """
    j2d = np.asarray(joints2d, dtype=np.float64)
    proj = camera.project(vertices_mm if vertices_mm is not None else joints3d_mm)
    if image is not None:
        x0, y0, x1, y1 = (
            person_crop(image.shape[1], image.shape[0], np.concatenate([proj, j2d]))
            if crop
            else (0, 0, image.shape[1], image.shape[0])
        )
        image = image[y0:y1, x0:x1]
        h, w = image.shape[:2]
        d = _display_scale(w, h)
        pw, ph = max(1, round(w * d)), max(1, round(h * d))
        scale, origin = (pw / w, ph / h), (float(x0), float(y0))
        bg = (
            np.asarray(Image.fromarray(image).resize((pw, ph), Image.BICUBIC))
            if (pw, ph) != (w, h)
            else image.copy()
        )
    else:
        pts = np.concatenate([proj, j2d[np.isfinite(j2d).all(axis=1)]])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.08 * max(hi[1] - lo[1], hi[0] - lo[0], 1e-6)
        lo, hi = lo - pad, hi + pad
        ph = 640
        d = ph / (hi[1] - lo[1])
        pw = max(round((hi[0] - lo[0]) * d), ph // 2)
        cx = 0.5 * (lo[0] + hi[0])
        origin = (cx - 0.5 * pw / d, float(lo[1]))
        scale = (d, d)
        bg = np.empty((ph, pw, 3), np.uint8)
        bg[:] = CANVAS_BACKGROUND
    sx, sy = scale
    ox, oy = origin

    def to_view(p: np.ndarray) -> np.ndarray:
        return np.stack([sx * (p[..., 0] - ox + 0.5) - 0.5, sy * (p[..., 1] - oy + 0.5) - 0.5], -1)

    lw = max(2, round(ph / 180))
    colors = edge_colors(names, edges, known)
    xy = to_view(j2d)
    ones, kn = np.ones((len(xy), 1)), known[:, None].astype(np.float64)
    left = draw_skeleton(bg, np.concatenate([xy, ones], 1), edges, color=colors, radius=0, width=lw)
    left = draw_skeleton(left, np.concatenate([xy, kn], 1), [], joint_color=(255, 60, 60), radius=lw + 1)
    left = draw_skeleton(left, np.concatenate([xy, 1 - kn], 1), [], joint_color=MISSING, radius=lw + 1)

    c_root = to_view(np.array([camera.tx, camera.ty]))
    if vertices_mm is not None and faces is not None:
        rend = _render_weak(vertices_mm, faces, camera.scale * sx, camera.scale * sy, c_root, (pw, ph), bg)
        middle = overlay_mesh(bg, rend, alpha=0.85)
    else:
        sk = np.concatenate([to_view(proj), np.ones((len(proj), 1))], axis=1)
        middle = draw_skeleton(
            bg,
            sk,
            edges,
            color=edge_colors(names, edges, np.ones(len(names), bool)),
            joint_color=(255, 255, 255),
            radius=lw + 1,
            width=lw + 1,
        )

    # side view: the prediction turned 90 degrees about the vertical axis (seen from the picture's right)
    pts3 = vertices_mm if vertices_mm is not None else joints3d_mm
    turned = np.stack([pts3[:, 2], pts3[:, 1], -pts3[:, 0]], axis=1)
    depth = float(turned[:, 0].max() - turned[:, 0].min()) * camera.scale * sx
    sw = int(min(max(ph * 0.45, depth * 1.4), max(pw, ph * 0.45)))
    side_bg = np.empty((ph, sw, 3), np.uint8)
    side_bg[:] = SIDE_BACKGROUND
    mid_x = 0.5 * (turned[:, 0].max() + turned[:, 0].min()) * camera.scale * sx
    c_side = (sw / 2 - mid_x, float(c_root[1]))
    if vertices_mm is not None and faces is not None:
        side = _render_weak(
            turned, faces, camera.scale * sx, camera.scale * sy, c_side, (sw, ph), side_bg
        ).image
    else:
        sk = np.concatenate(
            [camera.scale * np.array([sx, sy]) * turned[:, :2] + c_side, np.ones((len(turned), 1))], 1
        )
        side = draw_skeleton(
            side_bg,
            sk,
            edges,
            color=edge_colors(names, edges, np.ones(len(names), bool)),
            joint_color=(40, 40, 40),
            radius=lw + 1,
            width=lw + 1,
        )

    cap = max(22, round(ph / 26))
    font = _font(max(12, round(cap * 0.62)))
    widths = (pw, pw, sw)
    total_w = sum(widths) + GAP * 2
    canvas = Image.new("RGB", (total_w, ph + cap), CAPTION_BG)
    panels: dict[str, tuple[int, int, int, int]] = {}
    draw = ImageDraw.Draw(canvas)
    x = 0
    for name, arr, text, wdt in zip(
        ("input", "mesh", "side"), (left, middle, side), captions, widths, strict=True
    ):
        canvas.paste(Image.fromarray(arr), (x, cap))
        panels[name] = (x, cap, wdt, ph)
        draw.text(
            (x + 8, cap // 2), _fit_text(draw, text, font, wdt - 12), fill=CAPTION_FG, font=font, anchor="lm"
        )
        x += wdt + GAP
    return Figure(np.asarray(canvas).copy(), panels, {"scale": scale, "origin": origin}, bg)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


__all__ = ["Figure", "draw_figure", "edge_colors", "person_crop"]
