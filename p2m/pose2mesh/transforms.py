"""PoseNet input, in torch on a whole batch on the training device: the original's 2D normalisation, its
synthetic 2D error models and flip augmentation.

Pipeline of a batch (as the original's ``__getitem__``, every function vectorised over leading batch axes,
float32 on the input's device):

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
   (the original, ``standardize: per_axis``; it does not preserve the aspect ratio, so the body's proportions and
   with them its size are lost), or with ``standardize: one_scale`` centre the crop pixels and divide both axes by
   one scale (their RMS spread per axis), which keeps them.

Randomness is counter-based (:class:`CounterRNG`): every number is a hash of a per-sample seed, the draw and the
element, so a sample's noise depends on its seed only, not on the batch it is in, the device or the batch size.
Training seeds come from (seed, step, rank, micro-batch, row) (:func:`batch_seeds`), evaluation seeds from the
sample key and the evaluation seed (:func:`key_seeds`).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from p2m import joints as J
from p2m.pose2mesh.config import NoiseConfig, TransformConfig

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

GOOD, JITTER, MISS, INVERSION = 0, 1, 2, 3
#: Keypoint-similarity ranges of the PoseFix error kinds (good, jitter, miss, inversion).
KS_RANGES: tuple[tuple[float, float], ...] = ((0.85, 1.0), (0.5, 0.85), (0.1, 0.5), (0.85, 1.0))


class JointSetInfo(NamedTuple):
    """What the transforms need to know about a joint set (tensors on one device)."""

    sigmas: torch.Tensor
    groups: torch.Tensor
    flip_perm: torch.Tensor
    derived: dict[int, tuple[int, ...]]


def joint_set_info(name: str, device: torch.device | str = "cpu") -> JointSetInfo:
    """Sigmas, groups, flip permutation and derived joints of "h36m" or "coco19"."""
    if name == "h36m":
        sigmas, groups, perm, derived = (
            H36M_SIGMAS,
            H36M_GROUPS,
            J.flip_permutation(J.H36M_FLIP_PAIRS, J.H36M_NUM_JOINTS),
            H36M_DERIVED,
        )
    elif name == "coco19":
        sigmas, groups, derived = (*J.COCO_SIGMAS, 0.107, 0.079), COCO19_GROUPS, COCO19_DERIVED
        perm = J.flip_permutation(J.COCO19_FLIP_PAIRS, J.COCO19_NUM_JOINTS)
    else:
        raise ValueError(f"joint set {name!r} is not one of ['h36m', 'coco19']")
    return JointSetInfo(
        torch.tensor(sigmas, dtype=torch.float32, device=device),
        torch.tensor(groups, dtype=torch.long, device=device),
        torch.as_tensor(np.asarray(perm), dtype=torch.long, device=device),
        derived,
    )


# ----------------------------------------------------------------------------------------------------------------
# Counter-based randomness
# ----------------------------------------------------------------------------------------------------------------
_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32), without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _seed32(*parts: Any) -> int:
    """A 32-bit seed from any ints/strings, the same in every process and Python run."""
    text = "/".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=4).digest(), "little")


def batch_seeds(n: int, *parts: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) per-row seeds of a training batch, from e.g. ``(seed, step, rank, micro_batch)``."""
    base = _seed32(*parts)
    return _mix32((torch.arange(n, dtype=torch.int64, device=device) + base) & _M32)


def key_seeds(keys: Sequence[str], seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n,) per-sample seeds from the sample keys and an evaluation seed: a sample's noise depends on nothing else."""
    crc = torch.tensor([zlib.crc32(str(k).encode("utf-8")) for k in keys], dtype=torch.int64, device=device)
    return _mix32(crc ^ _seed32("eval", seed))


class CounterRNG:
    """Random numbers for a batch: value ``e`` of draw ``d`` of row ``i`` is a hash of (seed_i, d, e).

    Args:
        seeds: (B,) int64 per-row seeds in [0, 2**32) (:func:`batch_seeds`, :func:`key_seeds`).
    """

    def __init__(self, seeds: torch.Tensor) -> None:
        self.seeds = seeds.to(torch.int64) & _M32
        self.draws = 0

    def uniform(self, *shape: int) -> torch.Tensor:
        """(B, *shape) float32 in [0, 1), 24 random bits each."""
        n = math.prod(shape)
        self.draws += 1
        stream = _mix32(self.seeds ^ _seed32("draw", self.draws))[:, None]
        counter = _mul32(torch.arange(n, dtype=torch.int64, device=self.seeds.device) + 1, _GOLDEN)
        bits = _mix32(_mix32((stream + counter) & _M32) ^ stream)
        return ((bits >> 8).to(torch.float32) * (1.0 / (1 << 24))).view(-1, *shape)

    def normal(self, *shape: int) -> torch.Tensor:
        """(B, *shape) standard normal float32 (Box-Muller)."""
        u1, u2 = 1.0 - self.uniform(*shape), self.uniform(*shape)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


