"""Shard batches -> network inputs and targets on the training device (GT meshes from body parameters, 2D
normalisation and noise, a batch at a time), plus the train loader and the evaluation loader (the same reader,
every sample of a split once).

Frames and units: the body model gives vertices and H36M joints in metres in the dataset's world frame (anny's
frame; world mm = anny m x 1000, Contract 1); each sample's camera rotation ``R`` (the batch's ``R``) turns them
into the camera frame, and everything is made root-relative at the body's regressed pelvis, in mm:
``mesh = 1000 R (v - j_0)``. The 3D joint targets are the shards' ``j3d`` (camera mm, e.g. mocap joints) minus
their pelvis where present, else the body's regressed joints.

Samples whose body model is not the configured one (e.g. Human3.6M imported with SMPL parameters while training
on anny) have no mesh target: their mesh losses (vertex, normal, edge) are masked and only their joints
supervise the network.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from p2m.errors import ConfigError
from p2m.pose2mesh.config import BodyConfig, Config
from p2m.pose2mesh.transforms import Pose2DTransform, key_seeds
from p2m.shards.index import load_index
from p2m.shards.read import ShardLoader, make_loader

logger = logging.getLogger(__name__)

#: ShardStream arguments that turn body-parameter collation off.
NO_BODY: dict[str, Any] = {"body_model": "-", "body_shapes": {}}
#: Human3.6M action names by action_idx (2..16), for per-action tables.
H36M_ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing", 8: "Purchases",
    9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "Photo", 13: "Waiting", 14: "Walking", 15: "WalkDog",
    16: "WalkTogether",
}  # fmt: skip


def body_ids(body: BodyConfig) -> tuple[str, ...]:
    """Body-model ids in shards (``model/rig`` or ``model``) that the configured body model can rebuild."""
    return (f"{body.model}/{body.rig}", body.model)


def body_selection(
    data: str | Path, split: str, cfg: Config, need_body: bool
) -> tuple[dict[str, Any], str | None]:
    """ShardStream body arguments for ``split``, and the shard body-model id used (None: no mesh targets).

    Logs how many samples of the split will be trained on joints only.
    """
    if not need_body:
        return dict(NO_BODY), None
    index = load_index(data)
    rec = index["splits"].get(split)
    if rec is None:
        return dict(NO_BODY), None  # the reader reports the missing split
    models = rec.get("body_models", {}) or {}
    chosen = next((i for i in body_ids(cfg.model.body) if i in models), None)
    total = int(rec.get("samples", 0))
    with_mesh = int(models[chosen].get("samples", 0)) if chosen else 0
    if with_mesh < total:
        logger.warning(
            "split %r: %d of %d samples have no %s body parameters (body models in the shards: %s); their mesh "
            "losses are masked (joints-only supervision)",
            split,
            total - with_mesh,
            total,
            body_ids(cfg.model.body)[0],
            {k: v.get("samples") for k, v in models.items()} or "none",
        )
    if chosen is None:
        return dict(NO_BODY), None
    return {"body_model": chosen}, chosen


def check_supported(cfg: Config) -> None:
    """Reject configs the shard format cannot feed (raises ConfigError naming the key)."""
    if cfg.model.joint_set != "h36m":
        raise ConfigError(
            f"model.joint_set: {cfg.model.joint_set!r}; shards store H36M-17 2D joints only, so the trainer "
            "supports joint_set 'h36m'"
        )
    if cfg.model.stage == "pose2mesh" and cfg.transform.flip_prob > 0:
        raise ConfigError(
            f"transform.flip_prob: {cfg.transform.flip_prob}; meshes are not mirrored, so stage 'pose2mesh' needs "
            "flip_prob 0 (as the original's stage 2)"
        )


@dataclass
class BatchInputs:
    """One batch ready for the model and the losses (all on the training device, mm, root-relative).

    Attributes:
        pose2d: (B, 17, 2) normalised (and, in training, noised) 2D joints.
        joints: (B, 17, 3) GT H36M joints; ``joints_valid`` (B,) where known.
        lifted: (B, 17, 3) the PoseNet target (``joints``, mirrored where the sample was flipped).
        mesh: (B, V, 3) GT mesh (zeros where ``mesh_valid`` is False), None without a body model.
        keys, meta: the samples' keys and decoded json (meta may be None).
    """

    pose2d: torch.Tensor
    joints: torch.Tensor
    joints_valid: torch.Tensor
    lifted: torch.Tensor
    mesh: torch.Tensor | None
    mesh_valid: torch.Tensor
    keys: list[str]
    meta: list[Any] | None
    #: (B, J, 3) the ground-truth 2D joints in pixels (+ visibility), (B, 4) intrinsics [fx, fy, cx, cy] and
    #: (B,) where they are known, (B, 3) the ground-truth root in the camera frame (mm): for MRPE.
    j2d: torch.Tensor | None = None
    cam: torch.Tensor | None = None
    cam_valid: torch.Tensor | None = None
    root: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.pose2d.shape[0])


class BatchPreparer:
    """Turns a collated shard batch into :class:`BatchInputs` (see the module docstring).

    Args:
        cfg: the run config.
        body: the body model layer on ``device`` (None: no mesh targets, e.g. ``stage: posenet``).
        device: the training device.
        train: training inputs (noise + flips from the batch rng) or evaluation inputs.
        eval_input: evaluation 2D input: "noisy" (error model, per-sample seed from ``eval_seed`` and the key) or
            "gt".
        eval_seed: seed of the evaluation noise.
    """

    def __init__(
        self,
        cfg: Config,
        body: torch.nn.Module | None,
        device: torch.device,
        *,
        train: bool = True,
        eval_input: str = "noisy",
        eval_seed: int = 0,
    ) -> None:
        self.cfg, self.body, self.device, self.train = cfg, body, device, train
        self.eval_input, self.eval_seed = eval_input, int(eval_seed)
        joint_set = cfg.model.joint_set
        if train:
            self.transform = Pose2DTransform(cfg.transform, joint_set, train=True)
        elif eval_input == "noisy":
            no_flip = dataclasses.replace(cfg.transform, flip_prob=0.0)
            self.transform = Pose2DTransform(no_flip, joint_set, train=True)
        elif eval_input == "gt":
            self.transform = Pose2DTransform(cfg.transform, joint_set, train=False)
        else:
            raise ConfigError(f"eval input {eval_input!r}: expected 'noisy' or 'gt'")

    def __call__(self, batch: Mapping[str, Any], seeds: torch.Tensor | None = None) -> BatchInputs:
        """Prepare ``batch`` (the batch contract of :func:`p2m.shards.collate.collate`) on the device.

        Args:
            batch: a collated batch.
            seeds: (B,) per-sample seeds of the training noise and flips (:func:`transforms.batch_seeds`);
                evaluation seeds come from the sample keys.
        """
        dev = self.device
        j2d = batch["j2d"].to(dev, non_blocking=True)
        n = j2d.shape[0]
        j3d = batch["j3d"].to(dev, non_blocking=True)
        joints = j3d - j3d[:, :1]
        joints_valid = batch["has_j3d"].to(dev, non_blocking=True)
        mesh = None
        mesh_valid = torch.zeros(n, dtype=torch.bool, device=dev)
        if self.body is not None:
            mesh, body_joints, mesh_valid = self._body_targets(batch, n)
            joints = torch.where(joints_valid[:, None, None], joints, body_joints)
            joints_valid = joints_valid | mesh_valid
        vis = j2d[..., 2]
        if self.train:
            if seeds is None:
                raise ValueError("training inputs need per-sample seeds (transforms.batch_seeds)")
            res = self.transform(j2d, vis, joints, seeds.to(dev))
            pose2d, lifted = res.pose2d, res.joints3d
        else:
            noisy = self.eval_input == "noisy"
            pose2d = self.transform(
                j2d, vis, seeds=key_seeds(batch["key"], self.eval_seed, dev) if noisy else None
            ).pose2d
            lifted = joints
        assert lifted is not None
        cam_valid = batch["has_cam"].to(dev) & batch["has_j3d"].to(dev) if "has_cam" in batch else None
        return BatchInputs(
            pose2d,
            joints,
            joints_valid,
            lifted,
            mesh,
            mesh_valid,
            list(batch["key"]),
            batch.get("meta"),
            j2d=j2d,
            cam=batch["cam"].to(dev) if "cam" in batch else None,
            cam_valid=cam_valid,
            root=j3d[:, 0],
        )

    def _body_targets(
        self, batch: Mapping[str, Any], n: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mesh (B, V, 3), joints (B, 17, 3), valid (B,)) from the body parameters, on the device."""
        dev, body = self.device, self.body
        assert body is not None
        nv = int(body.num_vertices)
        mesh = torch.zeros(n, nv, 3, device=dev)
        joints = torch.zeros(n, 17, 3, device=dev)
        has = batch.get("has_body")
        valid = torch.zeros(n, dtype=torch.bool) if has is None else has.clone()
        rows = torch.nonzero(valid).flatten()
        if rows.numel():
            pose = batch["pose"][rows].to(dev, non_blocking=True)
            shape = batch["shape"][rows].to(dev, non_blocking=True)
            trans = batch["trans"][rows].to(dev, non_blocking=True)
            rot = batch["R"][rows].to(dev, non_blocking=True)
            with torch.no_grad():
                out = body(pose, shape, trans)
                root = out.joints[:, :1]
                rows_d = rows.to(dev)
                mesh[rows_d] = torch.einsum("bij,bvj->bvi", rot, out.vertices - root) * 1000.0
                joints[rows_d] = torch.einsum("bij,bvj->bvi", rot, out.joints - root) * 1000.0
        return mesh, joints, valid.to(dev)


