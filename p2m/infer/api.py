"""`p2m infer`: one person's 2D pose -> Pose2Mesh -> mesh files, 3D joints and a picture through a fitted camera.

Steps of :func:`infer` (each a function of its own, so later options, e.g. refining the hands or writing a rigged
glTF, slot in between prediction and writing):

1. :func:`p2m.infer.predictor.load_predictor`: rebuild the model from a run folder, a ``.pt`` or
   ``best.safetensors``.
2. :func:`p2m.infer.pose_input.read_pose2d` + ``to_model_joints``: the pose in the model's joint set.
3. :func:`p2m.infer.predictor.predict`: run the network (missing joints filled in) and fit the weak-perspective
   camera (:mod:`p2m.infer.view`).
4. Optional (:mod:`p2m.infer.extras`): refine the hands and feet (on by default; ``refine.png`` shows
   before / after), and write a rigged ``mesh.glb`` and / or a mesh textured from the photo (:mod:`p2m.export`).
5. :func:`write_outputs`: ``mesh.obj`` / ``mesh.ply`` (trimesh; metres, root-relative, vertex order of the body
   model's topology; by default **y up**: the camera frame turned 180 degrees about x, i.e. x right, y up, z
   towards the viewer, the OpenGL camera frame, so viewers show the person upright and facing them; ``mesh_axes=
   "camera"`` keeps x right, y down, z forward), ``joints3d.json`` (camera frame, mm), ``mesh.png`` and
   ``infer.json`` (inputs, camera, files, summary).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from p2m import joints as J
from p2m.errors import ConfigError, P2MError
from p2m.infer.extras import FORMATS, MESHES, check_options, full_resolution, refine_prediction, write_extras
from p2m.infer.figure import Figure, draw_figure
from p2m.infer.pose_input import Pose2DInput, read_pose2d, to_model_joints
from p2m.infer.predictor import Prediction, Predictor, load_predictor, predict, root_index
from p2m.infer.view import WeakPerspective
from p2m.io import write_bytes, write_json, write_text
from p2m.pose2mesh.metrics import root_from_projection

logger = logging.getLogger(__name__)

MESH_FORMATS = ("obj", "ply")
MESH_AXES = ("y_up", "camera")


# ------------------------------------------------------------------------------------------------ outputs


@dataclass
class InferResult:
    """What :func:`infer` did.

    Attributes:
        out: the output folder.
        files: kind ("obj", "ply", "glb", "mtl", "texture", "joints", "png", "refine_png", "json") -> path written.
        prediction: the :class:`Prediction` (mm, camera frame, root-relative).
        input: the :class:`p2m.infer.pose_input.Pose2DInput` read.
        joint_names: names of ``prediction.joints3d``.
        figure_size: (W, H) of mesh.png; panels: its panels (name -> x, y, w, h); view: input px -> panel px.
        notes: how the input was read and converted.
        root_translation_mm: the root in the photo's camera frame (mm), when the input named a camera.
    """

    out: Path
    files: dict[str, Path]
    prediction: Prediction
    input: Pose2DInput
    joint_names: tuple[str, ...]
    figure_size: tuple[int, int]
    panels: dict[str, tuple[int, int, int, int]]
    view: dict[str, tuple[float, float]]
    notes: list[str]
    checkpoint: Path
    root_translation_mm: np.ndarray | None = None

    @property
    def camera(self) -> WeakPerspective:
        return self.prediction.camera

    def summary(self) -> str:
        """One line: input, mesh size, camera and where the files are."""
        pr = self.prediction
        filled = [n for n, k in zip(self.joint_names, pr.known, strict=True) if not k]
        mesh = (
            f"{len(pr.vertices)}-vertex mesh" if pr.vertices is not None else "3D joints (no mesh: posenet)"
        )
        cam = pr.camera
        return (
            f"{self.input.source} ({self.input.joint_set}, {int(pr.known.sum())}/{len(pr.known)} joints known"
            f"{', filled ' + ','.join(filled) if filled else ''}) -> {mesh}; weak-perspective camera "
            f"s={cam.scale:.4g} px/mm t=({cam.tx:.1f}, {cam.ty:.1f}) px, joint fit {cam.rms_px:.1f} px RMS; "
            f"written to {self.out}"
        )


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).copy()
    except FileNotFoundError as exc:
        raise P2MError(f"{path}: image not found") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise P2MError(f"{path}: cannot read the image: {exc}") from exc


def mesh_file_vertices(vertices_mm: np.ndarray, mesh_axes: str = "y_up") -> np.ndarray:
    """(V, 3) root-relative camera-frame mm -> metres in the axes of the mesh files (module docstring)."""
    v = np.asarray(vertices_mm, dtype=np.float64) / 1000.0
    if mesh_axes == "y_up":
        return v * np.array([1.0, -1.0, -1.0])
    if mesh_axes == "camera":
        return v
    raise ConfigError(f"mesh axes {mesh_axes!r}: expected one of {list(MESH_AXES)}")


def write_outputs(
    out: Path,
    pred: Predictor,
    prediction: Prediction,
    figure: Figure,
    record: dict[str, Any],
    mesh_axes: str = "y_up",
    formats: tuple[str, ...] = MESH_FORMATS,
    extra_files: dict[str, Path] | None = None,
) -> dict[str, Path]:
    """Write the mesh files, ``joints3d.json``, ``mesh.png`` and ``infer.json`` into ``out`` (atomically each).

    ``formats`` are trimesh's ("obj", "ply"); ``extra_files`` (kind -> path, already written, e.g. by
    :func:`p2m.infer.extras.write_extras`) are listed in ``infer.json`` and returned too.
    """
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if prediction.vertices is not None and pred.faces is not None:
        import trimesh

        mesh = trimesh.Trimesh(mesh_file_vertices(prediction.vertices, mesh_axes), pred.faces, process=False)
        for fmt in formats:
            if fmt not in MESH_FORMATS:
                raise ConfigError(f"mesh format {fmt!r}: expected one of {list(MESH_FORMATS)}")
            data = mesh.export(file_type=fmt)
            path = out / f"mesh.{fmt}"
            write_text(path, data) if isinstance(data, str) else write_bytes(path, data)
            files[fmt] = path
    names = list(pred.joint_names)
    joints = {
        "unit": "mm",
        "frame": "camera: x right, y down, z forward; root-relative (the root joint is at 0)",
        "joint_set": pred.joint_set,
        "root": names[pred.root],
        "names": names,
        "source": "mesh" if prediction.vertices is not None else "posenet",
        "joints": _round(prediction.joints3d),
        "joints_lifted": _round(prediction.joints_lifted),
        "joints_2d_px": _round(prediction.camera.project(prediction.joints3d), 2),
    }
    if record.get("root_translation_mm") is not None:  # the photo's intrinsics were known
        joints["joints_camera_frame"] = _round(
            prediction.joints3d + np.asarray(record["root_translation_mm"])
        )
    if prediction.joints_h36m is not None and pred.joint_set != "h36m":
        joints["joints_h36m"] = {"names": list(J.H36M_JOINTS), "joints": _round(prediction.joints_h36m)}
    files["joints"] = out / "joints3d.json"
    write_json(files["joints"], joints, indent=1)
    buf = io.BytesIO()
    Image.fromarray(figure.image).save(buf, format="PNG")
    files["png"] = out / "mesh.png"
    write_bytes(files["png"], buf.getvalue())
    files.update(extra_files or {})
    files["json"] = out / "infer.json"
    record = {**record, "files": {k: p.name for k, p in files.items()}}
    write_json(files["json"], record, indent=1)
    return files


def _round(a: np.ndarray, nd: int = 3) -> list[Any]:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def infer(
    checkpoint: str | os.PathLike | Predictor,
    pose2d: str | os.PathLike,
    out: str | os.PathLike,
    image: str | os.PathLike | None = None,
    *,
    joint_set: str = "auto",
    person: int | None = None,
    annotation_id: int | None = None,
    device: str = "cpu",
    mesh_axes: str = "y_up",
    formats: tuple[str, ...] = MESH_FORMATS,
    crop: bool = True,
    refine: bool = True,
    refine_method: str = "fit",
    texture: bool = False,
    intrinsics: tuple[float, float, float, float] | None = None,
    mesh: str = "network",
) -> InferResult:
    """Predict the mesh of one person from a 2D pose file and write it with a picture (the entry of ``p2m infer``).

    Args:
        checkpoint: a run folder, a ``.pt`` or a ``.safetensors`` (or an already loaded :class:`Predictor`).
        pose2d: the JSON / .npy 2D pose (:mod:`p2m.infer.pose_input` lists the forms).
        out: the output folder (created).
        image: the photo to draw on (default: the photo a data.json names, if present; else a blank canvas).
        joint_set: "auto", "coco" or "h36m" (how to read ``pose2d``).
        person: 0-based person index in the file; annotation_id: a data.json annotation id instead.
        device: "cpu", "cuda" or "auto".
        mesh_axes: "y_up" (default) or "camera" axes for the mesh files (module docstring).
        formats: mesh files to write: "obj", "ply" (trimesh, untextured) and / or "glb" (rigged glTF binary, H36M-17
            skeleton, y up, metres).
        crop: in the picture, show only the part of the photo around the person when the person is small in it.
        refine: restore the hands and feet from the body model (:mod:`p2m.infer.refine`; writes ``refine.png``).
        refine_method: "fit" (fit the body model to the whole mesh, ~1 s on a CPU) or "paste" (rigid template).
        texture: texture the mesh from the photo (needs one): the .obj becomes ``mesh.obj`` + ``mesh.mtl`` +
            ``mesh_texture.png``, and the .glb carries the texture.
        intrinsics: ``(fx, fy, cx, cy)`` px of the photo's camera (default: a data.json's camera, if any). With
            them the root is placed in the camera frame by least squares on the projection
            (:func:`p2m.pose2mesh.metrics.root_from_projection`) and joints3d.json gets camera-frame joints.
        mesh: "network" (the predicted mesh) or "full": the refine fit's full-resolution anny mesh, with
            MakeHuman's UV layout (a standard body texture map) and the full mesh's skin weights in the .glb.

    Returns:
        An :class:`InferResult` (``summary()`` gives the one-line report).

    Raises:
        P2MError: unusable checkpoint, pose file or image, named in the message.
    """
    if mesh_axes not in MESH_AXES:
        raise ConfigError(f"mesh axes {mesh_axes!r}: expected one of {list(MESH_AXES)}")
    formats = tuple(dict.fromkeys(formats))
    if mesh not in MESHES:
        raise ConfigError(f"mesh {mesh!r}: expected one of {list(MESHES)}")
    if mesh == "full" and not (refine and refine_method == "fit"):
        raise ConfigError("--mesh full needs the refine fit: drop --no-refine / use --refine-method fit")
    check_options(formats, refine_method, texture, has_photo=True)
    pred = checkpoint if isinstance(checkpoint, Predictor) else load_predictor(checkpoint, device)
    inp = read_pose2d(
        pose2d, joint_set, person=person, annotation_id=annotation_id, model_joint_set=pred.joint_set
    )
    if intrinsics is not None:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        if fx <= 0 or fy <= 0:
            raise ConfigError(f"intrinsics {list(intrinsics)}: expected positive focal lengths fx, fy (px)")
        inp.focal, inp.principal = (fx, fy), (cx, cy)
    xy, known, conv_notes = to_model_joints(inp, pred.joint_set)
    img_path = Path(image) if image is not None else inp.image_path
    check_options(formats, refine_method, texture, has_photo=img_path is not None)
    prediction = predict(pred, xy, known, where=inp.source)
    if prediction.vertices is None and ("glb" in formats or texture):
        logger.warning("%s is a posenet checkpoint (3D joints, no mesh): no glb / texture", pred.checkpoint)
    refined = refine_prediction(pred, prediction, refine_method) if refine else None
    refine_record = None if refined is None else refined.to_dict(prediction.vertices)
    if mesh == "full":
        pred, prediction = full_resolution(pred, prediction, refined)
    photo = _read_image(img_path) if img_path is not None else None
    if (
        photo is not None
        and inp.image_size is not None
        and inp.image_size != (photo.shape[1], photo.shape[0])
    ):
        logger.warning(
            "%s is %dx%d but %s states %dx%d: the joints may not match the picture",
            img_path,
            photo.shape[1],
            photo.shape[0],
            inp.path,
            *inp.image_size,
        )
    cam = prediction.camera
    captions = (
        f"input: {inp.joint_set.upper()} -> {pred.joint_set.upper()}"
        f"{' (grey: filled in)' if not prediction.known.all() else ''}",
        f"{'mesh' if prediction.vertices is not None else '3D joints'}, weak-perspective fit "
        f"{cam.rms_px:.1f} px RMS",
        "side view (from the right)",
    )
    figure = draw_figure(
        image=photo,
        joints2d=prediction.joints2d,
        known=prediction.known,
        names=pred.joint_names,
        edges=pred.skeleton,
        camera=cam,
        vertices_mm=prediction.vertices,
        faces=pred.faces,
        joints3d_mm=prediction.joints3d,
        captions=captions,
        crop=crop,
    )
    root_t = None
    if inp.focal is not None and inp.principal is not None:
        rel = prediction.joints3d - prediction.joints3d[root_index(pred.joint_set)]
        root_t = root_from_projection(
            prediction.joints2d[None],
            rel[None],
            np.array([[*inp.focal, *inp.principal]]),
            prediction.known.astype(np.float64)[None],
        )[0]
        if (
            not np.isfinite(root_t).all() or root_t[2] <= 0
        ):  # joints that no pinhole explains (an untrained model)
            logger.warning("the least-squares root is behind the camera; using the weak-perspective depth")
            root_t = cam.root_translation_mm(inp.focal, inp.principal)
    notes = [*inp.notes, *conv_notes]
    record = {
        "checkpoint": str(pred.checkpoint),
        "epoch": pred.info.get("epoch"),
        "step": pred.info.get("step"),
        "stage": pred.config.model.stage,
        "body": {"model": pred.config.model.body.model, "topology": pred.config.model.body.topology},
        "input": {
            "file": str(inp.path),
            "source": inp.source,
            "joint_set": inp.joint_set,
            "person": inp.person,
            "annotation_id": inp.annotation_id,
            "image": None if img_path is None else str(img_path),
            "filled_in": [n for n, k in zip(pred.joint_names, prediction.known, strict=True) if not k],
            "notes": notes,
        },
        "model_joint_set": pred.joint_set,
        "camera": cam.to_dict(),
        "root_translation_mm": None if root_t is None else _round(root_t, 1),
        "refine": refine_record,
        "mesh": {"kind": mesh, "vertices": None if prediction.vertices is None else len(prediction.vertices)},
        "texture": None if not texture or prediction.vertices is None else {"image": str(img_path)},
        "mesh_axes": "x right, y up, z towards the viewer (metres)"
        if mesh_axes == "y_up"
        else "camera: x right, y down, z forward (metres)",
        "figure": {
            "size": [int(figure.image.shape[1]), int(figure.image.shape[0])],
            "panels": {k: list(v) for k, v in figure.panels.items()},
            "view": {k: [float(x) for x in v] for k, v in figure.view.items()},
        },
    }
    out_dir = Path(out)
    extra = write_extras(out_dir, pred, prediction, refined, formats, mesh_axes, photo if texture else None)
    own = tuple(f for f in formats if f in MESH_FORMATS and not (f == "obj" and "obj" in extra))
    files = write_outputs(out_dir, pred, prediction, figure, record, mesh_axes, own, extra)
    result = InferResult(
        out_dir,
        files,
        prediction,
        inp,
        pred.joint_names,
        (int(figure.image.shape[1]), int(figure.image.shape[0])),
        figure.panels,
        figure.view,
        notes,
        pred.checkpoint,
        root_t,
    )
    logger.debug("%s", result.summary())
    return result


__all__ = [
    "FORMATS",
    "MESH_AXES",
    "MESH_FORMATS",
    "InferResult",
    "infer",
    "mesh_file_vertices",
    "write_outputs",
]
