"""`p2m infer`: one person's 2D pose -> Pose2Mesh -> mesh files, 3D joints and a picture through a fitted camera.

Steps of :func:`infer` (each a function of its own, so later options, e.g. refining the hands or writing a rigged
glTF, slot in between prediction and writing):

1. :func:`load_predictor`: rebuild the model from a run folder, a ``.pt`` (p2m checkpoint or ``{"config",
   "state_dict"}``) or ``best.safetensors`` (config from its metadata, else ``config.yaml`` beside / above it).
2. :func:`p2m.pose2mesh.infer_input.read_pose2d` + ``to_model_joints``: the pose in the model's joint set.
3. :func:`predict`: normalise like training (:func:`p2m.pose2mesh.transforms.normalize_pose2d`), run the network,
   centre the mesh on its regressed root joint (as the original's evaluation did: MeshNet's mesh is only nearly
   root-relative), fit the weak-perspective camera (:mod:`p2m.pose2mesh.infer_view`) on the joints regressed from
   the predicted mesh. **Missing joints** (v = 0, off-image, or the COCO Head without ears) are filled in, because the network
   always reads all J joints: first from the body model's rest pose placed on the known joints by the same camera
   fit (seen from the front or from behind, whichever fits), then ``FILL_ITERATIONS`` times from the projection of the network's own prediction. Known joints are never
   changed, and only they enter the camera fit.
4. Optional (:mod:`p2m.pose2mesh.infer_extras`): refine the hands and feet (on by default; ``refine.png`` shows
   before / after), and write a rigged ``mesh.glb`` and / or a mesh textured from the photo (:mod:`p2m.export`).
5. :func:`write_outputs`: ``mesh.obj`` / ``mesh.ply`` (trimesh; metres, root-relative, vertex order of the body
   model's topology; by default **y up**: the camera frame turned 180 degrees about x, i.e. x right, y up, z
   towards the viewer, the OpenGL camera frame, so viewers show the person upright and facing them; ``mesh_axes=
   "camera"`` keeps x right, y down, z forward), ``joints3d.json`` (camera frame, mm), ``mesh.png`` and
   ``infer.json`` (inputs, camera, files, summary).
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m import joints as J
from p2m.errors import CheckpointError, ConfigError, P2MError
from p2m.pose2mesh.infer_extras import FORMATS, check_options, refine_prediction, write_extras
from p2m.pose2mesh.infer_input import Pose2DInput, read_pose2d, to_model_joints
from p2m.pose2mesh.infer_view import Figure, WeakPerspective, draw_figure, fit_weak_perspective

logger = logging.getLogger(__name__)

#: Refinements of the filled-in joints (each one forward pass).
FILL_ITERATIONS = 3
#: Fewest known input joints accepted.
MIN_KNOWN_JOINTS = 6
MESH_FORMATS = ("obj", "ply")
MESH_AXES = ("y_up", "camera")


@dataclass
class Predictor:
    """A loaded model with what inference needs around it.

    Attributes:
        model: the :class:`p2m.pose2mesh.model.Pose2Mesh` in eval mode on ``device``.
        config: its :class:`p2m.pose2mesh.config.Config`.
        body: the body model layer (CPU), for faces, regressors and the rest-pose template.
        faces: (F, 3) int64 triangles of the predicted mesh (None for ``stage: posenet``).
        template: (J, 3) rest-pose joints of the body model in the model's joint set, root-relative camera mm.
        checkpoint: the file the weights came from; info: its epoch / step where known.
    """

    model: Any
    config: Any
    body: Any
    faces: np.ndarray | None
    template: np.ndarray
    device: Any
    checkpoint: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def joint_set(self) -> str:
        return self.config.model.joint_set

    @property
    def joint_names(self) -> tuple[str, ...]:
        return J.H36M_JOINTS if self.joint_set == "h36m" else J.COCO19_JOINTS

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return J.H36M_SKELETON if self.joint_set == "h36m" else J.COCO19_SKELETON


# ------------------------------------------------------------------------------------------------ loading


def _config_yaml_near(p: Path) -> dict[str, Any]:
    from p2m.pose2mesh.config import load_config, to_dict

    for cand in (p.parent / "config.yaml", p.parent.parent / "config.yaml"):
        if cand.is_file():
            logger.info("%s: config from %s", p, cand)
            return to_dict(load_config(cand))
    raise CheckpointError(f"{p}: holds no config, and there is no config.yaml beside it or in its parent folder")


def load_state(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(state_dict, config dict, info)`` from a run folder, a ``.pt`` or a ``.safetensors`` file.

    A ``.pt`` may be a p2m training checkpoint (``format: p2m-checkpoint``; its ``model`` and ``config``), a
    ``{"config", "state_dict"}`` dict, or a bare state dict (config from ``config.yaml``). Loading uses
    ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        CheckpointError: missing, unreadable or unrecognised file, naming it.
    """
    import torch

    from p2m.pose2mesh import checkpoint as ckpt
    from p2m.pose2mesh.pretrained import resolve

    p = resolve(checkpoint)  # "default": the shipped model
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or run folder")
    p = ckpt.resolve_checkpoint(p)
    info: dict[str, Any] = {"path": str(p)}
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
            state = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{p}: cannot read the safetensors file: {exc}") from exc
        info.update({k: meta[k] for k in ("epoch", "step") if k in meta})
        config = json.loads(meta["config"]) if "config" in meta else _config_yaml_near(p)
        return state, config, info
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean "unusable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"{p}: cannot read the checkpoint ({type(exc).__name__}: {first}); expected a p2m .pt or .safetensors "
            "that loads with torch.load(weights_only=True)"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: holds a {type(obj).__name__}, expected a checkpoint dict")
    if obj.get("format") == ckpt.FORMAT:
        if "model" not in obj or "config" not in obj:
            raise CheckpointError(f"{p}: p2m checkpoint without 'model' or 'config' (keys: {sorted(obj)[:12]})")
        info.update({k: obj.get(k) for k in ("epoch", "step")})
        return obj["model"], obj["config"], info
    if "state_dict" in obj:
        config = obj.get("config") or _config_yaml_near(p)
        return obj["state_dict"], config, info
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, _config_yaml_near(p), info
    hint = " (an original Pose2Mesh checkpoint?)" if "model_state_dict" in obj else ""
    raise CheckpointError(
        f"{p}: not a p2m checkpoint{hint}; expected format 'p2m-checkpoint', a {{'config', 'state_dict'}} dict or a "
        f"state dict; found keys {sorted(obj)[:12]}"
    )


