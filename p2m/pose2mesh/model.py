"""Pose2Mesh = PoseNet (2D -> 3D joints) + MeshNet (joints -> mesh), built from a config; checkpoints rebuild it.

A checkpoint of the model is ``{"config": <Config or ModelConfig as a dict>, "state_dict": model.state_dict()}``:
:func:`build_model` rebuilds the module from the config (the mesh hierarchy comes from the on-disk cache, or is
rebuilt deterministically), and the ``graph_digest`` buffer in the state dict makes loading fail loudly when the
rebuilt hierarchy is not the one the weights were trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from p2m import joints as J
from p2m.errors import CheckpointError, ConfigError
from p2m.pose2mesh.config import Config, ModelConfig, from_dict
from p2m.pose2mesh.graph import MeshHierarchy, joint_adjacency, load_or_build_hierarchy
from p2m.pose2mesh.meshnet import MeshNet
from p2m.pose2mesh.posenet import PoseNet

logger = logging.getLogger(__name__)

#: Millimetres per MeshNet output unit (MeshNet predicts metres, like the original).
MESH_UNIT_MM = 1000.0


class JointSet(NamedTuple):
    """An input joint set: names, root index, skeleton and flip pairs (from :mod:`p2m.joints`)."""

    names: tuple[str, ...]
    root: int
    skeleton: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]


JOINT_SETS: dict[str, JointSet] = {
    "h36m": JointSet(J.H36M_JOINTS, J.H36M_ROOT, J.H36M_SKELETON, J.H36M_FLIP_PAIRS),
    "coco19": JointSet(J.COCO19_JOINTS, J.COCO19_ROOT, J.COCO19_SKELETON, J.COCO19_FLIP_PAIRS),
}


def joint_set(name: str) -> JointSet:
    """The :class:`JointSet` called ``name`` ("h36m" or "coco19")."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise ConfigError(f"joint_set {name!r} is not one of {sorted(JOINT_SETS)}") from None


class Pose2MeshOutput(NamedTuple):
    """What :class:`Pose2Mesh` predicts; every field root-relative, camera axes, millimetres.

    Attributes:
        joints_lifted: (B, J, 3) PoseNet's 3D joints in the input joint set.
        mesh: (B, V, 3) MeshNet's vertices in the body model's vertex order; None for ``stage: posenet``.
        joints_from_mesh: (B, 17, 3) H36M joints regressed from ``mesh`` by the body model's H36M regressor;
            None for ``stage: posenet``.
    """

    joints_lifted: torch.Tensor
    mesh: torch.Tensor | None
    joints_from_mesh: torch.Tensor | None


