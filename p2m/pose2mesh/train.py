"""`p2m train`: streaming Pose2Mesh training that resumes exactly, top to bottom like torchvision's reference.

``train_one_epoch`` -> ``evaluate`` -> ``fit(cfg, run_dir, data, resume=...)``. Ground-truth meshes are built from
the shards' body parameters on the training device a batch at a time (:mod:`p2m.pose2mesh.data`); the 2D error
model draws from a generator seeded by (seed, step, rank, micro-batch), dropout from torch's global RNG, whose
state is checkpointed per rank; the shard reader's position is checkpointed too. So ``--resume`` after a crash
continues with the same weights, optimizer and data as the run that was never interrupted (exact epochs, same
world size and workers). The shard reader's DataLoader draws a seed from torch's RNG each time it builds an
iterator; :func:`_first_batch` hides that draw, so a resumed run and an uninterrupted one stay in step.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from p2m.errors import CheckpointError, ConfigError
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh.config import Config, TrainConfig, from_dict, save_config, to_dict
from p2m.pose2mesh.data import BatchPreparer
from p2m.pose2mesh.distributed import DistInfo
from p2m.pose2mesh.evaluate import MetricAccumulator, autocast_context, evaluate_model
from p2m.pose2mesh.logging_utils import MetricLogger, MetricsWriter, epoch_table, format_seconds, read_metrics
from p2m.pose2mesh.model import Pose2MeshOutput
from p2m.pose2mesh.transforms import sample_rng

logger = logging.getLogger(__name__)

@dataclass
class Trainer:
    """Everything the loop touches (built by :func:`fit`)."""

    cfg: Config
    dist: DistInfo
    run_dir: Path
    data: str
    model: torch.nn.Module  # what runs forward: maybe DDP- and compile-wrapped
    model_without_ddp: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    loss_fn: torch.nn.Module
    loader: Any
    prep: BatchPreparer
    val_prep: BatchPreparer | None
    val_body_kwargs: dict[str, Any]
    metrics: MetricsWriter
    ddp: Any = None
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    init_posenet: str = ""
    keep_last: int = 0
    max_steps: int | None = None
    progress: bool | None = None
    stopped: bool = False
    first_step_s: float | None = None
    t_start: float = 0.0
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    mlog: MetricLogger | None = None
    resume_meters: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------------ the loop


def train_one_epoch(tr: Trainer, epoch: int) -> dict[str, float]:
    """Train until the epoch's batches (or ``max_steps``) run out; returns the epoch's average losses on this rank."""
    t = tr.cfg.train
    accum, loader = t.accum_steps, tr.loader
    remaining = len(loader) - loader.state.batch  # micro-batches left (fewer after a mid-epoch resume)
    if remaining <= 0:
        return {}
    tr.model.train()
    micro = loader.stream.batch_size
    mlog = tr.mlog = MetricLogger(math.ceil(remaining / accum), micro * accum * tr.dist.world_size)
    if tr.resume_meters:
        mlog.load_state_dict(tr.resume_meters)
        tr.resume_meters = None
    bar = _bar(tr, mlog.total_steps * mlog.samples_per_step, f"epoch {epoch}")
    it = iter(loader)
    first = True
    while remaining > 0 and not tr.stopped:
        group = min(accum, remaining)
        t0 = time.perf_counter()
        tr.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        data_s = 0.0
        for m in range(group):
            td = time.perf_counter()
            batch = _first_batch(it) if first else next(it)
            first, data_s = False, data_s + time.perf_counter() - td
            inp = tr.prep(batch, sample_rng(t.seed, 1, tr.step, tr.dist.rank, m))
            sync = tr.ddp is None or m == group - 1
            with nullcontext() if sync else tr.ddp.no_sync():
                with autocast_context(tr.dist.device, t.amp):
                    out = tr.model(inp.pose2d)
                losses = tr.loss_fn(_float(out), mesh=inp.mesh, joints=inp.joints, lifted=inp.lifted,
                                    mesh_valid=inp.mesh_valid, joints_valid=inp.joints_valid,
                                    lift_valid=inp.joints_valid, epoch=epoch)  # fmt: skip
                tr.scaler.scale(losses["total"] / group).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach()
        remaining -= group
        if t.grad_clip > 0:
            tr.scaler.unscale_(tr.optimizer)
            torch.nn.utils.clip_grad_norm_(tr.model_without_ddp.parameters(), t.grad_clip)
        tr.scaler.step(tr.optimizer)
        tr.scaler.update()
        tr.step += 1
        host = torch.stack([v.float() for v in sums.values()]).tolist()  # one device sync per step
        values = {("loss" if k == "total" else k): v / group for k, v in zip(sums, host)}
        mlog.update(**values, lr=tr.optimizer.param_groups[0]["lr"])
        mlog.step_done(data_s, time.perf_counter() - t0)
        if tr.first_step_s is None:
            tr.first_step_s = time.perf_counter() - tr.t_start
        bar.update(mlog.samples_per_step)
        _after_step(tr, epoch, mlog, bar)
    if not tr.stopped:
        next(it, None)  # let the reader close the epoch (its position moves to the next epoch)
    bar.close()
    return {k: v for k, v in mlog.averages().items() if k != "lr"}


def _first_batch(it: Any) -> Any:
    """The epoch's first batch, hiding the DataLoader's seed draw from torch's global RNG (see module docstring)."""
    state = torch.get_rng_state()
    batch = next(it)
    torch.set_rng_state(state)
    return batch