def _full_config(config: dict[str, Any], where: Path) -> Any:
    from p2m.pose2mesh.config import Config, ModelConfig, from_dict

    try:
        if isinstance(config, dict) and "model" in config:
            return from_dict(Config, config)
        return Config(model=from_dict(ModelConfig, config, "model"))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: its config is not valid for this p2m: {exc}") from exc


def load_predictor(checkpoint: str | os.PathLike, device: str = "cpu") -> Predictor:
    """Load a model for inference (see :func:`load_state`); ``device`` is "cpu", "cuda" or "auto"."""
    import torch

    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    from p2m.body import create
    from p2m.pose2mesh.distributed import resolve_device
    from p2m.pose2mesh.model import build_model

    state, config, info = load_state(checkpoint)
    path = Path(info["path"])
    cfg = _full_config(config, path)
    mc = cfg.model
    body = create(mc.body.model, topology=mc.body.topology, rig=mc.body.rig)
    model = build_model(cfg, body=body)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model built from its config: {exc}") from exc
    dev = resolve_device(device)
    model.to(dev).eval()
    with torch.no_grad():
        rest = body(torch.zeros(1, body.num_bones, 3), None, None)
    faces = body.faces.cpu().numpy().astype(np.int64) if mc.stage == "pose2mesh" else None
    template = _model_joints(mc.joint_set, rest.joints[0].double().numpy(), rest.keypoints[0].double().numpy())
    template = _anny_to_camera(template * 1000.0)
    template -= template[_root(mc.joint_set)]
    logger.info("loaded %s (%s, %s joints, step %s)", path, mc.stage, mc.joint_set, info.get("step"))
    return Predictor(model, cfg, body, faces, template, dev, path, info)


def _root(joint_set: str) -> int:
    return J.H36M_ROOT if joint_set == "h36m" else J.COCO19_ROOT


def _anny_to_camera(x: np.ndarray) -> np.ndarray:
    """Body-model frame (+x left of the subject, -y forward, +z up) -> camera frame of a camera facing the body."""
    return np.stack([x[..., 0], -x[..., 2], x[..., 1]], axis=-1)


