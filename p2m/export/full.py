"""The full-resolution body mesh of a body-model fit: what an artist opens (MakeHuman's UV layout, the same rig).

Pose2Mesh predicts a decimated anny mesh (1,229 vertices) whose only texture layout is a per-triangle atlas. The
refine fit (:class:`p2m.infer.refine_fit.MeshFitter`) already finds anny's pose and shape for that mesh; the
decimated and full topologies share the rig and the shape space, so the same parameters drive the full 13,718-vertex
mesh, whose UVs are MakeHuman's own (:func:`p2m.export.uv.body_uv_layout`): a texture written for it is a
standard body UV map, and the glb is skinned with the full mesh's own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from p2m.export.geometry import as_numpy

__all__ = ["BodyFit", "FULL_TOPOLOGY", "full_body", "posed_mesh"]

#: anny's full mesh: the topology carrying MakeHuman's UV layout.
FULL_TOPOLOGY = "full"


@dataclass(frozen=True)
class BodyFit:
    """A body-model fit placed in a frame: ``frame_point = rot @ body_point + offset`` (metres).

    Attributes:
        pose: (J, 3) axis-angle per bone; shape: (S,) shape parameters; trans: (3,) m, the body's translation.
        rot: (3, 3) rotation and offset: (3,) m from the body's frame to the frame of the fitted mesh.
        rms_m: RMS vertex distance of the fit to the mesh it was fitted to (m).
    """

    pose: np.ndarray
    shape: np.ndarray
    trans: np.ndarray
    rot: np.ndarray
    offset: np.ndarray
    rms_m: float = float("nan")


def full_body(rig: str, model: str = "anny", topology: str = FULL_TOPOLOGY) -> Any:
    """The body model layer of the full topology (same rig as the fit's)."""
    from p2m.body import create

    return create(model, topology=topology, rig=rig)


def posed_mesh(body: Any, fit: BodyFit, unit_m: float = 1e-3) -> np.ndarray:
    """(V, 3) vertices of ``body`` (any topology of the fitted rig) in the fit's frame, in units of ``unit_m``."""
    import torch

    dev = getattr(body, "device", torch.device("cpu"))

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)[None]

    with torch.no_grad():
        local = as_numpy(body(t(fit.pose), t(fit.shape), t(fit.trans)).vertices[0])
    return (
        local @ np.asarray(fit.rot, dtype=np.float64).T + np.asarray(fit.offset, dtype=np.float64)
    ) / unit_m
