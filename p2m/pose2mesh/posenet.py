"""PoseNet: the 2D -> 3D lifting MLP of Pose2Mesh (Martinez et al.'s simple baseline with residual blocks).

Decisions on the original (``lib/models/posenet.py``): the unused ``batch_norm1`` is dropped (it never ran);
PyTorch's default initialisation is used (the original's Kaiming ``weight_init`` was never applied either); the
output stays in millimetres, root-relative, as the original trained it (L1 in mm, weight 1e-3).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from p2m.pose2mesh.layers import make_activation

logger = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    """Pre-activation block: ``x + Linear(Drop(Act(BN(Linear(Drop(Act(BN(x))))))))``."""

    def __init__(self, width: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(width),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width) -> (B, width)."""
        return x + self.body(x)


class PoseNet(nn.Module):
    """Lift normalised 2D joints to root-relative 3D joints.

    ``Linear(2J, hidden)`` (no activation after it, as in the original) -> ``num_blocks`` :class:`ResidualBlock`
    -> ``Linear(hidden, 3J)``. The original: hidden 4096, 2 blocks, dropout 0.5, ReLU (about 67.5 M parameters).

    Args:
        num_joints: J.
        hidden: width of the residual stream.
        num_blocks: number of residual blocks.
        dropout: dropout probability inside the blocks.
        activation: activation name (see :func:`p2m.pose2mesh.layers.make_activation`).
    """

    def __init__(
        self,
        num_joints: int,
        hidden: int = 4096,
        num_blocks: int = 2,
        dropout: float = 0.5,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.inp = nn.Linear(2 * num_joints, hidden)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, dropout, activation) for _ in range(num_blocks)))
        self.out = nn.Linear(hidden, 3 * num_joints)

    def forward(self, pose2d: torch.Tensor) -> torch.Tensor:
        """Lift.

        Args:
            pose2d: (B, J, 2) normalised 2D joints (see :func:`p2m.pose2mesh.transforms.normalize_pose2d`).

        Returns:
            (B, J, 3) root-relative 3D joints, millimetres, camera axes.
        """
        b = pose2d.shape[0]
        return self.out(self.blocks(self.inp(pose2d.reshape(b, -1)))).reshape(b, self.num_joints, 3)