def _model_joints(joint_set: str, h36m: np.ndarray, coco: np.ndarray | None) -> np.ndarray:
    """(J, 3) joints of the model's joint set from H36M-17 and COCO-17 (..., 17, 3) joints."""
    if joint_set == "h36m":
        return h36m
    if coco is None:
        raise ConfigError("a coco19 model needs a body model with a COCO regressor")
    return np.concatenate([coco, (coco[..., 11:12, :] + coco[..., 12:13, :]) / 2,
                           (coco[..., 5:6, :] + coco[..., 6:7, :]) / 2], axis=-2)  # fmt: skip


# ------------------------------------------------------------------------------------------------ prediction


@dataclass
class Prediction:
    """What :func:`predict` returns (camera-frame millimetres, root-relative; pixels of the input).

    Attributes:
        joints3d: (J, 3) joints in the model's joint set: regressed from the mesh (PoseNet's for ``posenet``).
        joints_lifted: (J, 3) PoseNet's 3D joints.
        joints_h36m: (17, 3) H36M joints regressed from the mesh (None without a mesh).
        vertices: (V, 3) the mesh (None for ``stage: posenet``).
        camera: the fitted weak-perspective camera.
        joints2d: (J, 2) the input joints with the missing ones filled in.
        known: (J,) which joints came from the input.
    """

    joints3d: np.ndarray
    joints_lifted: np.ndarray
    joints_h36m: np.ndarray | None
    vertices: np.ndarray | None
    camera: WeakPerspective
    joints2d: np.ndarray
    known: np.ndarray


