"""What every body backend shares: the output record, the topology table and the joint regression."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, NamedTuple

from p2m.errors import BodyModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: The default anny rig: 31 bones named like the CMU mocap BVH skeleton (Hips, LHipJoint, LeftUpLeg, ...).
DEFAULT_RIG = "cmu_mb"
#: The default anny topology (anny's own full mesh, 13,718 vertices).
DEFAULT_TOPOLOGY = "full"
#: anny's default phenotype parameters, in the order of the ``shape`` tensor (each in [0, 1], default 0.5).
ANNY_SHAPE_NAMES: tuple[str, ...] = ("gender", "age", "muscle", "weight", "height", "proportions")


#: Bones of the anny rigs p2m knows (measured on anny 0.6.2, see shared/reference/bodymodel.md): a body_param
#: ``pose`` holds 3 axis-angle numbers per bone, ``shape`` one number per name of :data:`ANNY_SHAPE_NAMES`.
ANNY_RIG_BONES: dict[str, int] = {
    "cmu_mb": 31, "anny": 104, "anny-notoes": 76, "anny-notoes-nohands": 38, "mixamo": 52, "game_engine": 53,
}  # fmt: skip
#: SMPL's body_param sizes: 24 joints x 3 axis-angle (the first is the global orientation), 10 betas, translation.
SMPL_PARAM_SIZES: dict[str, int] = {"pose": 72, "shape": 10, "trans": 3}


def param_sizes(model: str, rig: str | None = None) -> dict[str, tuple[int, ...]] | None:
    """The lengths a body_param record's ``pose``, ``shape`` and ``trans`` may have, without building the model.

    Args:
        model: the record's ``model`` (``"anny"`` or ``"smpl"``, any case).
        rig: the record's ``rig`` (anny only). A record without one fits whichever rig the trainer is configured
            with, so every known rig's pose length is allowed.

    Returns:
        ``{"pose": lengths, "shape": lengths, "trans": (3,)}``, or None when p2m cannot tell (another model, or an
        anny rig not in :data:`ANNY_RIG_BONES`).
    """
    name = str(model).lower()
    if name == "smpl":
        return {k: (n,) for k, n in SMPL_PARAM_SIZES.items()}
    if name != "anny" or (rig is not None and rig not in ANNY_RIG_BONES):
        return None
    bones = sorted(set(ANNY_RIG_BONES.values())) if rig is None else [ANNY_RIG_BONES[rig]]
    return {"pose": tuple(3 * b for b in bones), "shape": (len(ANNY_SHAPE_NAMES),), "trans": (3,)}


class Topology(NamedTuple):
    """One anny mesh resolution.

    Attributes:
        name: p2m's name (what ``body.topology`` and body_param.json records carry).
        anny_name: the ``topology=`` argument of ``anny.Anny``.
        num_vertices: V.
        num_faces: F (triangles).
    """

    name: str
    anny_name: str
    num_vertices: int
    num_faces: int


#: The anny topologies p2m uses, finest first (measured on anny 0.6.2).
TOPOLOGIES: dict[str, Topology] = {
    t.name: t
    for t in (
        Topology("full", "anny", 13718, 27420),
        Topology("notoes", "notoes", 12272, 24540),
        Topology("notoes_collapse10pc", "notoes_collapse10pc", 1229, 2454),
        Topology("notoes_collapse5pc", "notoes_collapse5pc", 615, 1226),
        Topology("notoes_collapse3pc", "notoes_collapse3pc", 369, 734),
    )
}
#: Other accepted spellings: anny's name of the full mesh and the vertex counts.
TOPOLOGY_ALIASES: dict[str, str] = {
    "anny": "full",
    "13718": "full",
    "12272": "notoes",
    "1229": "notoes_collapse10pc",
    "615": "notoes_collapse5pc",
    "369": "notoes_collapse3pc",
}


class UnknownNameError(BodyModelError, ValueError):
    """An unknown body model, topology or skinning name; the message lists the valid ones.

    A ValueError for callers, and a P2MError so that the CLI reports it without a traceback.
    """


def resolve_topology(name: str | int) -> Topology:
    """The :class:`Topology` for a p2m name, an alias (``"anny"``, ``"1229"``, ...) or a vertex count.

    Raises:
        UnknownNameError: (a ValueError) naming the value and the valid names.
    """
    key = str(name)
    key = TOPOLOGY_ALIASES.get(key, key)
    if key not in TOPOLOGIES:
        valid = ", ".join([*TOPOLOGIES, *TOPOLOGY_ALIASES])
        raise UnknownNameError(f"unknown anny topology {name!r}; expected one of: {valid}")
    return TOPOLOGIES[key]


@dataclasses.dataclass
class BodyOutput:
    """The result of a body model forward pass (all tensors on the input's device, float32).

    Attributes:
        vertices: (B, V, 3) metres, in the body model's frame (anny: +X subject's left, -Y forward, +Z up).
        joints: (B, 17, 3) metres, H36M-17 in Pose2Mesh order (``p2m.joints.H36M_JOINTS``), regressed
            from ``vertices`` by ``body.h36m_regressor``.
        keypoints: (B, 17, 3) metres, COCO-17 (``p2m.joints.COCO_JOINTS``), regressed by
            ``body.coco_regressor``; None for an SMPL model without a COCO regressor file.
        bone_heads: (B, J, 3) metres, the posed heads of the rig's bones (``body.bone_names`` order), or None.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    keypoints: torch.Tensor | None = None
    bone_heads: torch.Tensor | None = None

    def __getitem__(self, key: str) -> torch.Tensor | None:
        return getattr(self, key)


def drop_from_state_dict(module: torch.nn.Module) -> None:
    """Make every buffer of ``module`` (and its children) non-persistent.

    A body model is rebuilt from its files or cache; it never belongs in a training checkpoint, so a network that
    holds one as a submodule keeps a state_dict free of its (up to 50 MB of) arrays.
    """
    for sub in module.modules():
        sub._non_persistent_buffers_set.update(sub._buffers)


def regress_joints(vertices: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """Joints as fixed linear combinations of mesh vertices.

    Args:
        vertices: (B, V, 3) or (V, 3), any unit.
        regressor: (K, V); rows summing to 1 make the result follow translations of the mesh.

    Returns:
        (B, K, 3) (or (K, 3) for unbatched vertices), same unit, dtype and device as ``vertices``.
    """
    if vertices.shape[-2] != regressor.shape[-1]:
        raise ValueError(
            f"regress_joints: vertices have {vertices.shape[-2]} vertices, the regressor expects "
            f"{regressor.shape[-1]} (shape {tuple(regressor.shape)})"
        )
    regressor = regressor.to(dtype=vertices.dtype, device=vertices.device)
    if vertices.dim() != 3:
        return regressor @ vertices
    # One (B*C, V) x (V, K) GEMM: about 4x faster on CPU than the broadcast (K, V) @ (B, V, C) batched product.
    batch, num_vertices, channels = vertices.shape
    flat = vertices.transpose(1, 2).reshape(batch * channels, num_vertices) @ regressor.T
    return flat.reshape(batch, channels, -1).transpose(1, 2).contiguous()