# ----------------------------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------------------------
def joints_bbox(joints2d: torch.Tensor, vis: torch.Tensor | None = None) -> torch.Tensor:
    """Tight bbox ``[x, y, w, h]`` (..., 4) of (..., J, 2) joints, over visible ones (all when none is)."""
    p = joints2d[..., :2]
    if vis is None:
        lo, hi = p.amin(dim=-2), p.amax(dim=-2)
    else:
        mask = vis > 0
        mask = (mask | ~mask.any(dim=-1, keepdim=True))[..., None]
        lo = torch.where(mask, p, torch.inf).amin(dim=-2)
        hi = torch.where(mask, p, -torch.inf).amax(dim=-2)
    return torch.cat([lo, hi - lo], dim=-1)


def expand_to_aspect(bbox: torch.Tensor, aspect: float) -> torch.Tensor:
    """Grow a bbox (..., 4) about its centre to ``w / h == aspect`` (no extra padding, like the original)."""
    cx, cy = bbox[..., 0] + bbox[..., 2] / 2, bbox[..., 1] + bbox[..., 3] / 2
    w, h = bbox[..., 2].clamp_min(1e-6), bbox[..., 3].clamp_min(1e-6)
    wide = w > aspect * h
    w2 = torch.where(wide, w, aspect * h)
    h2 = torch.where(wide, w / aspect, h)
    return torch.stack([cx - w2 / 2, cy - h2 / 2, w2, h2], dim=-1)


def to_crop(joints2d: torch.Tensor, bbox: torch.Tensor, crop_size: tuple[int, int]) -> torch.Tensor:
    """Map (..., J, 2) pixel joints into a ``crop_size = (W, H)`` crop of ``bbox`` (..., 4)."""
    b = bbox[..., None, :]
    size = torch.tensor(crop_size, dtype=joints2d.dtype, device=joints2d.device)
    return (joints2d[..., :2] - b[..., :2]) / b[..., 2:] * size


def standardize(joints2d: torch.Tensor, one_scale: bool = False) -> torch.Tensor:
    """Z-score over the joint axis: ``(p - mean_J(p)) / std_J(p)`` for x and y separately (the original), or with
    ``one_scale`` one scale for both axes, ``s = sqrt(mean_J |p - mean_J(p)|^2 / 2)``, which keeps the pose's
    proportions (call it on crop pixels, not on coordinates divided by the crop's width and height)."""
    mean = joints2d.mean(dim=-2, keepdim=True)
    if one_scale:
        s = ((joints2d - mean) ** 2).sum(dim=-1).mean(dim=-1).div(2.0).sqrt()[..., None, None].clamp_min(1e-6)
        return (joints2d - mean) / s
    std = joints2d.std(dim=-2, correction=0, keepdim=True).clamp_min(1e-6)
    return (joints2d - mean) / std


def normalize_crop(crop: torch.Tensor, crop_size: tuple[int, int], mode: str = "per_axis") -> torch.Tensor:
    """Step 5: crop pixels -> network input, per ``transform.standardize`` ("per_axis" or "one_scale")."""
    if mode == "one_scale":
        return standardize(crop, one_scale=True)
    size = torch.tensor(crop_size, dtype=crop.dtype, device=crop.device)
    return standardize(crop / size)


def crop_joints(joints2d: torch.Tensor, vis: torch.Tensor | None, crop_size: tuple[int, int]) -> torch.Tensor:
    """Steps 1-2: (..., J, 2) pixel joints in the crop of their aspect-expanded joint bbox."""
    bbox = expand_to_aspect(joints_bbox(joints2d, vis), crop_size[0] / crop_size[1])
    return to_crop(joints2d, bbox, crop_size)


