"""Load a trained model for inference and predict one person: 2D pixels -> root-relative 3D mesh and joints.

1. :func:`load_predictor`: rebuild the model from a run folder, a ``.pt`` (p2m checkpoint or ``{"config",
   "state_dict"}``) or ``best.safetensors`` (config from its metadata, else ``config.yaml`` beside / above it).
2. :func:`predict`: normalise like training (:func:`p2m.pose2mesh.transforms.normalize_pose2d`), run the network,
   centre the mesh on its regressed root joint (as the original's evaluation did: MeshNet's mesh is only nearly
   root-relative), fit the weak-perspective camera (:mod:`p2m.infer.view`) on the joints regressed from the
   predicted mesh. **Missing joints** (v = 0, off-image, or the COCO Head without ears) are filled in, because the
   network always reads all J joints: first from the body model's rest pose placed on the known joints by the same
   camera fit (seen from the front or from behind, whichever fits), then ``FILL_ITERATIONS`` times from the
   projection of the network's own prediction. Known joints are never changed, and only they enter the camera fit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2m import joints as J
from p2m.body import create
from p2m.errors import CheckpointError, ConfigError, P2MError
from p2m.infer.view import WeakPerspective, fit_weak_perspective
from p2m.paths import configure_third_party_caches
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh.config import Config, ModelConfig, from_dict, load_config, to_dict
from p2m.pose2mesh.distributed import resolve_device
from p2m.pose2mesh.model import build_model
from p2m.pose2mesh.pretrained import resolve
from p2m.pose2mesh.transforms import normalize_pose2d
from p2m.pose2mesh.weights import load_weights

logger = logging.getLogger(__name__)

__all__ = [
    "FILL_ITERATIONS",
    "MIN_KNOWN_JOINTS",
    "Prediction",
    "Predictor",
    "load_predictor",
    "load_state",
    "predict",
    "template_fill",
]

#: Refinements of the filled-in joints (each one forward pass).
FILL_ITERATIONS = 3
#: Fewest known input joints accepted.
MIN_KNOWN_JOINTS = 6


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
    def root(self) -> int:
        """Index of the root joint (the origin of the root-relative prediction) in :attr:`joint_names`."""
        return root_index(self.joint_set)

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return J.H36M_SKELETON if self.joint_set == "h36m" else J.COCO19_SKELETON


# ------------------------------------------------------------------------------------------------ loading


def _config_yaml_near(p: Path) -> dict[str, Any]:
    for cand in (p.parent / "config.yaml", p.parent.parent / "config.yaml"):
        if cand.is_file():
            logger.info("%s: config from %s", p, cand)
            return to_dict(load_config(cand))
    raise CheckpointError(
        f"{p}: holds no config, and there is no config.yaml beside it or in its parent folder"
    )


def load_state(checkpoint: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(state_dict, config dict, info)`` from a run folder, a ``.pt`` or a ``.safetensors`` file.

    A ``.pt`` may be a p2m training checkpoint (``format: p2m-checkpoint``; its ``model`` and ``config``), a
    ``{"config", "state_dict"}`` dict, or a bare state dict (config from ``config.yaml``). Loading uses
    ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        CheckpointError: missing, unreadable or unrecognised file, naming it.
    """
    p = resolve(checkpoint)  # "default": the shipped model
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint file or run folder")
    p = ckpt.resolve_checkpoint(p)
    info: dict[str, Any] = {"path": str(p)}
    if p.suffix == ".safetensors":
        state, config, meta = load_weights(p, strict=False)
        info.update({k: meta[k] for k in ("epoch", "step") if k in meta})
        return state, config if config is not None else _config_yaml_near(p), info
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
            raise CheckpointError(
                f"{p}: p2m checkpoint without 'model' or 'config' (keys: {sorted(obj)[:12]})"
            )
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
    try:
        if isinstance(config, dict) and "model" in config:
            return from_dict(Config, config)
        return Config(model=from_dict(ModelConfig, config, "model"))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: its config is not valid for this p2m: {exc}") from exc


def load_predictor(checkpoint: str | os.PathLike, device: str = "cpu") -> Predictor:
    """Load a model for inference (see :func:`load_state`); ``device`` is "cpu", "cuda" or "auto"."""
    configure_third_party_caches()
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
    template = _model_joints(
        mc.joint_set, rest.joints[0].double().numpy(), rest.keypoints[0].double().numpy()
    )
    template = _anny_to_camera(template * 1000.0)
    template -= template[root_index(mc.joint_set)]
    logger.info("loaded %s (%s, %s joints, step %s)", path, mc.stage, mc.joint_set, info.get("step"))
    return Predictor(model, cfg, body, faces, template, dev, path, info)


def root_index(joint_set: str) -> int:
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
    return np.concatenate(
        [coco, (coco[..., 11:12, :] + coco[..., 12:13, :]) / 2, (coco[..., 5:6, :] + coco[..., 6:7, :]) / 2],
        axis=-2,
    )


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


def _forward(
    pred: Predictor, joints2d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    t = pred.config.transform
    x = normalize_pose2d(joints2d, None, (t.crop_width, t.crop_height), t.standardize)
    with torch.inference_mode():
        out = pred.model(torch.from_numpy(x)[None].to(pred.device))
    root = root_index(pred.joint_set)
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
    offset = joints[
        root
    ].copy()  # the network's mesh is only nearly root-relative: centre it, as the original did
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
        raise P2MError(
            f"{where}: only {int(known.sum())} of {len(known)} joints are labelled (missing: "
            f"{', '.join(missing)}); at least {MIN_KNOWN_JOINTS} are needed"
        )
    filled = xy.copy()
    if not known.all():
        filled[~known] = template_fill(pred.template, xy, known)[~known]
    for _ in range(FILL_ITERATIONS if not known.all() else 0):
        fit_joints = _forward(pred, filled)[0]
        filled[~known] = fit_weak_perspective(fit_joints, xy, known).project(fit_joints)[~known]
    joints3d, lifted, h36m, mesh = _forward(pred, filled)
    cam = fit_weak_perspective(joints3d, xy, known)
    return Prediction(joints3d, lifted, h36m, mesh, cam, filled, known)