# ------------------------------------------------------------------------------------------------ readers


def make_train_loader(
    data: str | Path,
    cfg: Config,
    micro_batch: int,
    rank: int,
    world_size: int,
    body_kwargs: Mapping[str, Any],
    pin_memory: bool = False,
) -> ShardLoader:
    """The shard loader of the training split (exact epochs unless ``train.epoch_length``)."""
    t = cfg.train
    return make_loader(
        str(data),
        t.train_split,
        micro_batch,
        num_workers=t.num_workers,
        pin_memory=pin_memory,
        shuffle_buffer=t.shuffle_buffer,
        seed=t.seed,
        epoch_length=t.epoch_length,
        rank=rank,
        world_size=world_size,
        **body_kwargs,
    )


def make_train_source(
    data: str | Path | None,
    cfg: Config,
    micro_batch: int,
    rank: int,
    world_size: int,
    body: torch.nn.Module | None,
    device: torch.device,
) -> Any:
    """The training data source of ``cfg.synthetic.ratio``: the shard loader (0), the synthetic source drawing on
    ``device`` (1, no shards needed), or shard batches with synthetic rows appended (in between).

    Args:
        data: the shard folder (None only when every batch is synthetic).
        body: the body model on ``device`` (None for ``stage: posenet``: the source builds its own).
    """
    from p2m.pose2mesh.synthetic import MixedSource, SyntheticSource

    syn, t = cfg.synthetic, cfg.train
    k = round(syn.ratio * micro_batch)
    if syn.ratio > 0 and k == 0:
        raise ConfigError(
            f"synthetic.ratio {syn.ratio} of a micro-batch of {micro_batch} is no sample; raise it"
        )
    if k < micro_batch and data is None:
        raise ConfigError(
            f"synthetic.ratio {syn.ratio}: training shards are needed for the rest (--data), or set "
            "synthetic.ratio: 1"
        )
    shards = None
    if k < micro_batch:
        assert data is not None
        body_kwargs, _ = body_selection(data, t.train_split, cfg, body is not None)
        shards = make_train_loader(
            data, cfg, micro_batch - k, rank, world_size, body_kwargs, device.type == "cuda"
        )
        if k == 0:
            return shards
    if body is None:
        from p2m.body import create

        b = cfg.model.body
        body = create(b.model, topology=b.topology, rig=b.rig, device=device)
    source = SyntheticSource(
        body,
        k,
        seed=t.seed * 1000 + rank,
        batches_per_epoch=syn.batches_per_epoch,
        poses=syn.poses,
        mirror_prob=syn.mirror_prob,
        random_camera_prob=syn.random_camera_prob,
        image_size=syn.image_size,
    )
    return source if shards is None else MixedSource(shards, source)


