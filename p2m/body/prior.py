"""Pose and shape priors of anny bodies: a Gaussian over real (or sampled) poses plus joint ranges, and a shape
Gaussian. Body fitting (`p2m annotate fit`) and the hands-and-feet refinement of `p2m infer` both use them.

The pose prior scores the 30 non-root bones of anny's ``cmu_mb`` rig (axis-angle, "local-ref"):

- a Gaussian ``0.5 * (x - mu)^T Sigma^-1 (x - mu)`` over the dimensions that move in the pose source, fitted to
  the shipped CMU pose table (``p2m/data/cmu_poses_train.npz``, subjects 1, 5-9) when it is installed, else to
  poses drawn from the joint-range sampler (:mod:`p2m.body.sampler`); dimensions that never move there (finger and hip-joint
  bones) are held at the source's mean and not optimised;
- a joint-range penalty from :data:`p2m.body.sampler.DEFAULT_RANGES`: the squared excess of the rotation's
  component along each listed axis beyond its range, and the component off the listed axes (so knees stay
  hinges that do not bend backwards). Components of a rotation vector only approximate the composed ranges of
  the sampler; the penalty is meant for the ends of the ranges, where a fit goes wrong.

The shape prior pulls the 6 phenotype values towards an average adult (0.5, age 5/6) with a Gaussian.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from p2m.body.poses import PoseSource, table_path
from p2m.body.sampler import DEFAULT_RANGES, _right_of

logger = logging.getLogger(__name__)

#: Poses drawn from the joint-range sampler when no pose table is installed.
SAMPLER_DRAWS = 20000
#: A pose dimension whose standard deviation in the source is below this (rad) is held fixed.
MIN_STD = 0.02
#: Added to the covariance's diagonal (rad^2) so that it is well conditioned.
COV_EPS = 1e-3
#: Mean and standard deviation of the shape prior (gender, age, muscle, weight, height, proportions).
SHAPE_MEAN = (0.5, 5 / 6, 0.5, 0.5, 0.5, 0.5)
SHAPE_STD = (0.35, 0.12, 0.3, 0.3, 0.25, 0.3)
#: Poses of the source kept (evenly spaced) for a fitter's initial guesses.
KEEP_SAMPLES = 2000
#: Margin (rad) outside a joint range before the range penalty starts.
RANGE_MARGIN = 0.05


@dataclass(frozen=True)
class PoseStats:
    """The Gaussian of a pose source over the body bones (numpy, float64).

    Attributes:
        name: where the poses came from.
        mean: (J-1, 3) mean axis-angle of the non-root bones.
        cov: (D, D) covariance of the free dimensions.
        free: (J-1, 3) bool, the dimensions that move in the source.
        count: number of poses used.
        samples: (M, J, 3) up to ``KEEP_SAMPLES`` of the source's poses (root zeroed), for initial guesses.
    """

    name: str
    mean: np.ndarray
    cov: np.ndarray
    free: np.ndarray
    count: int
    samples: np.ndarray

    @property
    def chol_t(self) -> np.ndarray:
        """(D, D) ``L^T`` of the precision ``inv(cov) = L L^T``, so that the Mahalanobis term is ``|(x - mu) @ L|^2``
        (``x @ chol_t.T``)."""
        return np.linalg.cholesky(np.linalg.inv(self.cov)).T


def pose_stats_from_poses(poses: np.ndarray, name: str) -> PoseStats:
    """Fit the Gaussian of :class:`PoseStats` to poses (N, J, 3) (the root, bone 0, is ignored)."""
    body = np.asarray(poses, dtype=np.float64)[:, 1:]
    n = body.shape[0]
    if n < 10:
        raise ValueError(f"pose source {name!r}: {n} poses, need at least 10 to fit a prior")
    mean = body.mean(axis=0)
    free = body.std(axis=0) > MIN_STD
    x = body.reshape(n, -1)[:, free.reshape(-1)]
    cov = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]) + COV_EPS * np.eye(x.shape[1])
    keep = np.asarray(poses, dtype=np.float64)[np.linspace(0, n - 1, min(n, KEEP_SAMPLES)).astype(int)].copy()
    keep[:, 0] = 0.0
    return PoseStats(name=name, mean=mean, cov=cov, free=free, count=n, samples=keep)


@functools.lru_cache(maxsize=4)
def load_pose_stats(source: str = "auto", seed: int = 0) -> PoseStats:
    """The pose Gaussian of a source.

    Args:
        source: ``"auto"`` (the shipped CMU train table if installed, else the joint-range sampler), or any
            ``--poses`` spec of :meth:`p2m.body.poses.PoseSource.from_spec` (``"cmu-train"``, ``"sampler"``, a
            pose table .npz, a BVH folder...). Fit people with the train table and score them on ``cmu-eval``.
        seed: seed of the sampler draws.

    Raises:
        P2MError: (``PoseDataError`` / ``ConfigError``) the source cannot be read.
    """
    if source == "auto":
        source = "cmu-train" if table_path("train").is_file() else "sampler"
    bank = PoseSource.from_spec(source)
    if bank.poses is None:  # the sampler
        poses = bank.sample(SAMPLER_DRAWS, np.random.default_rng(seed), yaw="zero")
        return pose_stats_from_poses(poses, "joint-range sampler")
    return pose_stats_from_poses(bank.poses, bank.name)


def _range_terms(
    bone_names: tuple[str, ...] | list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Axis rows, their bone index, low and high bounds, plus off-axis projectors, for the range penalty.

    Returns:
        (axes (K, 3), bone (K,) index into bones 1.., bounds (K, 2), off (J-1, 3, 3) projectors onto the
        complement of each bone's listed axes (zero for bones without ranges or with a full set of axes)).
    """
    names = list(bone_names)
    axes, bones, bounds = [], [], []
    off = np.zeros((len(names) - 1, 3, 3))
    for bone, dofs in DEFAULT_RANGES.items():
        if bone == names[0] or bone not in names:
            continue
        sides = [(bone, np.ones(3))]
        right = _right_of(bone)
        if right is not None and right in names:
            sides.append((right, np.array([1.0, -1.0, -1.0])))
        for name, mirror in sides:
            k = names.index(name) - 1
            listed = np.array([np.asarray(a) * mirror for a, _, _ in dofs])
            for (_, lo, hi), a in zip(dofs, listed):
                axes.append(a)
                bones.append(k)
                bounds.append((lo, hi))
            u, s, _ = np.linalg.svd(listed.T)
            basis = u[:, : int((s > 1e-6).sum())]
            off[k] = np.eye(3) - basis @ basis.T
    return np.array(axes), np.array(bones, dtype=np.int64), np.array(bounds), off


