"""MeshNet: Chebyshev graph convolutions from the joint graph to the body mesh, coarse to fine (Pose2Mesh §2).

Decisions on the original's quirks (see also :mod:`p2m.pose2mesh.graph`):

* **Laplacian rescaling.** Default ``laplacian_scaling="chebnet"`` (2 L / lmax - I, spectrum [-1, 1]); the
  original's ``L / (2 lmax) - I`` (spectrum [-1, -0.5]) is available as ``"pose2mesh"`` for comparisons.
  Compatibility with the official weights is moot (they are for SMPL's mesh), so the canonical form wins.
* **Channel-interpolating residuals.** Kept as the default (``residual="interpolate"``): where a block changes
  the width (64 -> 256 on the coarsest level, 256 -> 128 later) the skip path linearly resamples the channel axis
  (``F.interpolate(..., mode="linear")``). Channel order carries no meaning, so this is a fixed parameter-free
  mixing rather than a principled projection, but it is the original's inductive bias and costs nothing;
  ``"linear"`` (learned 1x1 projection) and ``"none"`` are there to compare. Equal widths: identity skip.
* **Fake nodes.** None (see graph.py), so BatchNorm statistics cover real vertices only. BatchNorm still pools
  batch x vertices per channel, as in the original (``norm="none"`` turns it off).
* **Output.** Metres, root-relative, in the body model's own vertex order (no permutation to undo).

Layout: features travel vertex-major, (V, B, F), so every sparse product is one ``(V, V) @ (V, B*F)`` without
transposes; the public ``forward`` takes (B, J, C) and returns (B, V, 3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from p2m.pose2mesh.config import MeshNetConfig
from p2m.pose2mesh.graph import MeshHierarchy, largest_eigenvalue, normalized_laplacian, rescale_laplacian
from p2m.pose2mesh.layers import GraphConvLayer, graph_mm

logger = logging.getLogger(__name__)


class _Residual(nn.Module):
    """Skip path of a block: identity, channel interpolation (the original) or a learned projection."""

    def __init__(self, in_features: int, out_features: int, mode: str) -> None:
        super().__init__()
        self.mode, self.out_features = mode, out_features
        self.proj = (
            nn.Linear(in_features, out_features, bias=False)
            if mode == "linear" and in_features != out_features
            else None
        )
        self.same = in_features == out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.mode == "none":
            return None
        if self.same:
            return x
        if self.proj is not None:
            return self.proj(x)
        return F.interpolate(x, size=self.out_features, mode="linear", align_corners=False)


class MeshBlock(nn.Module):
    """The convs of one mesh level plus the residual skip: ``y = convs(x) + skip(x)`` (no activation after)."""

    def __init__(
        self, in_features: int, widths: Sequence[int], k: int, norm: bool, activation: str, residual: str
    ) -> None:
        super().__init__()
        chans = [in_features, *widths]
        self.convs = nn.ModuleList(
            GraphConvLayer(a, b, k, norm, activation) for a, b in zip(chans[:-1], chans[1:])
        )
        self.skip = _Residual(in_features, chans[-1], residual)

    def forward(self, x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
        """(V, B, F_in) -> (V, B, widths[-1])."""
        y = x
        for conv in self.convs:
            y = conv(y, laplacian)
        skip = self.skip(x)
        return y if skip is None else y + skip


class MeshNet(nn.Module):
    """Graph CNN from per-joint features to mesh vertex coordinates.

    Layers: joint-graph convs (``joint_channels``) -> FC onto the coarsest mesh level (J * C_j -> n_coarse * C_j)
    -> one :class:`MeshBlock` per mesh level, coarse to fine, each but the finest followed by up-sampling ->
    head convs on the finest level (``head_channels``) -> a last conv to 3 channels without norm or activation.

    The graph operators are sparse CSR matrices registered as **non-persistent** buffers, stored as their
    ``crow``/``col``/``val`` arrays (a CSR tensor itself would break ``copy.deepcopy`` and DDP's buffer
    broadcast); :meth:`graph_op` assembles the CSR view per call. They move with ``.to()``, are rebuilt
    deterministically from the config (cached on disk) and stay out of the ``state_dict``.
    ``graph_buffer_names`` lists them (model.py tells DDP not to broadcast them).

    Args:
        cfg: widths, depth, K, activation, norm, residual and Laplacian scaling.
        hierarchy: mesh levels, finest first; must have at least ``cfg.num_levels`` levels.
        joint_adjacency: (J, J) joint graph (skeleton + flip pairs + self-loops).
        in_channels: per-joint input features (5: normalised 2D + lifted 3D in metres).
        dense_graph: store the graph operators as dense matrices (the benchmark's baseline; O(V^2) memory).
    """

    def __init__(
        self,
        cfg: MeshNetConfig,
        hierarchy: MeshHierarchy,
        joint_adjacency: sp.spmatrix | np.ndarray,
        in_channels: int = 5,
        dense_graph: bool = False,
    ) -> None:
        super().__init__()
        if hierarchy.num_levels < cfg.num_levels:
            raise ValueError(f"hierarchy has {hierarchy.num_levels} levels, MeshNet needs {cfg.num_levels}")
        self.num_joints = int(joint_adjacency.shape[0])
        self.num_levels = cfg.num_levels
        self.num_vertices = hierarchy.num_vertices[0]
        self.level_sizes = tuple(hierarchy.num_vertices[: cfg.num_levels])
        norm = cfg.norm == "batch"
        k, act = cfg.cheb_k, cfg.activation

        # graph operators (level 0 = finest)
        self.dense_graph = dense_graph
        self.graph_buffer_names: list[str] = []
        self._graph_shapes: dict[str, tuple[int, int]] = {}
        jl = normalized_laplacian(sp.csr_matrix(joint_adjacency), keep_self_loops=True)
        self._graph_buffer("lap_joint", rescale_laplacian(jl, largest_eigenvalue(jl), cfg.laplacian_scaling))
        for lv in range(cfg.num_levels):
            self._graph_buffer(f"lap_{lv}", hierarchy.laplacian(lv, cfg.laplacian_scaling))
            if lv + 1 < cfg.num_levels:
                self._graph_buffer(f"up_{lv}", hierarchy.upsample(lv))

        # layers
        jc = [in_channels, *cfg.joint_channels]
        self.joint_convs = nn.ModuleList(GraphConvLayer(a, b, k, norm, act) for a, b in zip(jc[:-1], jc[1:]))
        self.coarse_channels = jc[-1]
        n_coarse = self.level_sizes[-1]
        self.fc = nn.Linear(self.num_joints * jc[-1], n_coarse * jc[-1])
        self.blocks = nn.ModuleList()
        width = jc[-1]
        for widths in cfg.level_channels:  # coarsest first
            self.blocks.append(MeshBlock(width, widths, k, norm, act, cfg.residual))
            width = widths[-1]
        hc = [width, *cfg.head_channels]
        self.head = nn.ModuleList(GraphConvLayer(a, b, k, norm, act) for a, b in zip(hc[:-1], hc[1:]))
        self.out = GraphConvLayer(hc[-1], 3, k, norm=False, activation=None)

    def _graph_buffer(self, name: str, matrix: sp.spmatrix) -> None:
        m = sp.csr_matrix(matrix, dtype=np.float64)
        m.sort_indices()
        if self.dense_graph:
            parts = {"dense": torch.from_numpy(m.toarray()).float()}
        else:
            parts = {
                "crow": torch.from_numpy(m.indptr.astype(np.int64)),
                "col": torch.from_numpy(m.indices.astype(np.int64)),
                "val": torch.from_numpy(m.data).float(),
            }
        for part, tensor in parts.items():
            self.register_buffer(f"{name}_{part}", tensor, persistent=False)
            self.graph_buffer_names.append(f"{name}_{part}")
        self._graph_shapes[name] = m.shape

    def graph_op(self, name: str) -> torch.Tensor:
        """The graph operator ``name`` (``lap_joint``, ``lap_{level}``, ``up_{level}``) on the buffers' device.

        Returns a sparse CSR view of the ``{name}_crow/_col/_val`` buffers (assembling it copies nothing), or the
        dense matrix when built with ``dense_graph=True``.
        """
        if self.dense_graph:
            return getattr(self, f"{name}_dense")
        return torch.sparse_csr_tensor(
            getattr(self, f"{name}_crow"),
            getattr(self, f"{name}_col"),
            getattr(self, f"{name}_val"),
            size=self._graph_shapes[name],
            check_invariants=False,
        )

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        """Predict the mesh.

        Args:
            joints: (B, J, C_in) per-joint features.

        Returns:
            (B, V, 3) vertices, metres, root-relative, in the body model's vertex order.
        """
        b = joints.shape[0]
        h = joints.transpose(0, 1)  # (J, B, C)
        lap = self.graph_op("lap_joint")
        for conv in self.joint_convs:
            h = conv(h, lap)
        h = self.fc(h.transpose(0, 1).reshape(b, -1))
        h = h.reshape(b, self.level_sizes[-1], self.coarse_channels).transpose(0, 1)
        for i, block in enumerate(self.blocks):
            lv = self.num_levels - 1 - i
            h = block(h, self.graph_op(f"lap_{lv}"))
            if lv > 0:
                h = graph_mm(self.graph_op(f"up_{lv - 1}"), h).to(h.dtype)
        lap = self.graph_op("lap_0")
        for conv in self.head:
            h = conv(h, lap)
        h = self.out(h, lap)
        return h.transpose(0, 1)
