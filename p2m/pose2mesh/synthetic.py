"""An endless, seeded, resumable stream of synthetic training batches, drawn on the training device.

Each batch is what `p2m synth` would write, without the disk: a pose from the CMU training table (never the
held-out evaluation subjects), mirrored left/right with probability ``mirror_prob``, turned to a uniform heading;
an adult anny phenotype; the body standing on the floor near the origin; and a camera, either one of a
Human3.6M-like rig (about 5 m away, 1.6 m high, 1000 x 1000 px) or a random one framing the person (any
azimuth, -5..30 degrees elevation, 45-85 % of a square image). The H36M-17 joints are projected exactly (pinhole,
``X_cam = R X_world + t``, :mod:`p2m.camera`'s conventions). The ranges are the ones of
:mod:`p2m.annotate.synth` (``p2m.body.sampler.SHAPE_RANGES``, ``p2m.camera.H36M_RIG``, ``RANDOM_CAMERA``).

The batch is the collated shard batch of the trainer (``key``, ``j2d``, ``j3d``, ``has_j3d``, ``bbox``, ``cam``,
``has_cam``, ``R``, ``pose``, ``shape``, ``trans``, ``has_body``), so both sources feed the same code. The 2D error
model is not applied here: the trainer applies it to every batch, whatever its source.

Batch ``n`` is drawn from a generator seeded by ``(seed, n)`` alone, so the stream is a pure function of the seed
and the position: ``state_dict()`` is ``{seed, epoch, batch, batches}`` (the position as the shard loader keeps it)
and a fresh source given it continues exactly (same device kind and body model).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from p2m.body.poses import PoseSource
from p2m.body.sampler import SHAPE_RANGES
from p2m.camera import H36M_FOCAL, H36M_IMAGE_SIZE, H36M_RIG, RANDOM_CAMERA
from p2m.errors import ConfigError

logger = logging.getLogger(__name__)

#: Margin of the person boxes (as :func:`p2m.camera.bbox_from_joints`'s default).
BBOX_MARGIN = 0.1


def held_out_subjects() -> frozenset[int]:
    """The CMU subjects of the shipped evaluation table (``cmu_poses_eval.npz``): never drawn for training."""
    table = PoseSource.from_table(split="eval")
    return frozenset(int(s) for s in table.clip_subject.tolist())


def mirror_permutation(bone_names: tuple[str, ...] | list[str]) -> list[int]:
    """For each bone, the index of its left/right partner (itself for middle bones)."""
    names = list(bone_names)
    swaps = (
        ("Left", "Right"),
        ("Right", "Left"),
        ("LHip", "RHip"),
        ("RHip", "LHip"),
        ("LThumb", "RThumb"),
        ("RThumb", "LThumb"),
    )
    perm = []
    for name in names:
        partner = name
        for a, b in swaps:
            if name.startswith(a):
                partner = b + name[len(a) :]
                break
        if partner not in names:
            raise ValueError(f"bone {name!r}: no mirror partner {partner!r} in the rig")
        perm.append(names.index(partner))
    return perm


def mirror_pose(pose: torch.Tensor, perm: list[int] | torch.Tensor) -> torch.Tensor:
    """Mirror (..., J, 3) anny "local-ref" axis-angle poses across the body's sagittal plane (x -> -x).

    Reflecting a rotation by ``S = diag(-1, 1, 1)`` gives ``S R(r) S = R((r_x, -r_y, -r_z))``; the rest pose is
    symmetric, so the mirrored body is the original's mirror image with left and right bones swapped.
    """
    sign = pose.new_tensor([1.0, -1.0, -1.0])
    return pose[..., perm, :] * sign


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World->camera rotations (B, 3, 3) of cameras at ``eye`` (B, 3) looking at ``target`` with world +Z up.

    Same frame as :meth:`p2m.camera.Camera.look_at` (x right, y down, z forward).
    """
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    up = eye.new_tensor([0.0, 0.0, 1.0]).expand_as(z)
    x = torch.nn.functional.normalize(torch.cross(z, up, dim=-1), dim=-1)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-2)


def _batch_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]) >> 1