def _forward(pred: Predictor, joints2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    import torch

    from p2m.pose2mesh.transforms import normalize_pose2d

    t = pred.config.transform
    x = normalize_pose2d(joints2d, None, (t.crop_width, t.crop_height), t.standardize)
    with torch.inference_mode():
        out = pred.model(torch.from_numpy(x)[None].to(pred.device))
    root = _root(pred.joint_set)
    lifted = out.joints_lifted[0].double().cpu().numpy()
    lifted = lifted - lifted[root]
    if out.mesh is None:
        return lifted, lifted, None, None
    mesh = out.mesh[0].double().cpu().numpy()
    h36m = out.joints_from_mesh[0].double().cpu().numpy()
    coco = None
    if pred.joint_set != "h36m":
        coco = pred.body.coco_regressor.double().cpu().numpy() @ mesh
    joints = _model_joints(pred.joint_set, h36m, coco)
    offset = joints[root].copy()  # the network's mesh is only nearly root-relative: centre it, as the original did
    return joints - offset, lifted, h36m - offset, mesh - offset


def template_fill(template: np.ndarray, joints2d: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(J, 2) the rest-pose ``template`` (J, 3) placed on the known joints by a weak-perspective fit, seen from the
    front or from behind (x mirrored, labels kept), whichever fits the known joints better."""
    best = None
    for mirror in (1.0, -1.0):
        t = template * np.array([mirror, 1.0, 1.0])
        cam = fit_weak_perspective(t, joints2d, known)
        if best is None or cam.rms_px < best[0].rms_px:
            best = (cam, t)
    return best[0].project(best[1])


def predict(pred: Predictor, joints2d: np.ndarray, known: np.ndarray, where: str = "input") -> Prediction:
    """Run the model on (J, 2) pixel joints (NaN / ``known`` False where missing) and fit the camera.

    Raises:
        P2MError: fewer than :data:`MIN_KNOWN_JOINTS` known joints (``where`` names the input).
    """
    xy = np.asarray(joints2d, dtype=np.float64)
    known = np.asarray(known, dtype=bool) & np.isfinite(xy).all(axis=1)
    if known.sum() < MIN_KNOWN_JOINTS:
        missing = [n for n, k in zip(pred.joint_names, known, strict=True) if not k]
        raise P2MError(f"{where}: only {int(known.sum())} of {len(known)} joints are labelled (missing: "
                       f"{', '.join(missing)}); at least {MIN_KNOWN_JOINTS} are needed")  # fmt: skip
    filled = xy.copy()
    if not known.all():
        filled[~known] = template_fill(pred.template, xy, known)[~known]
    for _ in range(FILL_ITERATIONS if not known.all() else 0):
        fit_joints = _forward(pred, filled)[0]
        filled[~known] = fit_weak_perspective(fit_joints, xy, known).project(fit_joints)[~known]
    joints3d, lifted, h36m, mesh = _forward(pred, filled)
    cam = fit_weak_perspective(joints3d, xy, known)
    return Prediction(joints3d, lifted, h36m, mesh, cam, filled, known)


# ------------------------------------------------------------------------------------------------ outputs


@dataclass
class InferResult:
    """What :func:`infer` did.

    Attributes:
        out: the output folder.
        files: kind ("obj", "ply", "glb", "mtl", "texture", "joints", "png", "refine_png", "json") -> path written.
        prediction: the :class:`Prediction` (mm, camera frame, root-relative).
        input: the :class:`p2m.pose2mesh.infer_input.Pose2DInput` read.
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
        mesh = f"{len(pr.vertices)}-vertex mesh" if pr.vertices is not None else "3D joints (no mesh: posenet)"
        cam = pr.camera
        return (f"{self.input.source} ({self.input.joint_set}, {int(pr.known.sum())}/{len(pr.known)} joints known"
                f"{', filled ' + ','.join(filled) if filled else ''}) -> {mesh}; weak-perspective camera "
                f"s={cam.scale:.4g} px/mm t=({cam.tx:.1f}, {cam.ty:.1f}) px, joint fit {cam.rms_px:.1f} px RMS; "
                f"written to {self.out}")  # fmt: skip


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

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
    out: Path, pred: Predictor, prediction: Prediction, figure: Figure, record: dict[str, Any],
    mesh_axes: str = "y_up", formats: tuple[str, ...] = MESH_FORMATS, extra_files: dict[str, Path] | None = None,
) -> dict[str, Path]:  # fmt: skip
    """Write the mesh files, ``joints3d.json``, ``mesh.png`` and ``infer.json`` into ``out`` (atomically each).

    ``formats`` are trimesh's ("obj", "ply"); ``extra_files`` (kind -> path, already written, e.g. by
    :func:`p2m.pose2mesh.infer_extras.write_extras`) are listed in ``infer.json`` and returned too.
    """
    from PIL import Image

    from p2m.io import write_bytes, write_json, write_text

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
        "joint_set": pred.joint_set, "root": names[_root(pred.joint_set)], "names": names,
        "source": "mesh" if prediction.vertices is not None else "posenet",
        "joints": _round(prediction.joints3d),
        "joints_lifted": _round(prediction.joints_lifted),
        "joints_2d_px": _round(prediction.camera.project(prediction.joints3d), 2),
    }  # fmt: skip
    if record.get("root_translation_mm") is not None:  # the photo's intrinsics were known
        joints["joints_camera_frame"] = _round(prediction.joints3d + np.asarray(record["root_translation_mm"]))
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
) -> InferResult:
    """Predict the mesh of one person from a 2D pose file and write it with a picture (the entry of ``p2m infer``).

    Args:
        checkpoint: a run folder, a ``.pt`` or a ``.safetensors`` (or an already loaded :class:`Predictor`).
        pose2d: the JSON / .npy 2D pose (:mod:`p2m.pose2mesh.infer_input` lists the forms).
        out: the output folder (created).
        image: the photo to draw on (default: the photo a data.json names, if present; else a blank canvas).
        joint_set: "auto", "coco" or "h36m" (how to read ``pose2d``).
        person: 0-based person index in the file; annotation_id: a data.json annotation id instead.
        device: "cpu", "cuda" or "auto".
        mesh_axes: "y_up" (default) or "camera" axes for the mesh files (module docstring).
        formats: mesh files to write: "obj", "ply" (trimesh, untextured) and / or "glb" (rigged glTF binary, H36M-17
            skeleton, y up, metres).
        crop: in the picture, show only the part of the photo around the person when the person is small in it.
        refine: restore the hands and feet from the body model (:mod:`p2m.pose2mesh.refine`; writes ``refine.png``).
        refine_method: "fit" (fit the body model to the whole mesh, ~1 s on a CPU) or "paste" (rigid template).
        texture: texture the mesh from the photo (needs one): the .obj becomes ``mesh.obj`` + ``mesh.mtl`` +
            ``mesh_texture.png``, and the .glb carries the texture.
        intrinsics: ``(fx, fy, cx, cy)`` px of the photo's camera (default: a data.json's camera, if any). With
            them the root is placed in the camera frame by least squares on the projection
            (:func:`p2m.pose2mesh.metrics.root_from_projection`) and joints3d.json gets camera-frame joints.

    Returns:
        An :class:`InferResult` (``summary()`` gives the one-line report).

    Raises:
        P2MError: unusable checkpoint, pose file or image, named in the message.
    """
    if mesh_axes not in MESH_AXES:
        raise ConfigError(f"mesh axes {mesh_axes!r}: expected one of {list(MESH_AXES)}")
    formats = tuple(dict.fromkeys(formats))
    check_options(formats, refine_method, texture, has_photo=True)
    pred = checkpoint if isinstance(checkpoint, Predictor) else load_predictor(checkpoint, device)
    inp = read_pose2d(pose2d, joint_set, person=person, annotation_id=annotation_id, model_joint_set=pred.joint_set)
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
    photo = _read_image(img_path) if img_path is not None else None
    if photo is not None and inp.image_size is not None and inp.image_size != (photo.shape[1], photo.shape[0]):
        logger.warning("%s is %dx%d but %s states %dx%d: the joints may not match the picture", img_path,
                       photo.shape[1], photo.shape[0], inp.path, *inp.image_size)  # fmt: skip
    cam = prediction.camera
    captions = (f"input: {inp.joint_set.upper()} -> {pred.joint_set.upper()}"
                f"{' (grey: filled in)' if not prediction.known.all() else ''}",
                f"{'mesh' if prediction.vertices is not None else '3D joints'}, weak-perspective fit "
                f"{cam.rms_px:.1f} px RMS",
                "side view (from the right)")  # fmt: skip
    figure = draw_figure(image=photo, joints2d=prediction.joints2d, known=prediction.known, names=pred.joint_names,
                         edges=pred.skeleton, camera=cam, vertices_mm=prediction.vertices, faces=pred.faces,
                         joints3d_mm=prediction.joints3d, captions=captions, crop=crop)  # fmt: skip
    root_t = None
    if inp.focal is not None and inp.principal is not None:
        from p2m.pose2mesh.metrics import root_from_projection

        rel = prediction.joints3d - prediction.joints3d[_root(pred.joint_set)]
        root_t = root_from_projection(prediction.joints2d[None], rel[None], np.array([[*inp.focal, *inp.principal]]),
                                      prediction.known.astype(np.float64)[None])[0]  # fmt: skip
    notes = [*inp.notes, *conv_notes]
    record = {
        "checkpoint": str(pred.checkpoint), "epoch": pred.info.get("epoch"), "step": pred.info.get("step"),
        "stage": pred.config.model.stage, "body": {"model": pred.config.model.body.model,
                                                   "topology": pred.config.model.body.topology},
        "input": {"file": str(inp.path), "source": inp.source, "joint_set": inp.joint_set, "person": inp.person,
                  "annotation_id": inp.annotation_id, "image": None if img_path is None else str(img_path),
                  "filled_in": [n for n, k in zip(pred.joint_names, prediction.known, strict=True) if not k],
                  "notes": notes},
        "model_joint_set": pred.joint_set,
        "camera": cam.to_dict(),
        "root_translation_mm": None if root_t is None else _round(root_t, 1),
        "refine": None if refined is None else refined.to_dict(prediction.vertices),
        "texture": None if not texture or prediction.vertices is None else {"image": str(img_path)},
        "mesh_axes": "x right, y up, z towards the viewer (metres)" if mesh_axes == "y_up"
        else "camera: x right, y down, z forward (metres)",
        "figure": {"size": [int(figure.image.shape[1]), int(figure.image.shape[0])],
                   "panels": {k: list(v) for k, v in figure.panels.items()},
                   "view": {k: [float(x) for x in v] for k, v in figure.view.items()}},
    }  # fmt: skip
    out_dir = Path(out)
    extra = write_extras(out_dir, pred, prediction, refined, formats, mesh_axes, photo if texture else None)
    own = tuple(f for f in formats if f in MESH_FORMATS and not (f == "obj" and "obj" in extra))
    files = write_outputs(out_dir, pred, prediction, figure, record, mesh_axes, own, extra)
    result = InferResult(out_dir, files, prediction, inp, pred.joint_names,
                         (int(figure.image.shape[1]), int(figure.image.shape[0])), figure.panels, figure.view, notes,
                         pred.checkpoint, root_t)  # fmt: skip
    logger.debug("%s", result.summary())
    return result


__all__ = ["FORMATS", "InferResult", "Prediction", "Predictor", "infer", "load_predictor", "load_state", "mesh_file_vertices",
           "predict", "template_fill", "write_outputs"]  # fmt: skip