def _float(out: Pose2MeshOutput) -> Pose2MeshOutput:
    return Pose2MeshOutput(*(None if x is None else x.float() for x in out))


def _after_step(tr: Trainer, epoch: int, mlog: MetricLogger, bar: Any) -> None:
    """Log every ``log_every`` steps, checkpoint every ``ckpt_every_steps``, stop at ``max_steps``."""
    t = tr.cfg.train
    if tr.step % t.log_every == 0:
        row = {"kind": "train", "step": tr.step, "epoch": epoch,
               **{k: m.median for k, m in mlog.meters.items()}, "samples_per_s": mlog.rate(), "time": time.time()}  # fmt: skip
        tr.metrics.write(row)
        if bar.disable and tr.dist.is_main:
            logger.info("epoch %d step %d  %s", epoch, tr.step, mlog)
        else:
            bar.set_postfix(loss=f"{mlog.meters['loss'].median:.4g}", lr=f"{mlog.meters['lr'].median:.2g}")
    hit_max = tr.max_steps is not None and tr.step >= tr.max_steps
    if hit_max or (t.ckpt_every_steps and tr.step % t.ckpt_every_steps == 0):
        save(tr, epoch, epoch_done=False)
    if hit_max:
        logger.info("stopping at step %d (--max-steps); continue with --resume", tr.step)
        tr.stopped = True


def _bar(tr: Trainer, total: int, desc: str) -> Any:
    from tqdm import tqdm

    disable = (not tr.dist.is_main) or (tr.progress is False) or (None if tr.progress is None else False)
    return tqdm(total=total, desc=desc, unit=" samples", unit_scale=True, disable=disable, mininterval=0.5,
                smoothing=0.1, dynamic_ncols=True)  # fmt: skip


def evaluate(tr: Trainer, epoch: int) -> dict[str, Any]:
    """Validation metrics (mm) over the whole validation split, reduced over ranks."""
    from p2m.pose2mesh.data import iter_eval_batches, split_size
    from p2m.pose2mesh.distributed import all_gather_object

    t = tr.cfg.train
    assert tr.val_prep is not None and t.val_split is not None
    batches = iter_eval_batches(tr.data, t.val_split, t.val_batch_size, rank=tr.dist.rank,
                                world_size=tr.dist.world_size, body_kwargs=tr.val_body_kwargs,
                                max_samples=t.val_max_samples)  # fmt: skip
    acc = evaluate_model(tr.model_without_ddp, batches, tr.val_prep, amp=t.amp,
                         progress=False if not tr.dist.is_main else tr.progress, desc=f"val {epoch}")  # fmt: skip
    states = all_gather_object(tr.dist, acc.state())
    summary = MetricAccumulator.summarize(states, with_mesh=tr.val_prep.body is not None)
    expected = split_size(tr.data, t.val_split, t.val_max_samples)
    if summary["samples"] != expected:
        logger.warning("validation scored %d samples of %d (the others have no 3D joints)", summary["samples"], expected)
    return summary


