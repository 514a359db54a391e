"""Optional steps of `p2m infer` between prediction and writing: refined hands / feet and the rigged / textured export.

* :func:`refine_prediction`: :func:`p2m.infer.refine.refine_extremities` on the predicted mesh (in place), and
  the before / after close-ups for ``refine.png``.
* :func:`write_extras`: ``refine.png``, and :func:`p2m.export.export_mesh` for ``mesh.glb`` (rigged, H36M-17
  skeleton) and, with a photo to texture from, the textured ``mesh.obj`` + ``mesh.mtl`` + texture PNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from p2m.errors import ConfigError
from p2m.export import export_mesh
from p2m.export.full import FULL_TOPOLOGY, BodyFit, full_body, posed_mesh
from p2m.infer.refine import extremity_regions, refine_extremities
from p2m.infer.refine_view import refine_figure, write_png

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "MESHES",
    "REFINE_METHODS",
    "RefineOutcome",
    "check_options",
    "full_resolution",
    "refine_prediction",
    "write_extras",
]

#: Every file format ``p2m infer`` writes: obj and ply through trimesh, glb through :mod:`p2m.export`.
FORMATS = ("obj", "ply", "glb")
REFINE_METHODS = ("fit", "paste")
#: ``--mesh``: the network's mesh (its topology), or the refine fit's full-resolution anny mesh.
MESHES = ("network", "full")
#: The textured .obj's texture (not ``mesh.png``: that is infer's picture).
TEXTURE_NAME = "mesh_texture.png"


@dataclass
class RefineOutcome:
    """What :func:`refine_prediction` did.

    Attributes:
        method: "fit" or "paste".
        before: (V, 3) the network's mesh (camera-frame mm, root-relative); the refined one is in the prediction.
        weight: (V,) how much body-model geometry each vertex took (0: unchanged, bit for bit).
        rms_mm: the fit's RMS vertex distance to the prediction ("fit"), or the aligned extremities' ("paste"), mm.
        image: (H, W, 3) uint8 before / after close-ups of hands and feet.
        fit: the body-model fit ("fit" only), for the full-resolution mesh (:func:`full_resolution`).
    """

    method: str
    before: np.ndarray
    weight: np.ndarray
    rms_mm: float
    image: np.ndarray
    fit: BodyFit | None = None

    def to_dict(self, after: np.ndarray) -> dict[str, Any]:
        """The ``refine`` entry of ``infer.json`` (``after``: the refined (V, 3) mesh, mm)."""
        shift = np.linalg.norm(np.asarray(after) - self.before, axis=1)
        return {
            "method": self.method,
            "fit_rms_mm": round(self.rms_mm, 3),
            "vertices_changed": int((self.weight > 0).sum()),
            "max_shift_mm": round(float(shift.max()), 3),
            "note": "hands and feet from the body model; joints and camera are the network's",
        }


def check_options(formats: tuple[str, ...], refine_method: str, texture: bool, has_photo: bool) -> None:
    """Refuse option combinations that cannot be written, before any work.

    Raises:
        ConfigError: unknown format or refine method, ``texture`` without a photo, or without obj / glb to carry it.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"mesh formats {list(formats)}: expected one or more of {list(FORMATS)}")
    if refine_method not in REFINE_METHODS:
        raise ConfigError(f"refine method {refine_method!r}: expected one of {list(REFINE_METHODS)}")
    if texture and not has_photo:
        raise ConfigError(
            "--texture needs the photo the pose comes from: give --image PHOTO (or a data.json that "
            "names its photo)"
        )
    if texture and not {"obj", "glb"} & set(formats):
        raise ConfigError(f"--texture needs a textured format: add obj or glb to the formats {list(formats)}")