def normalize_pose2d(
    joints2d: Any, vis: Any = None, crop_size: tuple[int, int] = (288, 384), mode: str = "per_axis"
) -> Any:
    """The network input for clean (test-time) 2D joints: bbox -> aspect -> crop -> standardisation.

    Args:
        joints2d: (..., J, 2+) pixel joints (extra channels ignored): a tensor, or an array / list.
        vis: (..., J) visibility for the bbox (None: all joints).
        crop_size: (W, H) of the crop.
        mode: ``transform.standardize`` of the model's config ("per_axis" or "one_scale").

    Returns:
        (..., J, 2) float32: a tensor for a tensor input, else a numpy array.
    """
    as_numpy = not isinstance(joints2d, torch.Tensor)
    p = torch.as_tensor(np.asarray(joints2d, dtype=np.float32) if as_numpy else joints2d).float()[..., :2]
    v = None if vis is None else torch.as_tensor(np.asarray(vis) if as_numpy else vis, device=p.device)
    out = normalize_crop(crop_joints(p, v, crop_size), crop_size, mode)
    return out.numpy() if as_numpy else out


# ----------------------------------------------------------------------------------------------------------------
# Synthetic 2D errors (crop pixels)
# ----------------------------------------------------------------------------------------------------------------
def gaussian_errors(crop: torch.Tensor, rng: CounterRNG, std_px: torch.Tensor, prob: float) -> torch.Tensor:
    """Add isotropic Gaussian offsets (std ``std_px[j]``) to each joint with probability ``prob``.

    Args:
        crop: (B, J, 2) crop pixels.
        rng: the batch's random numbers.
        std_px: (J,) standard deviation per joint, crop pixels.
        prob: probability that a joint is perturbed.
    """
    _, joints, _ = crop.shape
    offset = rng.normal(joints, 2) * std_px[:, None]
    hit = rng.uniform(joints) < prob
    return crop + offset * hit[..., None]


