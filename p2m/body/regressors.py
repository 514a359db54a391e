"""The H36M-17 and COCO-17 linear vertex regressors of the anny meshes, built once and cached on disk.

One definition serves ground truth and predictions alike (bodymodel.md, option 1):

* COCO-17 = anny's own keypoint regressor (``anny.KeypointsRegressor.coco``, weights over the full mesh).
* H36M-17 (Pose2Mesh order): hips, knees, ankles, shoulders, elbows, wrists and nose are the COCO rows;
  Pelvis = mean of the COCO hips; Neck (thorax) = mean of the COCO shoulders; Torso = mean of Pelvis and
  Neck; Head = mean of the 12 highest vertices of the full template (the skull top).
* The coarser topologies (notoes, notoes_collapse*) get the full mesh's weights moved to the nearest
  coarse vertex in the rest pose, so every topology approximates the same joints (3.7 mm mean at 1,229
  vertices, bodymodel.md).

Every row is non-negative and sums to 1, so regressed joints follow the mesh under any translation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from p2m.errors import BodyModelError
from p2m.joints import COCO_JOINTS, H36M_JOINTS

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Bump when the definition below changes: cached files of another version are rebuilt.
REGRESSOR_VERSION = 1
#: Number of highest template vertices averaged into the H36M "Head" joint.
HEAD_TOP_VERTICES = 12

#: H36M joints that are one COCO keypoint.
_H36M_FROM_COCO_DIRECT = {
    "R_Hip": "R_Hip", "R_Knee": "R_Knee", "R_Ankle": "R_Ankle",
    "L_Hip": "L_Hip", "L_Knee": "L_Knee", "L_Ankle": "L_Ankle",
    "Nose": "Nose",
    "L_Shoulder": "L_Shoulder", "L_Elbow": "L_Elbow", "L_Wrist": "L_Wrist",
    "R_Shoulder": "R_Shoulder", "R_Elbow": "R_Elbow", "R_Wrist": "R_Wrist",
}  # fmt: skip


def h36m_from_coco(coco17: torch.Tensor, template_vertices: torch.Tensor) -> torch.Tensor:
    """The H36M-17 regressor derived from a COCO-17 regressor of the same mesh.

    Args:
        coco17: (17, V) COCO-17 weights (``p2m.joints.COCO_JOINTS`` order), rows summing to 1.
        template_vertices: (V, 3) the rest mesh (+Z up) whose highest vertices make the Head row.

    Returns:
        (17, V) weights in ``p2m.joints.H36M_JOINTS`` order, same dtype as ``coco17``.
    """
    import torch

    coco = {name: coco17[i] for i, name in enumerate(COCO_JOINTS)}
    rows: dict[str, torch.Tensor] = {h: coco[c] for h, c in _H36M_FROM_COCO_DIRECT.items()}
    rows["Pelvis"] = 0.5 * (coco["L_Hip"] + coco["R_Hip"])
    rows["Neck"] = 0.5 * (coco["L_Shoulder"] + coco["R_Shoulder"])
    rows["Torso"] = 0.5 * (rows["Pelvis"] + rows["Neck"])
    z = template_vertices[:, 2].to(torch.float64)
    top = torch.argsort(-z, stable=True)[:HEAD_TOP_VERTICES]
    head = torch.zeros_like(coco17[0])
    head[top] = 1.0 / HEAD_TOP_VERTICES
    rows["Head"] = head
    return torch.stack([rows[name] for name in H36M_JOINTS])


def transfer_to_nearest(
    weights: torch.Tensor, fine_vertices: torch.Tensor, coarse_vertices: torch.Tensor
) -> torch.Tensor:
    """Move each fine vertex's weight onto the nearest coarse vertex (rest pose).

    Args:
        weights: (K, Vf) regressor of the fine mesh.
        fine_vertices: (Vf, 3) fine rest vertices.
        coarse_vertices: (Vc, 3) coarse rest vertices, in the same frame.

    Returns:
        (K, Vc) regressor of the coarse mesh; row sums are preserved exactly (up to round-off).
    """
    import numpy as np
    import torch
    from scipy.spatial import cKDTree

    support = torch.nonzero(weights.abs().sum(0) > 0).flatten()
    tree = cKDTree(coarse_vertices.detach().cpu().to(torch.float64).numpy())
    _, nearest = tree.query(fine_vertices[support].detach().cpu().to(torch.float64).numpy(), k=1)
    nearest = torch.as_tensor(np.asarray(nearest, dtype=np.int64))
    out = torch.zeros(weights.shape[0], coarse_vertices.shape[0], dtype=weights.dtype)
    return out.index_add_(1, nearest, weights[:, support].cpu())


def build_anny_regressors(full_model, model) -> dict[str, torch.Tensor]:
    """Build the regressors of ``model`` from the full-topology anny model of the same rig.

    Args:
        full_model: an ``anny.Anny`` with the full ("anny") topology; its base-mesh indices map anny's
            COCO weights onto its vertices.
        model: the ``anny.Anny`` to build for (may be ``full_model`` itself).

    Returns:
        ``{"h36m": (17, V), "coco": (17, V)}`` float64 tensors on the CPU, rows non-negative summing to 1.
    """
    import torch

    anny = _anny()
    full_template = full_model.template_vertices.detach().cpu().to(torch.float64)
    coco23 = anny.KeypointsRegressor.coco(full_model).regression_weights.detach().cpu().to(torch.float64)
    coco17 = coco23[: len(COCO_JOINTS)]
    coco17 = coco17 / coco17.sum(1, keepdim=True)
    h36m = h36m_from_coco(coco17, full_template)
    if model is not full_model:
        template = model.template_vertices.detach().cpu().to(torch.float64)
        coco17 = transfer_to_nearest(coco17, full_template, template)
        h36m = transfer_to_nearest(h36m, full_template, template)
    return {"h36m": h36m.contiguous(), "coco": coco17.contiguous()}


def _anny():
    from p2m.body.anny_model import import_anny

    return import_anny()


def regressor_cache_path(rig: str, topology: str, root: str | Path | None = None) -> Path:
    """Where the regressors of one (rig, topology) are cached: ``<cache>/body/`` by default."""
    from p2m.paths import cache_dir

    folder = Path(root) if root is not None else cache_dir() / "body"
    return folder / f"anny-{rig}-{topology}-regressors-v{REGRESSOR_VERSION}.safetensors"


def _anny_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anny")
    except PackageNotFoundError:
        return "unknown"


def read_cached_regressors(
    rig: str, topology: str, num_vertices: int, root: str | Path | None = None
) -> dict[str, torch.Tensor] | None:
    """The cached regressors of (rig, topology), or None when the file is missing, unreadable or stale.

    Stale = written for another anny version, regressor version or vertex count.
    """
    from safetensors import safe_open

    path = regressor_cache_path(rig, topology, root)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("p2m", "{}"))
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # a truncated or foreign file: rebuild it
        logger.warning("%s: unreadable regressor cache (%s); rebuilding it", path, exc)
        return None
    fresh = (
        meta.get("anny_version") == _anny_version()
        and meta.get("version") == REGRESSOR_VERSION
        and all(
            key in tensors and tuple(tensors[key].shape) == (17, num_vertices) for key in ("h36m", "coco")
        )
    )
    if not fresh:
        logger.info("%s: written for another anny version, definition or mesh; rebuilding it", path)
        return None
    return {"h36m": tensors["h36m"], "coco": tensors["coco"]}


def load_or_build_regressors(
    rig: str,
    topology: str,
    build: Callable[[], dict[str, torch.Tensor]],
    num_vertices: int,
    root: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """The cached regressors of (rig, topology); ``build()`` makes and caches them when absent or stale.

    Args:
        rig: anny rig name (part of the file name).
        topology: p2m topology name (part of the file name).
        build: called without arguments when the cache is missing; returns ``{"h36m", "coco"}``.
        num_vertices: V of the topology; a cached file with another V is rebuilt.
        root: the cache folder (default ``p2m.paths.cache_dir() / "body"``).

    Returns:
        ``{"h36m": (17, V), "coco": (17, V)}`` float64 CPU tensors.
    """
    import safetensors.torch

    from p2m.io import write_bytes

    cached = read_cached_regressors(rig, topology, num_vertices, root)
    if cached is not None:
        return cached
    tensors = build()
    for key in ("h36m", "coco"):
        if key not in tensors or tuple(tensors[key].shape) != (17, num_vertices):
            raise BodyModelError(
                f"joint regressor {key!r} for anny rig {rig!r} topology {topology!r}: expected shape "
                f"(17, {num_vertices}), got {tuple(tensors[key].shape) if key in tensors else 'nothing'}"
            )
    # One metadata entry holding sorted JSON: safetensors writes several entries in a random order.
    meta = {"anny_version": _anny_version(), "rig": rig, "topology": topology, "version": REGRESSOR_VERSION}
    data = safetensors.torch.save(
        {key: tensors[key].contiguous() for key in ("h36m", "coco")},
        metadata={"p2m": json.dumps(meta, sort_keys=True)},
    )
    path = regressor_cache_path(rig, topology, root)
    write_bytes(path, data)
    logger.info("cached joint regressors in %s", path)
    return {"h36m": tensors["h36m"], "coco": tensors["coco"]}