def refine_prediction(pred: Any, prediction: Any, method: str = "fit") -> RefineOutcome | None:
    """Refine the hands and feet of ``prediction.vertices`` in place (None, nothing done, without a mesh).

    Args:
        pred: the :class:`p2m.infer.api.Predictor` (its body model and faces).
        prediction: the :class:`p2m.infer.api.Prediction`; ``vertices`` (V, 3) mm are replaced.
        method: "fit" (fit the body model to the whole mesh) or "paste" (rigid template hands and feet).
    """
    if prediction.vertices is None or pred.faces is None:
        return None
    before = np.asarray(prediction.vertices, dtype=np.float64).copy()
    res = refine_extremities(before, pred.body, method=method)
    after = np.asarray(res.vertices, dtype=np.float64)
    prediction.vertices = after
    image = refine_figure(
        {"before": before, "after": after}, pred.faces, extremity_regions(pred.body), weight=res.weight
    )
    logger.info(
        "refined hands and feet (%s): %d vertices changed, RMS %.1f mm",
        method,
        int((res.weight > 0).sum()),
        float(res.fit_rms),
    )
    fit = res.fits[0] if res.fits else None
    return RefineOutcome(method, before, np.asarray(res.weight), float(res.fit_rms), image, fit)


def full_resolution(pred: Any, prediction: Any, refined: RefineOutcome | None) -> tuple[Any, Any]:
    """The predictor and prediction with the refine fit's full-resolution mesh (``--mesh full``).

    The fit's pose and shape drive anny's full topology (same rig): 13,718 vertices with MakeHuman's UV layout
    and skin weights (:mod:`p2m.export.full`), so the texture is a standard body UV map. Joints and camera stay
    the network's.

    Raises:
        ConfigError: no fit to take the parameters from (``--no-refine``, ``--refine-method paste``, posenet).
    """
    if refined is None or refined.fit is None or prediction.vertices is None:
        raise ConfigError(
            "--mesh full needs the refine fit (a pose2mesh checkpoint, --refine, --refine-method fit)"
        )
    body = full_body(pred.body.rig, pred.config.model.body.model, FULL_TOPOLOGY)
    vertices = posed_mesh(body, refined.fit, unit_m=1e-3)
    faces = body.faces.cpu().numpy().astype(np.int64)
    return replace(pred, body=body, faces=faces), replace(prediction, vertices=vertices)


def write_extras(
    out: Path,
    pred: Any,
    prediction: Any,
    refined: RefineOutcome | None,
    formats: tuple[str, ...],
    mesh_axes: str = "y_up",
    photo: np.ndarray | None = None,
    tex_size: int = 1024,
) -> dict[str, Path]:
    """Write ``refine.png`` and the :mod:`p2m.export` files into ``out``; returns kind -> path.

    Args:
        out: the output folder (created).
        pred, prediction: the predictor and its (refined) prediction (camera-frame mm, root-relative).
        refined: what :func:`refine_prediction` did (None: no ``refine.png``).
        formats: the requested formats: "glb" writes ``mesh.glb``; with ``photo``, "obj" writes the textured
            ``mesh.obj`` + ``mesh.mtl`` + ``mesh_texture.png`` (so the caller must not write its own mesh.obj)
            and the glb carries the texture too.
        mesh_axes: "y_up" or "camera" for the .obj (the .glb is always y up).
        photo: (H, W, 3) uint8 photo the pose's pixels refer to: texture the mesh from it (None: untextured).
        tex_size: texture side in texels.
    """
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if refined is not None:
        files["refine_png"] = out / "refine.png"
        write_png(files["refine_png"], refined.image)
    if prediction.vertices is None:
        return files
    export = ("glb",) if "glb" in formats else ()
    export += ("obj",) if photo is not None and "obj" in formats else ()
    if not export:
        return files
    cam = prediction.camera
    res = export_mesh(
        out,
        pred.body,
        prediction.vertices,
        prediction.joints_h36m,
        name="mesh",
        formats=export,
        unit=1e-3,
        axes=mesh_axes,
        image=photo,
        weak_perspective=None if photo is None else (cam.scale, cam.tx, cam.ty),
        tex_size=tex_size,
        texture_name=TEXTURE_NAME,
    )
    files.update(res.files)
    return files