def save(tr: Trainer, epoch: int, *, epoch_done: bool, best: bool = False) -> None:
    """Checkpoint (a collective: RNG states come from every rank; rank 0 writes)."""
    from p2m.pose2mesh.distributed import all_gather_object

    ranks = all_gather_object(tr.dist, {"rng": ckpt.rng_state(), "step": tr.step, "batch": tr.loader.state.batch})
    if len({(r["step"], r["batch"]) for r in ranks}) > 1:
        raise RuntimeError(f"ranks are out of step at a checkpoint: {[(r['step'], r['batch']) for r in ranks]}")
    if not tr.dist.is_main:
        return
    rngs = [r["rng"] for r in ranks]
    state = {
        "format": ckpt.FORMAT, "version": ckpt.VERSION, "p2m_version": _version(), "torch_version": str(torch.__version__),
        "model": tr.model_without_ddp.state_dict(), "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(), "scaler": tr.scaler.state_dict(),
        "rng": {"per_rank": rngs, "rank_steps": [r["step"] for r in ranks]},
        "epoch": epoch, "epoch_done": epoch_done, "step": tr.step, "data": tr.loader.state_dict(),
        "best": dict(tr.best), "config": to_dict(tr.cfg), "world_size": tr.dist.world_size,
        "init_posenet": tr.init_posenet,
        "meters": tr.mlog.state_dict() if tr.mlog is not None and not epoch_done else {},
    }  # fmt: skip
    meta = {"metric": str(tr.best.get("metric")), "value": str(tr.best.get("value"))}
    ckpt.save_checkpoint(tr.run_dir, state, best=best, keep_last=tr.keep_last, weights_metadata=meta)
    tr.metrics.sync()


def _version() -> str:
    from p2m import __version__

    return __version__


# ------------------------------------------------------------------------------------------------ set-up


def build_optimizer(params: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """RMSprop (the original), Adam, AdamW or SGD with momentum, from ``train``."""
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    raise ConfigError(f"train.optimizer {t.optimizer!r}: only rmsprop, adam, adamw and sgd are supported")


def build_scheduler(optimizer: torch.optim.Optimizer, t: TrainConfig) -> Any:
    """Per-epoch schedule: multistep (the original), cosine to 0 over ``epochs``, or constant."""
    sched = torch.optim.lr_scheduler
    if t.scheduler == "multistep":
        return sched.MultiStepLR(optimizer, milestones=list(t.lr_steps), gamma=t.lr_factor)
    if t.scheduler == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=t.epochs)
    if t.scheduler == "constant":
        return sched.MultiStepLR(optimizer, milestones=[], gamma=1.0)
    raise ConfigError(f"train.scheduler {t.scheduler!r}: only multistep, cosine and constant are supported")


def _unused_parameters(cfg: Config) -> bool:
    """Whether DDP must look for parameters that get no gradient (a stage trained by no loss term)."""
    c = cfg.loss
    if cfg.model.stage != "pose2mesh":
        return False
    return c.lift == 0 or (c.vertex == 0 and c.normal == 0 and c.edge == 0 and c.joint == 0)


def _micro_batch(t: TrainConfig, world_size: int) -> int:
    per = t.batch_size / (world_size * t.accum_steps)
    if per != int(per) or per < 1:
        raise ConfigError(
            f"train.batch_size {t.batch_size} does not split into {world_size} ranks x {t.accum_steps} accumulation "
            "steps; choose a batch size divisible by world_size * accum_steps"
        )
    return int(per)


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ fit