class Pose2Mesh(nn.Module):
    """PoseNet + MeshNet (the original's ``FlatPose2Mesh``) with named outputs.

    MeshNet reads ``cat(pose2d, joints_lifted / 1000)`` per joint (5 channels), the lifted joints detached when
    ``cfg.meshnet.detach_lifted`` (the original: MeshNet's losses do not reach PoseNet).

    Args:
        cfg: the model config.
        hierarchy: the mesh levels (None only for ``stage: posenet``).
        joint_regressor: (17, V) H36M regressor of the body model, rows summing to 1 (None for ``posenet``).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        hierarchy: MeshHierarchy | None = None,
        joint_regressor: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config = cfg
        js = joint_set(cfg.joint_set)
        self.num_joints = len(js.names)
        pc = cfg.posenet
        self.posenet = PoseNet(self.num_joints, pc.hidden, pc.num_blocks, pc.dropout, pc.activation)
        self.meshnet: MeshNet | None = None
        if cfg.stage == "pose2mesh":
            if hierarchy is None or joint_regressor is None:
                raise ValueError("stage 'pose2mesh' needs a mesh hierarchy and a joint regressor")
            adj = joint_adjacency(self.num_joints, js.skeleton, js.flip_pairs)
            self.meshnet = MeshNet(cfg.meshnet, hierarchy, adj, in_channels=5)
            reg = torch.as_tensor(np.asarray(joint_regressor), dtype=torch.float32)
            if reg.shape != (J.H36M_NUM_JOINTS, hierarchy.num_vertices[0]):
                raise ValueError(
                    f"joint_regressor: shape {tuple(reg.shape)}, expected (17, {hierarchy.num_vertices[0]})"
                )
            self.register_buffer("joint_regressor", reg, persistent=False)
            digest = torch.frombuffer(bytearray(bytes.fromhex(hierarchy.digest)), dtype=torch.uint8)
            self.register_buffer("graph_digest", digest.clone())
            self.register_load_state_dict_pre_hook(_check_digest)
            # the graph buffers are identical on every rank (built from the config): DDP need not broadcast them
            # at every forward pass.
            self._ddp_params_and_buffers_to_ignore = [f"meshnet.{n}" for n in self.meshnet.graph_buffer_names]

    @property
    def num_vertices(self) -> int | None:
        """V of the predicted mesh (None without MeshNet)."""
        return None if self.meshnet is None else self.meshnet.num_vertices

    def forward(self, pose2d: torch.Tensor) -> Pose2MeshOutput:
        """Predict 3D joints and the mesh from normalised 2D joints.

        Args:
            pose2d: (B, J, 2) normalised 2D joints (:func:`p2m.pose2mesh.transforms.normalize_pose2d`).

        Returns:
            :class:`Pose2MeshOutput` (millimetres).
        """
        lifted = self.posenet(pose2d)
        if self.meshnet is None:
            return Pose2MeshOutput(lifted, None, None)
        lifted_in = lifted.detach() if self.config.meshnet.detach_lifted else lifted
        feats = torch.cat([pose2d, lifted_in / MESH_UNIT_MM], dim=-1)
        mesh = self.meshnet(feats) * MESH_UNIT_MM
        joints = torch.einsum("jv,bvc->bjc", self.joint_regressor.to(mesh.dtype), mesh)
        return Pose2MeshOutput(lifted, mesh, joints)


def _check_digest(
    module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any
) -> None:
    key = prefix + "graph_digest"
    if key not in state_dict:
        return
    theirs = bytes(state_dict[key].to(torch.uint8).cpu().tolist()).hex()
    ours = bytes(module.graph_digest.cpu().tolist()).hex()
    if theirs != ours:
        raise CheckpointError(
            f"state dict was trained on another mesh hierarchy (graph digest {theirs[:12]}..., this model's is "
            f"{ours[:12]}...): check model.body.topology and model.meshnet.level_channels in its config"
        )


def _model_config(cfg: Config | ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(cfg, ModelConfig):
        return cfg
    if isinstance(cfg, Config):
        return cfg.model
    if isinstance(cfg, Mapping):
        if "model" in cfg and isinstance(cfg["model"], Mapping):
            return from_dict(ModelConfig, cfg["model"], "model")
        return from_dict(ModelConfig, cfg)
    raise TypeError(f"expected a Config, ModelConfig or mapping, got {type(cfg).__name__}")


def build_model(
    cfg: Config | ModelConfig | Mapping[str, Any], body: Any = None, cache_dir: Path | None = None
) -> Pose2Mesh:
    """Build a freshly initialised Pose2Mesh from its config.

    Args:
        cfg: a :class:`Config`, its ``model`` section, or either as a plain dict (e.g. from a checkpoint).
        body: a body model from :func:`p2m.body.create` with the configured topology (created when None;
            unused for ``stage: posenet``).
        cache_dir: where the mesh hierarchy is cached (default ``p2m.paths.cache_dir()``).

    Returns:
        The model, on the CPU, in training mode.
    """
    mc = _model_config(cfg)
    if mc.stage == "posenet":
        return Pose2Mesh(mc)
    if body is None:
        from p2m.body import create

        body = create(mc.body.model, topology=mc.body.topology, rig=mc.body.rig)
    if mc.body.model == "anny" and getattr(body, "topology", None) is not None:
        from p2m.body import resolve_topology

        if resolve_topology(mc.body.topology).name != resolve_topology(body.topology).name:
            raise ConfigError(
                f"model.body.topology is {mc.body.topology!r} but the body model given has {body.topology!r}"
            )
    faces = body.faces.detach().cpu().numpy()
    levels = mc.meshnet.num_levels - 1
    if body.faces.shape[0] == 0 or int(body.num_vertices) != int(body.h36m_regressor.shape[1]):
        raise ConfigError(
            f"body model {mc.body.model}/{mc.body.topology}: faces and H36M regressor do not match"
        )
    hierarchy = load_or_build_hierarchy(faces, int(body.num_vertices), levels, cache_dir)
    model = Pose2Mesh(mc, hierarchy, body.h36m_regressor.detach().cpu())
    logger.info(
        "Pose2Mesh: %s vertices per level, %.1f M parameters",
        " <- ".join(map(str, hierarchy.num_vertices)),
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def load_model(checkpoint: Mapping[str, Any], body: Any = None, cache_dir: Path | None = None) -> Pose2Mesh:
    """Rebuild a model from ``{"config": ..., "state_dict": ...}`` and load its weights (strict), on the CPU.

    Raises:
        CheckpointError: the mapping lacks ``config`` or ``state_dict``, or the weights do not fit the model.
    """
    for key in ("config", "state_dict"):
        if key not in checkpoint:
            raise CheckpointError(f"checkpoint has no {key!r} entry (keys: {sorted(checkpoint)})")
    model = build_model(checkpoint["config"], body=body, cache_dir=cache_dir)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit the model built from its config: {exc}"
        ) from exc
    return model
