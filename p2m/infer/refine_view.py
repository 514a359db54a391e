"""Before/after close-ups of hands and feet, to show what :mod:`p2m.infer.refine` changed (a PNG a user opens)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from p2m.export.geometry import as_numpy
from p2m.io import write_bytes
from p2m.render import render_mesh

logger = logging.getLogger(__name__)

__all__ = ["refine_figure", "write_png"]

SKIN = np.array([205.0, 180.0, 160.0])
#: Colour the refined part of the mesh is tinted towards (by its refine weight).
TINT = np.array([120.0, 160.0, 215.0])
HEADER_PX = 18


def refine_figure(
    meshes: Mapping[str, Any],
    faces: Any,
    regions: Mapping[str, Any],
    weight: Any = None,
    panel: int = 200,
) -> np.ndarray:
    """A grid of close-up renders: one row per extremity, one column per mesh (e.g. before / after / truth).

    Every panel of a row uses the same camera, looking along +z of the meshes' frame (for Pose2Mesh meshes: from
    the photo's camera), centred on the extremity over all meshes, so that a shift between columns shows. Only the
    limb is drawn (the extremity and the two bones above it), so that the torso never hides a hand.

    Args:
        meshes: column caption -> (V, 3) vertices (any unit, same frame), in column order.
        faces: (F, 3) triangles.
        regions: name -> :class:`p2m.infer.refine.Extremity` (its ``core`` indices frame the view).
        weight: optional (V,) refine weight in [0, 1]; tints the refined part in every panel.
        panel: panel side in pixels.

    Returns:
        (H, W, 3) uint8 image: a caption row, then ``len(regions)`` rows of ``len(meshes)`` panels.
    """
    tris = np.asarray(as_numpy(faces), dtype=np.int64)
    verts = {name: as_numpy(v) for name, v in meshes.items()}
    if not verts:
        raise ValueError("refine_figure: no meshes given")
    nv = next(iter(verts.values())).shape[0]
    for name, v in verts.items():
        if v.shape != (nv, 3):
            raise ValueError(f"refine_figure: mesh {name!r} has shape {v.shape}, expected ({nv}, 3)")
    w = np.zeros(nv) if weight is None else np.clip(as_numpy(weight).reshape(-1), 0.0, 1.0)
    colors = SKIN[None] + (TINT - SKIN)[None] * (0.6 * w[:, None])
    cols, rows = len(verts), len(regions)
    canvas = Image.new("RGB", (cols * panel, HEADER_PX + rows * panel), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(verts):
        draw.text((c * panel + 4, 3), str(name), fill=(0, 0, 0))
    for r, (ext_name, ext) in enumerate(regions.items()):
        core = np.asarray(ext.core, dtype=np.int64)
        pts = np.concatenate([v[core] for v in verts.values()])
        centre = pts.mean(axis=0)
        radius = max(float(np.linalg.norm(pts - centre, axis=1).max()) * 1.2, 1e-9)
        dist = 8.0 * radius
        focal = 0.5 * panel * dist / radius
        for c, v in enumerate(verts.values()):
            near = (np.linalg.norm(v - centre, axis=1) < 2.5 * radius) & (np.asarray(ext.limb) > 0.5)
            keep = near[tris].all(axis=1)
            cam = v - centre + np.array([0.0, 0.0, dist])
            res = render_mesh(
                cam,
                tris[keep],
                focal,
                (panel / 2, panel / 2),
                (panel, panel),
                background=(245, 245, 245),
                color=colors,
            )
            canvas.paste(Image.fromarray(res.image), (c * panel, HEADER_PX + r * panel))
            if c == 0:
                draw.text((4, HEADER_PX + r * panel + 3), ext_name.replace("_", " "), fill=(0, 0, 0))
    for c in range(1, cols):
        draw.line(
            [(c * panel, HEADER_PX), (c * panel, HEADER_PX + rows * panel)], fill=(255, 255, 255), width=2
        )
    return np.asarray(canvas).copy()


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG, atomically (:func:`p2m.io.write_bytes`)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())