def posefix_errors(
    crop: torch.Tensor, rng: CounterRNG, info: JointSetInfo, cfg: NoiseConfig, vis: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PoseFix-style errors: each valid joint is jittered, missed, inverted or kept good (see module docstring).

    Args:
        crop: (B, J, 2) crop pixels.
        rng: the batch's random numbers.
        info: the joint set's sigmas, groups, flip permutation and derived joints.
        cfg: probabilities per joint group.
        vis: (B, J) visibility; joints with vis <= 0 are left alone and not counted as valid.

    Returns:
        The noised (B, J, 2) joints, and (B, J) int64 codes of the error kind (0 good, 1 jitter, 2 miss,
        3 inversion, -1 untouched: invalid or derived).
    """
    batch, joints, _ = crop.shape
    dev = crop.device
    valid = torch.ones(batch, joints, dtype=torch.bool, device=dev) if vis is None else vis > 0
    derived = torch.zeros(joints, dtype=torch.bool, device=dev)
    derived[list(info.derived)] = True
    table = torch.tensor(
        [cfg.posefix_head, cfg.posefix_torso, cfg.posefix_middle, cfg.posefix_end], device=dev
    )
    probs = table[info.groups].expand(batch, joints, 3).clone()  # jitter, miss, inversion
    few = valid.sum(dim=-1) <= cfg.few_valid
    probs[few] *= cfg.few_valid_scale
    has_partner = info.flip_perm != torch.arange(joints, device=dev)
    probs[..., 2] *= has_partner & valid[:, info.flip_perm]
    cum = probs.cumsum(dim=-1)
    u = rng.uniform(joints)
    kind = torch.full((batch, joints), GOOD, dtype=torch.long, device=dev)
    kind = torch.where(u < cum[..., 2], INVERSION, kind)
    kind = torch.where(u < cum[..., 1], MISS, kind)
    kind = torch.where(u < cum[..., 0], JITTER, kind)
    ranges = torch.tensor(KS_RANGES, device=dev)[kind]  # (B, J, 2)
    ks = ranges[..., 0] + (ranges[..., 1] - ranges[..., 0]) * rng.uniform(joints)
    bbox = joints_bbox(crop, vis)
    scale = torch.sqrt((bbox[..., 2] * bbox[..., 3]).clamp_min(1.0))[..., None]  # s = sqrt(area)
    dist = 2.0 * info.sigmas * scale * torch.sqrt(-2.0 * torch.log(ks))
    theta = 2.0 * math.pi * rng.uniform(joints)
    base = torch.where((kind == INVERSION)[..., None], crop[:, info.flip_perm], crop)
    out = base + dist[..., None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    touched = valid & ~derived
    out = torch.where(touched[..., None], out, crop)
    delta = out - crop
    for j, parents in info.derived.items():
        out[:, j] = crop[:, j] + delta[:, list(parents)].mean(dim=-2) * valid[:, j, None]
    return out, torch.where(touched, kind, -1)


def flip_crop_joints(crop: torch.Tensor, crop_width: int, flip_perm: torch.Tensor) -> torch.Tensor:
    """Mirror (..., J, 2) crop joints: ``x -> W - 1 - x`` and swap left/right joints."""
    mirrored = torch.stack([crop_width - 1 - crop[..., 0], crop[..., 1]], dim=-1)
    return mirrored[..., flip_perm, :]


def flip_joints3d(joints3d: torch.Tensor, flip_perm: torch.Tensor) -> torch.Tensor:
    """Mirror (..., J, 3) camera-frame joints: ``X -> -X`` and swap left/right joints."""
    mirrored = torch.cat([-joints3d[..., :1], joints3d[..., 1:]], dim=-1)
    return mirrored[..., flip_perm, :]


class TransformOutput(NamedTuple):
    """A transformed batch.

    Attributes:
        pose2d: (B, J, 2) float32 network input.
        joints3d: (B, J, 3) 3D target after the flip (None when none was given).
        flipped: (B,) bool, whether each sample was mirrored.
        error_kind: (B, J) int64 PoseFix error codes (all -1 for other noise kinds).
    """

    pose2d: torch.Tensor
    joints3d: torch.Tensor | None
    flipped: torch.Tensor
    error_kind: torch.Tensor


class Pose2DTransform:
    """The whole input pipeline of a batch (module docstring), configured once.

    Args:
        cfg: crop size, flip probability and noise model.
        joint_set: "h36m" or "coco19".
        train: add noise and flips (False: normalisation only).
    """

    def __init__(self, cfg: TransformConfig, joint_set: str = "h36m", train: bool = True) -> None:
        self.cfg, self.train, self.joint_set = cfg, train, joint_set
        self.crop_size = (cfg.crop_width, cfg.crop_height)
        self._info: dict[torch.device, JointSetInfo] = {}
        self.num_joints = len(joint_set_info(joint_set).sigmas)

    def info(self, device: torch.device) -> JointSetInfo:
        """The joint-set tensors on ``device`` (made once per device)."""
        hit = self._info.get(device)
        if hit is None:
            hit = self._info[device] = joint_set_info(self.joint_set, device)
        return hit

    def __call__(
        self,
        joints2d: torch.Tensor,
        vis: torch.Tensor | None = None,
        joints3d: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
    ) -> TransformOutput:
        """Transform (B, J, 2+) pixel joints (and their (B, J, 3) 3D target) on their device.

        Args:
            joints2d: (B, J, 2+) pixel joints.
            vis: (B, J) visibility (None: all visible).
            joints3d: (B, J, 3) root-relative camera-frame joints (mm) or None.
            seeds: (B,) per-sample seeds (:func:`batch_seeds`, :func:`key_seeds`); required when training.
        """
        p = joints2d[..., :2].float()
        if p.dim() != 3 or p.shape[-2] != self.num_joints:
            raise ValueError(f"joints2d: shape {tuple(p.shape)}, expected (B, {self.num_joints}, 2)")
        batch = p.shape[0]
        crop = crop_joints(p, vis, self.crop_size)
        kind = torch.full(p.shape[:-1], -1, dtype=torch.long, device=p.device)
        flipped = torch.zeros(batch, dtype=torch.bool, device=p.device)
        q = joints3d
        if self.train:
            if seeds is None:
                raise ValueError("a training transform needs per-sample seeds (see batch_seeds / key_seeds)")
            rng = CounterRNG(seeds)
            info = self.info(p.device)
            noise = self.cfg.noise
            if noise.kind == "gaussian":
                std_px = noise.gaussian_scale * info.sigmas * self.cfg.crop_height
                crop = gaussian_errors(crop, rng, std_px, noise.gaussian_prob)
            elif noise.kind == "posefix":
                crop, kind = posefix_errors(crop, rng, info, noise, vis)
            if self.cfg.flip_prob > 0:
                flipped = rng.uniform(1)[:, 0] < self.cfg.flip_prob
                crop = torch.where(
                    flipped[:, None, None], flip_crop_joints(crop, self.crop_size[0], info.flip_perm), crop
                )
                if q is not None:
                    q = torch.where(flipped[:, None, None], flip_joints3d(q, info.flip_perm), q)
        return TransformOutput(normalize_crop(crop, self.crop_size, self.cfg.standardize), q, flipped, kind)