class SyntheticSource:
    """Synthetic batches of the shard-batch layout (module docstring), ``batches_per_epoch`` per epoch.

    Args:
        body: the body model layer (:func:`p2m.body.create`, anny ``cmu_mb`` rig) on the training device.
        batch_size: samples per batch.
        seed: stream seed (same seed, same batches).
        batches_per_epoch: length of an "epoch" (the trainer's schedule and validation unit).
        poses: ``"cmu-train"`` (default) or a path to a pose table/BVH folder; must not hold held-out subjects.
        mirror_prob: probability that a pose is mirrored left/right.
        random_camera_prob: share of random cameras (the rest come from the Human3.6M-like rig).
        image_size: side (px) of the random cameras' square images.
        key_prefix: start of every sample key.
    """

    def __init__(
        self,
        body: torch.nn.Module,
        batch_size: int,
        seed: int = 0,
        *,
        batches_per_epoch: int = 1000,
        poses: str = "cmu-train",
        mirror_prob: float = 0.5,
        random_camera_prob: float = 0.5,
        image_size: int = 512,
        key_prefix: str = "gen",
    ) -> None:
        if batch_size < 1 or batches_per_epoch < 1:
            raise ConfigError(
                f"synthetic source: batch_size {batch_size}, batches_per_epoch {batches_per_epoch}; "
                "expected positive numbers"
            )
        for name, p in (("mirror_prob", mirror_prob), ("random_camera_prob", random_camera_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"synthetic source: {name} {p!r}, expected a probability")
        if poses in ("cmu-eval", "cmu"):
            raise ConfigError(
                f"synthetic source: poses {poses!r} hold the held-out evaluation subjects; use cmu-train"
            )
        source = PoseSource.from_spec(poses)
        if source.poses is None:
            raise ConfigError(
                f"synthetic source: poses {poses!r} is not a pose bank (the sampler is not supported)"
            )
        leak = sorted(set(int(s) for s in source.clip_subject.tolist()) & held_out_subjects())
        if leak:
            raise ConfigError(f"synthetic source: poses {poses!r} hold held-out evaluation subjects {leak}")
        if tuple(getattr(body, "bone_names", ())) != tuple(source.bone_names):
            raise ConfigError(
                f"synthetic source: the body model's bones ({getattr(body, 'rig', '?')}) are not the "
                "pose table's (anny cmu_mb rig)"
            )
        self.body, self.batch_size, self.seed = body, int(batch_size), int(seed)
        self.batches_per_epoch = int(batches_per_epoch)
        self.mirror_prob, self.random_camera_prob = float(mirror_prob), float(random_camera_prob)
        self.image_size, self.key_prefix = int(image_size), key_prefix
        self.pose_source = source
        self.credit = source.credit
        self._epoch, self._batch = 0, 0  # the position, as p2m.shards.read.ShardLoader keeps it
        self._table = torch.as_tensor(source.poses, dtype=torch.float32)
        self._perm = mirror_permutation(source.bone_names)

    # ---------------------------------------------------------------------------------------------- position
    @property
    def device(self) -> torch.device:
        return self.body.device

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batch(self) -> int:
        """Batches of the current epoch already handed out (``len(self)`` after the last one, until the next
        iteration starts the next epoch: the shard loader's convention)."""
        return self._batch

    @property
    def drawn(self) -> int:
        """Batches handed out since the start of the stream (the index of the next one)."""
        return self._epoch * self.batches_per_epoch + self._batch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        """``{kind, seed, epoch, batch, batches, batch_size}`` (plain ints)."""
        return {
            "kind": "synthetic",
            "seed": self.seed,
            "epoch": self._epoch,
            "batch": self._batch,
            "batches": self.drawn,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position (a different seed or batch size is refused)."""
        for key in ("seed", "batch_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ConfigError(
                    f"synthetic source: resuming with {key} {getattr(self, key)}, the saved stream has "
                    f"{state[key]}"
                )
        self._epoch, self._batch = int(state["epoch"]), int(state["batch"])
        if self._batch >= self.batches_per_epoch:  # saved after an epoch's last batch: the next epoch is due
            self._epoch, self._batch = self._epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch; when it is exhausted the position moves to the next epoch."""
        if self._batch >= self.batches_per_epoch:
            self._epoch, self._batch = self._epoch + 1, 0
        while self._batch < self.batches_per_epoch:
            batch = self.draw(self.drawn)
            self._batch += 1  # counted before the trainer sees it, as the shard loader does
            yield batch
        self._epoch, self._batch = self._epoch + 1, 0

    # ---------------------------------------------------------------------------------------------- drawing
    def draw(self, index: int) -> dict[str, Any]:
        """Batch number ``index`` of the stream (a pure function of seed and index)."""
        dev = self.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(_batch_seed(self.seed, index))
        n = self.batch_size

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, device=dev)

        table = self._table if self._table.device == dev else self._table.to(dev)
        self._table = table
        pick = torch.randint(0, table.shape[0], (n,), generator=gen, device=dev)
        pose = table[pick]
        mirrored = torch.rand(n, generator=gen, device=dev) < self.mirror_prob
        pose = torch.where(mirrored[:, None, None], mirror_pose(pose, self._perm), pose)
        pose = _turn(pose, uniform(-math.pi, math.pi))
        shape = torch.rand(n, 6, generator=gen, device=dev)
        for col, name in ((1, "age"), (3, "weight"), (4, "height")):
            shape[:, col] = uniform(*SHAPE_RANGES[name])
        floor_xy = uniform(-0.4, 0.4, 2)
        with torch.no_grad():
            out = self.body(pose, shape)
        trans = torch.cat([floor_xy, -out.vertices[..., 2].amin(dim=1, keepdim=True)], dim=1)
        joints = (out.joints + trans[:, None]) * 1000.0  # world mm
        kps = (out.keypoints + trans[:, None]) * 1000.0
        rot, t, focal, centre, size = self._cameras(gen, joints)
        j3d = torch.einsum("bij,bkj->bki", rot, joints) + t[:, None]
        k3d = torch.einsum("bij,bkj->bki", rot, kps) + t[:, None]
        j2d = j3d[..., :2] / j3d[..., 2:] * focal[:, None] + centre[:, None]
        k2d = k3d[..., :2] / k3d[..., 2:] * focal[:, None] + centre[:, None]
        inside = ((j2d >= 0) & (j2d <= size[:, None] - 1)).all(-1) & (j3d[..., 2] > 0)
        vis = torch.where(inside, 2.0, 0.0)
        keys = [f"{self.key_prefix}{self.seed}_{index:09d}_{i:04d}" for i in range(n)]
        true = torch.ones(n, dtype=torch.bool, device=dev)
        return {
            "key": keys,
            "j2d": torch.cat([j2d, vis[..., None]], dim=-1),
            "j3d": j3d,
            "has_j3d": true,
            "bbox": _bbox(torch.cat([j2d, k2d], dim=1), size),
            "cam": torch.cat([focal, centre], dim=1),
            "has_cam": true.clone(),
            "R": rot,
            "pose": pose,
            "shape": shape,
            "trans": trans,
            "has_body": true.clone(),
        }

    def _cameras(self, gen: torch.Generator, joints_mm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(R (B,3,3), t (B,3) mm, f (B,2), c (B,2), image size (B,2)) of rig or random cameras.

        Every draw is made for both kinds, so the stream does not depend on which kind a sample gets.
        """
        n, dev = joints_mm.shape[0], joints_mm.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, *shape, generator=gen, device=dev)

        use_random = torch.rand(n, generator=gen, device=dev) < self.random_camera_prob
        # Human3.6M-like rig
        rig = H36M_RIG
        az = uniform(0.0, 2 * math.pi)
        dist = uniform(*rig["distance"])
        eye_rig = torch.stack([torch.cos(az) * dist, torch.sin(az) * dist, uniform(*rig["height"])], dim=-1)
        target_rig = joints_mm.new_tensor(rig["target"]) + uniform(
            -rig["target_jitter"], rig["target_jitter"], 3
        )
        f_rig = H36M_FOCAL * uniform(1 - rig["focal_jitter"], 1 + rig["focal_jitter"])
        size_rig = joints_mm.new_tensor(H36M_IMAGE_SIZE, dtype=torch.float32).expand(n, 2)
        c_rig = size_rig / 2 + uniform(-rig["centre_jitter"], rig["centre_jitter"], 2)
        # random cameras framing the person
        rc, side = RANDOM_CAMERA, float(self.image_size)
        centre = (joints_mm.amax(1) + joints_mm.amin(1)) / 2
        extent = (joints_mm.amax(1) - joints_mm.amin(1)).amax(-1) + rc["margin_mm"]
        f_rnd = side * uniform(*rc["focal"])
        fill = uniform(*rc["fill"])
        dist_rnd = f_rnd * extent / (fill * side)
        az2 = uniform(0.0, 2 * math.pi)
        el = uniform(*(math.radians(a) for a in rc["elevation_deg"]))
        direction = torch.stack(
            [torch.cos(az2) * torch.cos(el), torch.sin(az2) * torch.cos(el), torch.sin(el)], -1
        )
        eye_rnd = centre + dist_rnd[:, None] * direction
        target_rnd = centre + uniform(-rc["target_jitter"], rc["target_jitter"], 3)
        size_rnd = torch.full((n, 2), side, device=dev)
        c_rnd = size_rnd / 2 + uniform(-rc["centre_jitter"], rc["centre_jitter"], 2) * side
        pick = use_random[:, None]
        eye = torch.where(pick, eye_rnd, eye_rig)
        rot = look_at(eye, torch.where(pick, target_rnd, target_rig))
        t = -torch.einsum("bij,bj->bi", rot, eye)
        f = torch.where(use_random, f_rnd, f_rig)[:, None].expand(n, 2).contiguous()
        return rot, t, f, torch.where(pick, c_rnd, c_rig), torch.where(pick, size_rnd, size_rig)


def _turn(pose: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Rotate each body about the world vertical (+Z) by ``yaw`` (B,) radians: the root rotation only."""
    import roma

    zero = torch.zeros_like(yaw)
    turn = roma.rotvec_to_rotmat(torch.stack([zero, zero, yaw], dim=-1))
    root = roma.rotmat_to_rotvec(turn @ roma.rotvec_to_rotmat(pose[:, 0]))
    return torch.cat([root[:, None], pose[:, 1:]], dim=1)


def _bbox(points: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """``[x, y, w, h]`` (B, 4) around (B, K, 2) points, grown by ``BBOX_MARGIN`` per side, clipped to the image."""
    lo, hi = points.amin(1), points.amax(1)
    ext = hi - lo
    lo = (lo - BBOX_MARGIN * ext).clamp_min(0.0)
    hi = torch.minimum(hi + BBOX_MARGIN * ext, size)
    return torch.cat([lo, (hi - lo).clamp_min(0.0)], dim=1)


class MixedSource:
    """Shard batches with ``synthetic`` rows appended: each batch is one shard batch (``B - k`` rows) followed by
    one synthetic batch (``k`` rows), on the synthetic source's device. The shard loader's epoch is the epoch;
    the position is both sources' (``state_dict`` nests the synthetic one).

    Args:
        shards: a shard loader (``p2m.shards.read.ShardLoader``) of ``B - k`` samples per batch.
        synthetic: a :class:`SyntheticSource` of ``k`` samples per batch.
    """

    def __init__(self, shards: Any, synthetic: SyntheticSource) -> None:
        self.shards, self.synthetic = shards, synthetic
        self.drawn = 0  # synthetic batches drawn so far (their stream index)

    def __len__(self) -> int:
        return len(self.shards)

    def state_dict(self) -> dict[str, Any]:
        syn = {"seed": self.synthetic.seed, "batches": self.drawn, "batch_size": self.synthetic.batch_size}
        return {**self.shards.state_dict(), "synthetic": syn}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        syn = state["synthetic"]
        if int(syn["seed"]) != self.synthetic.seed or int(syn["batch_size"]) != self.synthetic.batch_size:
            raise ConfigError(
                f"mixed source: the saved synthetic stream {dict(syn)} is not this one (seed "
                f"{self.synthetic.seed}, batch size {self.synthetic.batch_size})"
            )
        self.shards.load_state_dict({k: v for k, v in state.items() if k != "synthetic"})
        self.drawn = int(syn["batches"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.shards:
            extra = self.synthetic.draw(self.drawn)
            self.drawn += 1
            yield merge_batches(batch, extra, self.synthetic.device)


def merge_batches(a: Mapping[str, Any], b: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Rows of ``a`` then rows of ``b`` (batch-contract dicts), on ``device``; a tensor one side lacks is zeros
    there (so ``has_body`` and the other masks are False for its rows)."""
    out: dict[str, Any] = {"key": list(a["key"]) + list(b["key"])}
    na, nb = len(a["key"]), len(b["key"])
    for name in sorted((set(a) | set(b)) - {"key", "meta", "image"}):
        ta, tb = a.get(name), b.get(name)
        ref = ta if ta is not None else tb
        if not isinstance(ref, torch.Tensor):
            continue
        ta = ref.new_zeros((na, *ref.shape[1:])) if ta is None else ta
        tb = ref.new_zeros((nb, *ref.shape[1:])) if tb is None else tb
        if ta.shape[1:] != tb.shape[1:]:  # e.g. pose (B, 93) in shards, (B, 31, 3) here: the same values
            tb = tb.reshape(nb, *ta.shape[1:])
        out[name] = torch.cat([ta.to(device), tb.to(device)])
    return out