def fit(
    cfg: Config, run_dir: str | Path, data: str | Path, *, resume: bool = False, device: str = "auto",
    init_posenet: str | Path | None = None, keep_last: int = 0, max_steps: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train a Pose2Mesh (or PoseNet) run from shards; the entry of ``p2m train``.

    Under torchrun (RANK / WORLD_SIZE set) every process calls this; rank 0 alone writes.

    Args:
        cfg: the resolved config (saved as ``RUN/config.yaml``).
        run_dir: the run folder (Contract 3).
        data: the shard folder (or its index.json) with ``train.train_split`` (and ``train.val_split``).
        resume: continue from ``RUN/checkpoints/last.pt`` (refused when ``cfg`` differs from the run's config,
            except :data:`p2m.pose2mesh.checkpoint.RESUME_MAY_CHANGE`); without a checkpoint the run starts from the beginning.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        init_posenet: a PoseNet run folder or checkpoint whose weights start ``model.posenet`` (fresh runs only).
        keep_last: also keep the K newest ``checkpoints/step-*.pt`` snapshots.
        max_steps: stop (after a checkpoint) once the global step reaches this; ``--resume`` continues.
        progress: show progress bars (None: on a terminal).

    Returns:
        ``{"run", "step", "epoch", "stopped", "best", "val", "samples_per_s", "first_step_s", "seconds",
        "checkpoint_bytes", "table"}``.

    Raises:
        ConfigError: an unsupported config. CheckpointError: an unusable run folder or checkpoint, a config that
        differs on resume, too little free disk. ShardError: unusable shards.
    """
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    from p2m.pose2mesh import distributed as D
    from p2m.pose2mesh.data import check_supported

    t_start = time.perf_counter()
    check_supported(cfg)
    if keep_last < 0:
        raise ConfigError(f"--keep-last {keep_last}: expected >= 0")
    dist = D.init_distributed(device)
    filt = D.quiet_non_main(dist)
    try:
        return _fit(cfg, Path(run_dir), str(data), dist, resume=resume, init_posenet=init_posenet,
                    keep_last=keep_last, max_steps=max_steps, progress=progress, t_start=t_start)  # fmt: skip
    finally:
        D.remove_filter(filt)
        D.cleanup(dist)


def _fit(cfg: Config, run: Path, data: str, dist: DistInfo, *, resume: bool, init_posenet: str | Path | None,
         keep_last: int, max_steps: int | None, progress: bool | None, t_start: float) -> dict[str, Any]:  # fmt: skip
    from torch.nn.parallel import DistributedDataParallel

    from p2m.pose2mesh import distributed as D
    from p2m.pose2mesh.data import body_selection, has_split, make_train_loader
    from p2m.pose2mesh.losses import Pose2MeshLoss
    from p2m.pose2mesh.model import build_model

    t, dev = cfg.train, dist.device
    micro = _micro_batch(t, dist.world_size)
    paths = ckpt.run_paths(run)
    state = ckpt.prepare_run(run, cfg, resume)
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temps(run)
        save_config(cfg, paths["config"])
    D.barrier(dist)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")
    elif t.amp not in ("auto", "off"):
        logger.info("train.amp %r applies to CUDA only; training in float32 on %s", t.amp, dev)
    _seed_all(t.seed)  # the same initial weights on every rank
    body = None
    if cfg.model.stage == "pose2mesh":
        from p2m.body import create

        body = create(cfg.model.body.model, topology=cfg.model.body.topology, rig=cfg.model.body.rig)
    model = build_model(cfg, body=body)
    init_src = ckpt.load_posenet(model, init_posenet) if init_posenet and state is None else ""
    model.to(dev)
    body = None if body is None else body.to(dev)
    loss_fn = Pose2MeshLoss(cfg.loss, faces=None if body is None else body.faces).to(dev)
    optimizer = build_optimizer(model.parameters(), t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(dev.type, enabled=t.amp == "fp16" and dev.type == "cuda")
    train_body, _ = body_selection(data, t.train_split, cfg, body is not None)
    loader = make_train_loader(data, cfg, micro, dist.rank, dist.world_size, train_body, dev.type == "cuda")
    validate = has_split(data, t.val_split)
    if t.val_split and not validate:
        logger.warning("the shards have no split %r: no validation, so no best.pt", t.val_split)
    val_body = body_selection(data, t.val_split, cfg, body is not None)[0] if validate else {}
    tr = Trainer(cfg, dist, run, data, model, model, optimizer, scheduler, scaler, loss_fn, loader,
                 BatchPreparer(cfg, body, dev, train=True),
                 BatchPreparer(cfg, body, dev, train=False, eval_input=t.val_input, eval_seed=0) if validate else None,
                 val_body, MetricsWriter(paths["metrics"], enabled=dist.is_main), init_posenet=init_src,
                 keep_last=keep_last, max_steps=max_steps, progress=progress, t_start=t_start)  # fmt: skip
    tr.best = {"metric": t.best_metric, "value": None, "epoch": None, "step": None}
    start_epoch, rng = 0, None
    if state is not None:
        start_epoch, rng = _restore(tr, state, paths)
    torch.manual_seed(t.seed + dist.rank)  # dropout differs between ranks (replaced by the saved state on resume)
    if dist.distributed:
        tr.ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                         find_unused_parameters=_unused_parameters(cfg))  # fmt: skip
        tr.model = tr.ddp
    if t.compile:
        tr.model = torch.compile(tr.model)
    logger.info("training %s on %s: %d rank(s) x %d micro-batch x %d accumulation = batch %d; %d batches/epoch/rank",
                cfg.model.stage, dev, dist.world_size, micro, t.accum_steps, t.batch_size, len(loader))  # fmt: skip
    if rng is not None:
        ckpt.set_rng_state(rng)  # the last thing before the first step
    summary: dict[str, Any] | None = None
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, t.epochs):
            summary = _run_epoch(tr, epoch, validate) or summary
            if tr.stopped:
                break
    finally:
        tr.metrics.close()
    table = epoch_table(tr.epoch_rows)
    return {
        "run": str(run), "step": tr.step, "epoch": epoch, "stopped": tr.stopped, "best": dict(tr.best),
        "val": summary, "first_step_s": tr.first_step_s, "seconds": round(time.perf_counter() - t_start, 2),
        "checkpoint_bytes": ckpt.disk_usage(run) if dist.is_main else None, "table": table,
    }  # fmt: skip


def _restore(tr: Trainer, state: dict[str, Any], paths: dict[str, Path]) -> tuple[int, dict[str, Any] | None]:
    """Load a checkpoint into the trainer; returns (first epoch to run, this rank's RNG state)."""
    try:
        tr.model_without_ddp.load_state_dict(state["model"])
        tr.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{paths['last']}: does not fit the model/optimizer of its config: {exc}") from exc
    tr.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        tr.scaler.load_state_dict(state["scaler"])
    tr.step, tr.best, tr.init_posenet = int(state["step"]), dict(state["best"]), state["init_posenet"]
    tr.loader.load_state_dict(state["data"])
    tr.resume_meters = dict(state["meters"]) or None
    dropped = tr.metrics.truncate_after(tr.step)
    tr.epoch_rows = [r for r in read_metrics(paths["metrics"]) if r.get("kind") == "epoch"]
    per_rank = state["rng"]["per_rank"]
    rng = per_rank[tr.dist.rank] if tr.dist.rank < len(per_rank) else None
    if state["world_size"] != tr.dist.world_size:
        logger.warning("resuming a %d-rank run on %d ranks: data order and dropout masks differ from the saved run",
                       state["world_size"], tr.dist.world_size)  # fmt: skip
    epoch = int(state["epoch"]) + (1 if state["epoch_done"] else 0)
    logger.info("resuming from %s: step %d, epoch %d%s; best %s %s; %d metric rows after the checkpoint dropped",
                paths["last"], tr.step, epoch, "" if state["epoch_done"] else " (part-way)", tr.best.get("metric"),
                tr.best.get("value"), dropped)  # fmt: skip
    return epoch, rng


def _run_epoch(tr: Trainer, epoch: int, validate: bool) -> dict[str, Any] | None:
    """One epoch: train, step the schedule, validate, log, checkpoint (best.pt on improvement)."""
    from p2m.pose2mesh.distributed import all_gather_object

    t = tr.cfg.train
    t0 = time.perf_counter()
    lr = tr.optimizer.param_groups[0]["lr"]
    avgs = train_one_epoch(tr, epoch)
    if tr.stopped:
        return None
    tr.scheduler.step()
    summary = None
    if validate and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs):
        summary = evaluate(tr, epoch)
    improved = False
    if summary is not None:
        value = summary.get(t.best_metric)
        if value is not None and (tr.best.get("value") is None or value < tr.best["value"]):
            tr.best = {"metric": t.best_metric, "value": float(value), "epoch": epoch, "step": tr.step}
            improved = True
        scalars = {k: v for k, v in summary.items() if k != "per_action"}
        tr.metrics.write({"kind": "val", "step": tr.step, "epoch": epoch, "split": t.val_split, **scalars})
    parts = [a for a in all_gather_object(tr.dist, avgs) if a]
    train_avg = {k: sum(p[k] for p in parts) / len(parts) for k in (parts[0] if parts else {})}
    row = {"kind": "epoch", "step": tr.step, "epoch": epoch, "lr": lr, **train_avg,
           **{k: v for k, v in (summary or {}).items() if k != "per_action"}, "seconds": time.perf_counter() - t0}  # fmt: skip
    tr.metrics.write(row)
    tr.epoch_rows.append(row)
    if tr.dist.is_main:
        val_text = "" if summary is None else "  " + "  ".join(
            f"{k} {summary[k]:.1f}" for k in ("mpjpe", "pa_mpjpe", "mpvpe") if summary.get(k) is not None)  # fmt: skip
        logger.info("epoch %d done: step %d, loss %.4g, %s%s%s", epoch, tr.step, train_avg.get("loss", float("nan")),
                    format_seconds(row["seconds"]), val_text, "  (best)" if improved else "")  # fmt: skip
    save(tr, epoch, epoch_done=True, best=improved)
    return summary


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved config of a run (``RUN/config.yaml``)."""
    from p2m.pose2mesh.config import load_config

    path = ckpt.run_paths(run_dir)["config"]
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no config.yaml (not a p2m run folder); pass --config")
    return load_config(path)


def config_from_checkpoint(state: dict[str, Any]) -> Config:
    """The :class:`Config` stored in a checkpoint."""
    return from_dict(Config, state["config"])


__all__ = ["Trainer", "build_optimizer", "build_scheduler", "evaluate", "fit", "train_one_epoch"]