class PosePrior(nn.Module):
    """Energy of body poses: Gaussian (Mahalanobis / 2) plus ``range_weight`` times the joint-range penalty.

    Args:
        stats: the Gaussian (see :func:`load_pose_stats`).
        bone_names: the rig's bone names (root first), to place the joint ranges.
        range_weight: weight of the range penalty relative to the Gaussian.
    """

    def __init__(
        self, stats: PoseStats, bone_names: tuple[str, ...] | list[str], range_weight: float = 100.0
    ) -> None:
        super().__init__()
        if stats.mean.shape != (len(bone_names) - 1, 3):
            raise ValueError(
                f"pose prior {stats.name!r}: mean {stats.mean.shape}, expected ({len(bone_names) - 1}, 3)"
            )
        self.name = stats.name
        self.range_weight = float(range_weight)
        axes, bone, bounds, off = _range_terms(bone_names)
        for key, value in (
            ("mean", stats.mean),
            ("free", stats.free),
            ("chol_t", stats.chol_t),
            ("axes", axes),
            ("bounds", bounds),
            ("off", off),
        ):
            dtype = torch.bool if value.dtype == bool else torch.float32
            self.register_buffer(key, torch.as_tensor(value, dtype=dtype), persistent=False)
        self.register_buffer("axis_bone", torch.as_tensor(bone), persistent=False)
        self.samples = stats.samples  # numpy (M, J, 3), for initial guesses

    @property
    def num_free(self) -> int:
        """Number of optimised pose dimensions."""
        return int(self.free.sum())

    def compose(self, free_values: torch.Tensor) -> torch.Tensor:
        """Body poses (B, J-1, 3) from the free dimensions (B, D); fixed ones take the source's mean."""
        out = self.mean.expand(free_values.shape[0], -1, -1).clone()
        out[:, self.free] = free_values
        return out

    def initial(self, batch: int) -> torch.Tensor:
        """(B, D) free values of the mean pose."""
        return self.mean[self.free].expand(batch, -1).clone()

    def gaussian(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B,) half squared Mahalanobis distance of body poses (B, J-1, 3)."""
        x = body_pose[:, self.free] - self.mean[self.free]
        return 0.5 * ((x @ self.chol_t.T) ** 2).sum(-1)

    def ranges(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B,) joint-range penalty (rad^2) of body poses (B, J-1, 3)."""
        comp = (body_pose[:, self.axis_bone] * self.axes).sum(-1)  # (B, K)
        lo, hi = self.bounds[:, 0] - RANGE_MARGIN, self.bounds[:, 1] + RANGE_MARGIN
        excess = torch.relu(lo - comp) + torch.relu(comp - hi)
        off = torch.einsum("kij,bkj->bki", self.off, body_pose)
        return (excess**2).sum(-1) + (off**2).sum((-1, -2))

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B,) prior energy of body poses (B, J-1, 3)."""
        return self.gaussian(body_pose) + self.range_weight * self.ranges(body_pose)


class ShapePrior(nn.Module):
    """Energy of anny phenotypes (B, 6): ``0.5 * sum(((s - mean) / std)^2)``."""

    def __init__(self, mean: tuple[float, ...] = SHAPE_MEAN, std: tuple[float, ...] = SHAPE_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        """(B,) energy."""
        return 0.5 * (((shape - self.mean) / self.std) ** 2).sum(-1)