def has_split(data: str | Path | None, split: str | None) -> bool:
    """Whether the shard set's index lists ``split`` (False without shards)."""
    return data is not None and split is not None and split in load_index(data)["splits"]


def iter_eval_batches(
    data: str | Path,
    split: str,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    body_kwargs: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Every sample of ``split`` once, in index order, batched (the last batch may be smaller).

    The training reader with ``drop_last=False`` and no shuffling: shards are balanced over ranks by sample count;
    ``max_samples`` keeps the first samples of the split (in index order), whichever rank reads them.
    """
    loader = make_loader(
        str(data),
        split,
        batch_size,
        rank=rank,
        world_size=world_size,
        drop_last=False,
        shuffle_buffer=0,
        shuffle_shards=False,
        max_samples=max_samples,
        **dict(body_kwargs or NO_BODY),
    )
    yield from loader


def split_size(data: str | Path, split: str, max_samples: int | None = None) -> int:
    """Samples :func:`iter_eval_batches` visits over all ranks."""
    n = int(load_index(data)["splits"][split]["samples"])
    return n if max_samples is None else min(n, max_samples)


_KEY_ACTION = re.compile(r"^(?P<source>.*)_s\d{3,}_a(?P<action>\d{3,})_sa\d{3,}_c\d{4,}_f\d{6,}_p\d{2,}$")


def action_label(key: str) -> str:
    """A sample's action for per-action tables, from its key: the Human3.6M name where the source is Human3.6M,
    else the action index."""
    m = _KEY_ACTION.match(str(key))
    if m is None:
        return "-"
    act = int(m["action"])
    source = m["source"].lower().replace("-", "").replace("_", "")
    if ("h36m" in source or "human36m" in source) and act in H36M_ACTIONS:
        return H36M_ACTIONS[act]
    return str(act)
