"""One call for ``p2m infer``: a predicted mesh (+ the photo and its camera) -> rigged .glb and textured .obj."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy
from p2m.export.gltf import camera_to_gltf, write_rigged_glb
from p2m.export.skin import Skin, skin_from_body
from p2m.export.texture import TextureResult, texture_from_photo, write_textured_obj
from p2m.export.uv import body_uv_layout

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "ExportResult", "body_rest_vertices", "export_mesh"]

#: File kinds :func:`export_mesh` writes.
EXPORT_FORMATS = ("glb", "obj")
#: Axes of the files: ``"y_up"`` (glTF / OpenGL: x right, y up, z towards the viewer) or p2m's ``"camera"``.
AXES = ("y_up", "camera")


@dataclass
class ExportResult:
    """What :func:`export_mesh` wrote.

    Attributes:
        files: kind -> path: ``"glb"``, ``"obj"`` and, with a texture, ``"mtl"`` and ``"texture"`` (the PNG).
        skin: the skeleton and weights of the .glb (None without one).
        texture: the texture from the photo (None without ``image``).
    """

    files: dict[str, Path] = field(default_factory=dict)
    skin: Skin | None = None
    texture: TextureResult | None = None


def body_rest_vertices(body: Any) -> np.ndarray:
    """(V, 3) float64 rest-pose vertices of the default shape (anny: x = the subject's left, symmetric in x)."""
    import torch

    with torch.no_grad():
        out = body(torch.zeros((1, body.num_bones, 3), device=body.device))
    return as_numpy(out.vertices[0])


def export_mesh(
    out_dir: str | os.PathLike,
    body: Any,
    vertices: Any,
    joints_h36m: Any = None,
    *,
    name: str = "mesh",
    formats: tuple[str, ...] = ("glb",),
    unit: float = 1e-3,
    axes: str = "y_up",
    image: Any = None,
    weak_perspective: Any = None,
    f: Any = None,
    c: Any = None,
    tex_size: int = 1024,
    texture_name: str | None = None,
) -> ExportResult:
    """Write a predicted body mesh as ``NAME.glb`` (rigged, H36M-17 skeleton) and/or ``NAME.obj`` (+ .mtl + .png).

    Args:
        out_dir: the folder to write into.
        body: the body model the mesh comes from (its topology, skin weights and UVs are used).
        vertices: (V, 3) the mesh in p2m's camera frame (x right, y down, z forward), e.g. Pose2Mesh's
            root-relative millimetres.
        joints_h36m: (17, 3) its H36M joints, same frame and unit (None: regressed from ``vertices``).
        name: file stem.
        formats: any of ``"glb"``, ``"obj"``.
        unit: metres per input unit (1e-3 for millimetres); the files are in metres.
        axes: ``"y_up"`` (default) or ``"camera"`` for the .obj; the .glb is always y up (glTF's rule).
        image: (H, W, 3) uint8 photo to texture the mesh from; None = untextured files.
        weak_perspective: the photo's camera as (scale px per input unit, tx px, ty px): pixel = scale * (x, y) + t.
        f: or a pinhole camera: focal length px (scalar or (fx, fy)) with ``c`` (cx, cy) px, ``vertices``
            then in the photo's camera frame (z > 0).
        c: principal point of the pinhole camera.
        tex_size: texture side in texels.
        texture_name: file name of the .obj's texture PNG (default ``NAME.png``).

    Returns:
        An :class:`ExportResult`.
    """
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"export formats {list(formats)!r}: expected one or more of {list(EXPORT_FORMATS)}")
    if axes not in AXES:
        raise ValueError(f"axes {axes!r}: expected one of {list(AXES)}")
    out = Path(out_dir)
    verts = as_numpy(vertices)
    faces = as_numpy(body.faces, np.int64)
    result = ExportResult()
    texture = None
    if image is not None:
        layout = body_uv_layout(body, tex_size)
        result.texture = texture_from_photo(
            image,
            verts,
            faces,
            layout,
            f=f,
            c=c,
            weak_perspective=weak_perspective,
            tex_size=tex_size,
            mirror_vertices=body_rest_vertices(body),
            mirror_axis=0,
        )
        texture = (result.texture.texture, result.texture.layout)
    if "glb" in formats:
        skin = skin_from_body(body, verts, joints_h36m)
        result.skin = skin
        result.files["glb"] = out / f"{name}.glb"
        write_rigged_glb(
            result.files["glb"],
            camera_to_gltf(verts, unit),
            faces,
            camera_to_gltf(skin.joints, unit),
            skin.parents,
            skin.weights,
            skin.names,
            texture=texture,
        )
    if "obj" in formats:
        file_verts = camera_to_gltf(verts, unit) if axes == "y_up" else verts * unit
        result.files["obj"] = out / f"{name}.obj"
        if texture is None:
            from p2m.io import write_text

            lines = [f"# p2m: {len(file_verts)} vertices, {len(faces)} faces", "o body"]
            lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in file_verts]
            lines += [f"f {a + 1} {b + 1} {c_ + 1}" for a, b, c_ in faces.tolist()]
            write_text(result.files["obj"], "\n".join(lines) + "\n")
        else:
            _, result.files["mtl"], result.files["texture"] = write_textured_obj(
                result.files["obj"], file_verts, faces, texture[1], texture[0], texture_name=texture_name
            )
    return result
