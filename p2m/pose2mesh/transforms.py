"""PoseNet input: the original's 2D normalisation, its synthetic 2D error models (seeded) and flip augmentation.

Pipeline of one training sample (as the original's ``__getitem__``; every function is vectorised over leading
batch axes, numpy, float64 inside):

1. tight bbox of the (visible) 2D joints, expanded to the crop's aspect (288 / 384) about its centre;
2. affine map into the 288 x 384 crop (the crop only sets the scale of the noise below);
3. train only: synthetic 2D errors in crop pixels, ``noise.kind``:
   * ``"gaussian"`` (the original's Human3.6M model): each joint moves by an isotropic Gaussian offset with
     probability ``gaussian_prob``. The original drew per-joint means/stds from AbsPoseLifter's error statistics,
     which we do not have; ours are ``std_j = gaussian_scale * sigma_j * crop_height`` with ``sigma_j`` the OKS
     sigma of the joint (:data:`H36M_SIGMAS`), so hard joints (hips, wrists) move more than the nose.
   * ``"posefix"`` (PoseFix-style, the original's COCO model): each joint is independently *jittered*
     (keypoint similarity ks in [0.5, 0.85]), *missed* (ks in [0.1, 0.5]), *inverted* (placed at its left/right
     partner) or kept *good* (ks in [0.85, 1]), with probabilities per joint group (head / torso / middle limb /
     limb end, :class:`p2m.pose2mesh.config.NoiseConfig`), raised ``few_valid_scale`` times when few joints are
     valid. The distance for a ks is ``2 sigma_j * s * sqrt(-2 ln ks)`` with ``s^2`` the tight joint-bbox area in
     the crop; the direction is uniform. Joints that are means of others (H36M Pelvis, Torso, Neck; COCO-19
     Pelvis, Neck) move by the mean of their parents' offsets (the original left them clean; at inference ours
     come from a COCO detector through exactly those means).
4. train only, with probability ``flip_prob``: mirror in the crop (``x -> W - 1 - x``) and swap left/right;
   the 3D target gets ``X -> -X`` and the same swap. Meshes are not flipped here (that needs a vertex symmetry
   map): keep ``flip_prob: 0`` for stage-2 training, as the original did;
5. divide by the crop size and standardise **each axis separately** over the joints: ``(p - mean) / std``
   (the original; it does not preserve the aspect ratio, a documented quirk that we keep because the lifter is
   trained and used with the same normalisation).

Randomness comes from the ``rng`` passed in; :func:`sample_rng` makes one per (seed, epoch, index) so a sample's
noise does not depend on how data-loader workers split the data.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from p2m import joints as J
from p2m.pose2mesh.config import NoiseConfig, TransformConfig

logger = logging.getLogger(__name__)

#: OKS-style sigmas for the H36M-17 joints: COCO's for the joints COCO has; Pelvis/Torso like the hips, Neck
#: like the shoulders, Head (top of head) like the ears.
H36M_SIGMAS: tuple[float, ...] = (
    0.107, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089, 0.107, 0.079, 0.026, 0.035, 0.079, 0.072, 0.062, 0.079,
    0.072, 0.062,
)  # fmt: skip
#: Joint groups of the PoseFix model: 0 head, 1 torso, 2 middle of a limb, 3 end of a limb.
H36M_GROUPS: tuple[int, ...] = (1, 1, 2, 3, 1, 2, 3, 1, 1, 0, 0, 1, 2, 3, 1, 2, 3)
COCO19_GROUPS: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 1, 1)
#: Joints that are means of other joints: index -> parents.
H36M_DERIVED: dict[int, tuple[int, ...]] = {0: (1, 4), 7: (1, 4, 11, 14), 8: (11, 14)}
COCO19_DERIVED: dict[int, tuple[int, ...]] = {17: (11, 12), 18: (5, 6)}

_GOOD, _JITTER, _MISS, _INVERSION = 0, 1, 2, 3
#: Keypoint-similarity ranges of the PoseFix error kinds (good, jitter, miss).
_KS_RANGES = {_GOOD: (0.85, 1.0), _JITTER: (0.5, 0.85), _MISS: (0.1, 0.5), _INVERSION: (0.85, 1.0)}


class JointSetInfo(NamedTuple):
    """What the transforms need to know about a joint set."""

    sigmas: np.ndarray
    groups: np.ndarray
    flip_perm: np.ndarray
    derived: dict[int, tuple[int, ...]]


def joint_set_info(name: str) -> JointSetInfo:
    """Sigmas, groups, flip permutation and derived joints of "h36m" or "coco19"."""
    if name == "h36m":
        return JointSetInfo(
            np.array(H36M_SIGMAS),
            np.array(H36M_GROUPS),
            J.flip_permutation(J.H36M_FLIP_PAIRS, J.H36M_NUM_JOINTS),
            H36M_DERIVED,
        )
    if name == "coco19":
        return JointSetInfo(
            np.array((*J.COCO_SIGMAS, 0.107, 0.079)),
            np.array(COCO19_GROUPS),
            J.flip_permutation(J.COCO19_FLIP_PAIRS, J.COCO19_NUM_JOINTS),
            COCO19_DERIVED,
        )
    raise ValueError(f"joint set {name!r} is not one of ['h36m', 'coco19']")


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator determined by (seed, keys...), e.g. ``sample_rng(cfg.train.seed, epoch, index)``."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------
def joints_bbox(joints2d: np.ndarray, vis: np.ndarray | None = None) -> np.ndarray:
    """Tight bbox ``[x, y, w, h]`` (..., 4) of (..., J, 2) joints, over visible ones (all when none is)."""
    p = np.asarray(joints2d, dtype=np.float64)[..., :2]
    if vis is None:
        mask = np.ones(p.shape[:-1], dtype=bool)
    else:
        mask = np.asarray(vis) > 0
        mask = np.where(mask.any(axis=-1, keepdims=True), mask, True)
    big = np.where(mask[..., None], p, np.inf)
    small = np.where(mask[..., None], p, -np.inf)
    lo, hi = big.min(axis=-2), small.max(axis=-2)
    return np.concatenate([lo, hi - lo], axis=-1)


def expand_to_aspect(bbox: np.ndarray, aspect: float) -> np.ndarray:
    """Grow a bbox (..., 4) about its centre to ``w / h == aspect`` (no extra padding, like the original)."""
    b = np.asarray(bbox, dtype=np.float64)
    cx, cy = b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2
    w = np.maximum(b[..., 2], 1e-6)
    h = np.maximum(b[..., 3], 1e-6)
    w2 = np.where(w > aspect * h, w, aspect * h)
    h2 = np.where(w > aspect * h, w / aspect, h)
    return np.stack([cx - w2 / 2, cy - h2 / 2, w2, h2], axis=-1)


def to_crop(joints2d: np.ndarray, bbox: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """Map (..., J, 2) pixel joints into a ``crop_size = (W, H)`` crop of ``bbox`` (..., 4)."""
    p = np.asarray(joints2d, dtype=np.float64)[..., :2]
    b = np.asarray(bbox, dtype=np.float64)[..., None, :]
    size = np.array(crop_size, dtype=np.float64)
    return (p - b[..., :2]) / b[..., 2:] * size


def standardize(joints2d: np.ndarray) -> np.ndarray:
    """Per-axis z-score over the joint axis: ``(p - mean_J(p)) / std_J(p)`` for x and y separately."""
    p = np.asarray(joints2d, dtype=np.float64)
    mean = p.mean(axis=-2, keepdims=True)
    std = np.maximum(p.std(axis=-2, keepdims=True), 1e-6)
    return (p - mean) / std


def normalize_pose2d(
    joints2d: np.ndarray, vis: np.ndarray | None = None, crop_size: tuple[int, int] = (288, 384)
) -> np.ndarray:
    """The network input for clean (test-time) 2D joints: bbox -> aspect -> crop -> per-axis standardisation.

    Args:
        joints2d: (..., J, 2) pixel joints (extra channels ignored).
        vis: (..., J) visibility for the bbox (None: all joints).
        crop_size: (W, H) of the crop.

    Returns:
        (..., J, 2) float32.
    """
    crop = _crop(joints2d, vis, crop_size)
    return standardize(crop / np.array(crop_size, dtype=np.float64)).astype(np.float32)


def _crop(joints2d: np.ndarray, vis: np.ndarray | None, crop_size: tuple[int, int]) -> np.ndarray:
    bbox = expand_to_aspect(joints_bbox(joints2d, vis), crop_size[0] / crop_size[1])
    return to_crop(joints2d, bbox, crop_size)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic 2D errors (crop pixels)
# ----------------------------------------------------------------------------------------------------------------
def gaussian_errors(
    crop_joints: np.ndarray, rng: np.random.Generator, std_px: np.ndarray, prob: float
) -> np.ndarray:
    """Add isotropic Gaussian offsets (std ``std_px[j]``) to each joint with probability ``prob``.

    Args:
        crop_joints: (..., J, 2) crop pixels.
        rng: the sample's generator.
        std_px: (J,) standard deviation per joint, crop pixels.
        prob: probability that a joint is perturbed.

    Returns:
        (..., J, 2) noised joints.
    """
    p = np.asarray(crop_joints, dtype=np.float64)
    offset = rng.standard_normal(p.shape) * np.asarray(std_px, dtype=np.float64)[:, None]
    hit = rng.random(p.shape[:-1]) < prob
    return p + offset * hit[..., None]


def posefix_errors(
    crop_joints: np.ndarray,
    rng: np.random.Generator,
    info: JointSetInfo,
    cfg: NoiseConfig,
    vis: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """PoseFix-style errors: each valid joint is jittered, missed, inverted or kept good (see module docstring).

    Args:
        crop_joints: (..., J, 2) crop pixels.
        rng: the sample's generator.
        info: the joint set's sigmas, groups, flip permutation and derived joints.
        cfg: probabilities per joint group.
        vis: (..., J) visibility; joints with vis <= 0 are left alone and not counted as valid.

    Returns:
        The noised (..., J, 2) joints, and (..., J) int codes of the error kind (0 good, 1 jitter, 2 miss,
        3 inversion, -1 untouched: invalid or derived).
    """
    p = np.asarray(crop_joints, dtype=np.float64)
    shape = p.shape[:-1]
    valid = np.ones(shape, dtype=bool) if vis is None else np.asarray(vis) > 0
    derived = np.zeros(shape[-1], dtype=bool)
    derived[list(info.derived)] = True
    table = np.array([cfg.posefix_head, cfg.posefix_torso, cfg.posefix_middle, cfg.posefix_end])
    probs = np.broadcast_to(table[info.groups], (*shape, 3)).copy()  # (..., J, 3): jitter, miss, inversion
    few = valid.sum(axis=-1) <= cfg.few_valid
    probs[few] *= cfg.few_valid_scale
    has_partner = info.flip_perm != np.arange(shape[-1])
    probs[..., 2] *= has_partner & valid[..., info.flip_perm]
    cum = np.cumsum(probs, axis=-1)
    u = rng.random(shape)
    kind = np.where(
        u < cum[..., 0],
        _JITTER,
        np.where(u < cum[..., 1], _MISS, np.where(u < cum[..., 2], _INVERSION, _GOOD)),
    )
    lo = np.choose(kind, [_KS_RANGES[k][0] for k in range(4)])
    hi = np.choose(kind, [_KS_RANGES[k][1] for k in range(4)])
    ks = lo + (hi - lo) * rng.random(shape)
    bbox = joints_bbox(p, vis)
    scale = np.sqrt(np.maximum(bbox[..., 2] * bbox[..., 3], 1.0))[..., None]  # s = sqrt(area)
    dist = 2.0 * info.sigmas * scale * np.sqrt(-2.0 * np.log(ks))
    theta = rng.uniform(0.0, 2.0 * np.pi, shape)
    base = np.where((kind == _INVERSION)[..., None], p[..., info.flip_perm, :], p)
    out = base + dist[..., None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    touched = valid & ~derived
    out = np.where(touched[..., None], out, p)
    delta = out - p
    for j, parents in info.derived.items():
        out[..., j, :] = p[..., j, :] + delta[..., list(parents), :].mean(axis=-2) * valid[..., j, None]
    return out, np.where(touched, kind, -1)


def flip_crop_joints(crop_joints: np.ndarray, crop_width: int, flip_perm: np.ndarray) -> np.ndarray:
    """Mirror (..., J, 2) crop joints: ``x -> W - 1 - x`` and swap left/right joints."""
    p = np.array(crop_joints, dtype=np.float64)
    p[..., 0] = crop_width - 1 - p[..., 0]
    return p[..., flip_perm, :]


def flip_joints3d(joints3d: np.ndarray, flip_perm: np.ndarray) -> np.ndarray:
    """Mirror (..., J, 3) camera-frame joints: ``X -> -X`` and swap left/right joints."""
    q = np.array(joints3d, dtype=np.float64)
    q[..., 0] = -q[..., 0]
    return q[..., flip_perm, :]


class TransformOutput(NamedTuple):
    """One transformed sample.

    Attributes:
        pose2d: (..., J, 2) float32 network input.
        joints3d: (..., J, 3) float32 3D target after the flip (None when none was given).
        flipped: (...) bool, whether the sample was mirrored.
        error_kind: (..., J) int PoseFix error codes (all -1 for other noise kinds).
    """

    pose2d: np.ndarray
    joints3d: np.ndarray | None
    flipped: np.ndarray
    error_kind: np.ndarray


class Pose2DTransform:
    """The whole input pipeline of a sample (module docstring), configured once.

    Args:
        cfg: crop size, flip probability and noise model.
        joint_set: "h36m" or "coco19".
        train: add noise and flips (False: normalisation only).
    """

    def __init__(self, cfg: TransformConfig, joint_set: str = "h36m", train: bool = True) -> None:
        self.cfg, self.train = cfg, train
        self.info = joint_set_info(joint_set)
        self.crop_size = (cfg.crop_width, cfg.crop_height)
        self.std_px = cfg.noise.gaussian_scale * self.info.sigmas * cfg.crop_height

    def __call__(
        self,
        joints2d: np.ndarray,
        joints3d: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        vis: np.ndarray | None = None,
    ) -> TransformOutput:
        """Transform (..., J, 2) pixel joints (and their (..., J, 3) 3D target).

        Args:
            joints2d: (..., J, 2+) pixel joints.
            joints3d: (..., J, 3) root-relative camera-frame joints (mm) or None.
            rng: required when training.
            vis: (..., J) visibility (None: all visible).
        """
        p = np.asarray(joints2d, dtype=np.float64)[..., :2]
        if p.shape[-2] != len(self.info.sigmas):
            raise ValueError(f"joints2d: shape {p.shape}, expected (..., {len(self.info.sigmas)}, 2)")
        crop = _crop(p, vis, self.crop_size)
        lead = p.shape[:-2]
        kind = np.full(p.shape[:-1], -1)
        flipped = np.zeros(lead, dtype=bool)
        q = None if joints3d is None else np.asarray(joints3d, dtype=np.float64)
        if self.train:
            if rng is None:
                raise ValueError("a training transform needs an rng (see sample_rng)")
            noise = self.cfg.noise
            if noise.kind == "gaussian":
                crop = gaussian_errors(crop, rng, self.std_px, noise.gaussian_prob)
            elif noise.kind == "posefix":
                crop, kind = posefix_errors(crop, rng, self.info, noise, vis)
            if self.cfg.flip_prob > 0:
                flipped = rng.random(lead) < self.cfg.flip_prob
                mirrored = flip_crop_joints(crop, self.crop_size[0], self.info.flip_perm)
                crop = np.where(flipped[..., None, None], mirrored, crop)
                if q is not None:
                    q = np.where(flipped[..., None, None], flip_joints3d(q, self.info.flip_perm), q)
        pose2d = standardize(crop / np.array(self.crop_size, dtype=np.float64)).astype(np.float32)
        return TransformOutput(pose2d, None if q is None else q.astype(np.float32), flipped, kind)
