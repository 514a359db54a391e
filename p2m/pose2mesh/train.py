"""`p2m train`: streaming Pose2Mesh training that resumes exactly, top to bottom like torchvision's reference.

``train_one_epoch`` -> ``evaluate`` -> ``train(cfg, run_dir, data, resume=...)``. Ground-truth meshes are built from
the batches' body parameters on the training device a batch at a time, and so are the 2D inputs
(:mod:`p2m.pose2mesh.data`); the 2D noise of a sample is seeded by (seed, step, rank, micro-batch, row), dropout
comes from torch's global RNG, whose state is checkpointed per rank; the data source's position is checkpointed
too. So ``--resume`` after a crash continues with the same weights, optimizer and data as the run that was never
interrupted (exact epochs, same world size and workers). The shard reader's DataLoader draws a seed from torch's
RNG each time it builds an iterator; :func:`_first_batch` hides that draw, so a resumed run and an uninterrupted
one stay in step.

The data source is any iterable of batches (the batch contract of :func:`p2m.shards.collate.collate`) with
``len()`` (batches per epoch), ``state_dict()`` (``{"epoch", "batch", ...}``: the position, ``batch`` counting
the batches of the current epoch already handed out) and ``load_state_dict()``; iterating it yields the rest of
the current epoch. :class:`p2m.shards.read.ShardLoader` is one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from p2m.errors import CheckpointError, ConfigError
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh import distributed as D
from p2m.pose2mesh.config import Config, TrainConfig, save_config
from p2m.pose2mesh.data import (
    BatchPreparer,
    body_selection,
    check_supported,
    has_split,
    iter_eval_batches,
    make_train_source,
    split_size,
)
from p2m.pose2mesh.distributed import DistInfo, autocast_context
from p2m.pose2mesh.evaluate import MetricAccumulator, evaluate_model
from p2m.pose2mesh.logging_utils import MetricLogger, MetricsWriter, epoch_table, format_seconds, read_metrics
from p2m.pose2mesh.losses import Pose2MeshLoss
from p2m.pose2mesh.model import Pose2MeshOutput, build_model
from p2m.pose2mesh.sinks import check_available, open_sinks
from p2m.pose2mesh.transforms import batch_seeds

logger = logging.getLogger(__name__)

#: ``after_step(step, meters, bar) -> stop``: called after every optimizer step (logging, checkpoints, max steps).
AfterStep = Callable[[int, MetricLogger, Any], bool]


@dataclass
class EpochResult:
    """What :func:`train_one_epoch` did: the global step it reached, the epoch's average losses on this rank, and
    whether ``after_step`` asked to stop."""

    step: int
    averages: dict[str, float]
    stopped: bool


# ------------------------------------------------------------------------------------------------ the loop


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    device: torch.device,
    epoch: int,
    *,
    prepare: BatchPreparer,
    scaler: Any,
    cfg: TrainConfig,
    step: int,
    rank: int = 0,
    meters: Mapping[str, Any] | None = None,
    after_step: AfterStep | None = None,
    progress: bool | None = None,
) -> EpochResult:
    """Train on the rest of the loader's epoch (``cfg.accum_steps`` micro-batches per optimizer step).

    Args:
        model: what runs forward (maybe DDP- and compile-wrapped); criterion: the loss module.
        optimizer, scaler: the optimizer and its ``torch.amp.GradScaler``.
        loader: the data source (module docstring); device: the training device; epoch: the epoch index.
        prepare: turns a batch into network inputs and targets on ``device``.
        cfg: the ``train`` config (seed, accumulation, clipping, amp, global batch size).
        step: the global optimizer step so far; rank: this process's rank (seeds the 2D noise).
        meters: running meters of a resumed part-done epoch.
        after_step: see :data:`AfterStep`.
        progress: show a progress bar (None: on a terminal).
    """
    remaining = len(loader) - int(loader.state_dict()["batch"])  # fewer after a mid-epoch resume
    if remaining <= 0:
        return EpochResult(step, {}, False)
    model.train()
    accum = cfg.accum_steps
    mlog = MetricLogger(math.ceil(remaining / accum), cfg.batch_size)
    if meters:
        mlog.load_state_dict(meters)
    no_sync = getattr(model, "no_sync", None)  # DDP: reduce gradients once per optimizer step
    bar = _bar(progress, mlog.total_steps * mlog.samples_per_step, f"epoch {epoch}")
    it, first, stopped = iter(loader), True, False
    while remaining > 0 and not stopped:
        group = min(accum, remaining)
        t0, data_s = time.perf_counter(), 0.0
        progress_epoch = epoch + (len(loader) - remaining) / len(loader)  # fractional: loss ramps
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for m in range(group):
            td = time.perf_counter()
            batch = _first_batch(it) if first else next(it)
            first, data_s = False, data_s + time.perf_counter() - td
            inp = prepare(batch, batch_seeds(len(batch["key"]), cfg.seed, 1, step, rank, m, device=device))
            with nullcontext() if no_sync is None or m == group - 1 else no_sync():
                with autocast_context(device, cfg.amp):
                    out = model(inp.pose2d)
                losses = criterion(
                    _float(out),
                    mesh=inp.mesh,
                    joints=inp.joints,
                    lifted=inp.lifted,
                    mesh_valid=inp.mesh_valid,
                    joints_valid=inp.joints_valid,
                    lift_valid=inp.joints_valid,
                    epoch=progress_epoch,
                )
                scaler.scale(losses["total"] / group).backward()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach()
        remaining -= group
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        host = torch.stack([v.float() for v in sums.values()]).tolist()  # one device sync per step
        mlog.update(
            **{("loss" if k == "total" else k): v / group for k, v in zip(sums, host, strict=True)},
            lr=optimizer.param_groups[0]["lr"],
        )
        mlog.step_done(data_s, time.perf_counter() - t0)
        bar.update(mlog.samples_per_step)
        stopped = after_step(step, mlog, bar) if after_step is not None else False
    if not stopped:
        next(it, None)  # let the source close the epoch (its position moves to the next epoch)
    bar.close()
    return EpochResult(step, {k: v for k, v in mlog.averages().items() if k != "lr"}, stopped)


def _first_batch(it: Any) -> Any:
    """The epoch's first batch, hiding the DataLoader's seed draw from torch's global RNG (see module docstring)."""
    state = torch.get_rng_state()
    batch = next(it)
    torch.set_rng_state(state)
    return batch


def _float(out: Pose2MeshOutput) -> Pose2MeshOutput:
    return Pose2MeshOutput(*(None if x is None else x.float() for x in out))


def _bar(progress: bool | None, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=" samples",
        unit_scale=True,
        disable=None if progress is None else not progress,
        mininterval=0.5,
        smoothing=0.1,
        dynamic_ncols=True,
    )


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    prepare: BatchPreparer,
    dist: DistInfo,
    *,
    amp: str = "off",
    expected: int | None = None,
    progress: bool | None = None,
    desc: str = "val",
) -> dict[str, Any]:
    """Validation metrics (mm) of this rank's ``batches``, reduced over ranks (a collective)."""
    acc = evaluate_model(
        model, batches, prepare, amp=amp, progress=progress if dist.is_main else False, desc=desc
    )
    states = D.all_gather_object(dist, acc.state())
    summary = MetricAccumulator.summarize(states, with_mesh=prepare.body is not None)
    if expected is not None and summary["samples"] != expected:
        logger.warning(
            "validation scored %d samples of %d (the others have no 3D joints)", summary["samples"], expected
        )
    return summary


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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ train


@dataclass
class _RunState:
    """What changes while a run goes: global step, best metric, epoch rows, the time of the first step."""

    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    init_posenet: str = ""
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    first_step_s: float | None = None


def train(
    cfg: Config,
    run_dir: str | Path,
    data: str | Path | None,
    *,
    resume: bool = False,
    device: str = "auto",
    init_posenet: str | Path | None = None,
    keep_last: int = 0,
    max_steps: int | None = None,
    progress: bool | None = None,
    loggers: Sequence[str] = (),
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train a Pose2Mesh (or PoseNet) run from shards; the entry of ``p2m train``.

    Under torchrun (RANK / WORLD_SIZE set) every process calls this; rank 0 alone writes.

    Args:
        cfg: the resolved config (saved as ``RUN/config.yaml``).
        run_dir: the run folder (Contract 3).
        data: the shard folder (or its index.json) with ``train.train_split`` (and ``train.val_split``); None when
            every training batch is synthetic (``synthetic.ratio: 1``; then there is no validation).
        resume: continue from ``RUN/checkpoints/last.pt`` (refused when ``cfg`` differs from the run's config,
            except :data:`p2m.pose2mesh.checkpoint.RESUME_MAY_CHANGE`); without a checkpoint the run starts from
            the beginning.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        init_posenet: a PoseNet run folder or checkpoint whose weights start ``model.posenet`` (fresh runs only).
        init: a run folder, checkpoint or ``default`` (the shipped model) whose weights start the whole model
            (fine-tuning; fresh runs only).
        keep_last: also keep the K newest ``checkpoints/step-*.pt`` snapshots.
        max_steps: stop (after a checkpoint) once the global step reaches this; ``--resume`` continues.
        progress: show progress bars (None: on a terminal).
        loggers: extra sinks of metrics.jsonl's rows: "tensorboard" (``RUN/tensorboard/``), "csv"
            (``RUN/metrics_{kind}.csv``); see :mod:`p2m.pose2mesh.sinks`.

    Returns:
        ``{"run", "step", "epoch", "stopped", "best", "val", "samples_per_s", "first_step_s", "seconds",
        "checkpoint_bytes", "table"}``.

    Raises:
        ConfigError: an unsupported config. CheckpointError: an unusable run folder or checkpoint, a config that
        differs on resume, too little free disk. ShardError: unusable shards.
    """
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    t_start = time.perf_counter()
    check_supported(cfg)
    if keep_last < 0:
        raise ConfigError(f"--keep-last {keep_last}: expected >= 0")
    check_available(loggers)
    data = None if data is None else data_location(data)
    if (
        data is not None and cfg.train.data != data
    ):  # the run's config records its shards: --resume needs no --data
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data=data))
    dist = D.init_distributed(device)
    filt = D.quiet_non_main(dist)
    try:
        return _train(
            cfg,
            Path(run_dir),
            None if data is None else str(data),
            dist,
            resume=resume,
            init=init,
            init_posenet=init_posenet,
            keep_last=keep_last,
            max_steps=max_steps,
            progress=progress,
            t_start=t_start,
            loggers=loggers,
        )
    finally:
        D.remove_filter(filt)
        D.cleanup(dist)


def data_location(data: str | Path) -> str:
    """A local shard folder or index as an absolute path (a resume may start elsewhere); URLs as given."""
    text = str(data)
    return text if "://" in text or text.startswith("pipe:") else str(Path(text).resolve())


def _train(
    cfg: Config,
    run: Path,
    data: str | None,
    dist: DistInfo,
    *,
    resume: bool,
    init: str | Path | None,
    init_posenet: str | Path | None,
    keep_last: int,
    max_steps: int | None,
    progress: bool | None,
    t_start: float,
    loggers: Sequence[str],
) -> dict[str, Any]:
    t, dev = cfg.train, dist.device
    micro = _micro_batch(t, dist.world_size)
    paths = ckpt.run_paths(run)
    saved = ckpt.prepare_run(run, cfg, resume)
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
    state = _RunState(best={"metric": t.best_metric, "value": None, "epoch": None, "step": None})
    state.init_posenet = ckpt.load_posenet(model, init_posenet) if init_posenet and saved is None else ""
    if init and saved is None:
        state.init_posenet = ckpt.load_init(model, init)
    model.to(dev)
    body = None if body is None else body.to(dev)
    criterion = Pose2MeshLoss(cfg.loss, faces=None if body is None else body.faces).to(dev)
    optimizer = build_optimizer(model.parameters(), t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler(dev.type, enabled=t.amp == "fp16" and dev.type == "cuda")
    loader = make_train_source(data, cfg, micro, dist.rank, dist.world_size, body, dev)
    validate = has_split(data, t.val_split)
    if t.val_split and not validate:
        logger.warning("the shards have no split %r: no validation, so no best.pt", t.val_split)
    val_body = body_selection(data, t.val_split, cfg, body is not None)[0] if validate else {}
    prepare = BatchPreparer(cfg, body, dev, train=True)
    val_prepare = BatchPreparer(cfg, body, dev, train=False, eval_input=t.val_input, eval_seed=0)
    metrics = MetricsWriter(paths["metrics"], enabled=dist.is_main)
    start_epoch, rng, meters = 0, None, None
    if saved is not None:
        start_epoch, rng, meters = _restore(
            saved, model, optimizer, scheduler, scaler, loader, metrics, state, dist, paths["last"]
        )
    if dist.is_main and loggers:  # after _restore: the sinks mirror the record as truncated to the checkpoint
        resumed = saved is not None
        metrics.sinks = open_sinks(
            loggers, run, read_metrics(metrics.path) if resumed else None, state.step if resumed else None
        )
    # A checkpoint taken after an epoch's last step but before its end (--max-steps there): only the end is left.
    # The data source's position has already moved to the next epoch, so it must not train that epoch again.
    end_only = (
        saved is not None and not saved["epoch_done"] and int(saved["data"].get("batch", 0)) >= len(loader)
    )
    torch.manual_seed(
        t.seed + dist.rank
    )  # dropout differs between ranks (replaced by the saved state on resume)
    forward = model
    if dist.distributed:
        forward = DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=_unused_parameters(cfg),
        )
    if t.compile:
        forward = torch.compile(forward)
    logger.info(
        "training %s on %s: %d rank(s) x %d micro-batch x %d accumulation = batch %d; %d batches/epoch/rank",
        cfg.model.stage,
        dev,
        dist.world_size,
        micro,
        t.accum_steps,
        t.batch_size,
        len(loader),
    )

    def checkpoint(
        epoch: int, *, epoch_done: bool, best: bool = False, mlog: MetricLogger | None = None
    ) -> None:
        """A collective: RNG states come from every rank; rank 0 writes."""
        ranks = D.all_gather_object(
            dist, {"rng": ckpt.rng_state(), "step": state.step, "batch": loader.state_dict()["batch"]}
        )
        if len({(r["step"], r["batch"]) for r in ranks}) > 1:
            raise RuntimeError(
                f"ranks are out of step at a checkpoint: {[(r['step'], r['batch']) for r in ranks]}"
            )
        if not dist.is_main:
            return
        full = ckpt.build_state(
            model,
            optimizer,
            scheduler,
            scaler,
            config=cfg,
            epoch=epoch,
            epoch_done=epoch_done,
            step=state.step,
            rng={"per_rank": [r["rng"] for r in ranks], "rank_steps": [r["step"] for r in ranks]},
            data=loader.state_dict(),
            best=state.best,
            world_size=dist.world_size,
            init_posenet=state.init_posenet,
            meters=mlog.state_dict() if mlog is not None and not epoch_done else {},
        )
        meta = {"metric": str(state.best.get("metric")), "value": str(state.best.get("value"))}
        ckpt.save_checkpoint(run, full, best=best, keep_last=keep_last, weights_metadata=meta)
        metrics.sync()

    epoch = start_epoch

    def after_step(step: int, mlog: MetricLogger, bar: Any) -> bool:
        """Log every ``log_every`` steps, checkpoint every ``ckpt_every_steps``; True (stop) at ``max_steps``."""
        state.step = step
        if state.first_step_s is None:
            state.first_step_s = time.perf_counter() - t_start
        if step % t.log_every == 0:
            metrics.write(
                {
                    "kind": "train",
                    "step": step,
                    "epoch": epoch,
                    **{k: m.median for k, m in mlog.meters.items()},
                    "samples_per_s": mlog.rate(),
                    "time": time.time(),
                }
            )
            if bar.disable and dist.is_main:
                logger.info("epoch %d step %d  %s", epoch, step, mlog)
            else:
                bar.set_postfix(
                    loss=f"{mlog.meters['loss'].median:.4g}", lr=f"{mlog.meters['lr'].median:.2g}"
                )
        hit_max = max_steps is not None and step >= max_steps
        if hit_max or (t.ckpt_every_steps and step % t.ckpt_every_steps == 0):
            checkpoint(epoch, epoch_done=False, mlog=mlog)
        if hit_max:
            logger.info("stopping at step %d (--max-steps); continue with --resume", step)
        return hit_max

    if rng is not None:
        ckpt.set_rng_state(rng)  # the last thing before the first step
    summary: dict[str, Any] | None = None
    stopped = False
    try:
        for epoch in range(start_epoch, t.epochs):  # noqa: B007 - after_step reads it
            t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
            if end_only:
                res, end_only = EpochResult(state.step, _meter_averages(meters, t), False), False
            else:
                res = train_one_epoch(
                    forward,
                    criterion,
                    optimizer,
                    loader,
                    dev,
                    epoch,
                    prepare=prepare,
                    scaler=scaler,
                    cfg=t,
                    step=state.step,
                    rank=dist.rank,
                    meters=meters,
                    after_step=after_step,
                    progress=progress if dist.is_main else False,
                )
            state.step, meters = res.step, None
            if res.stopped:
                stopped = True
                break
            scheduler.step()
            val = None
            if validate and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs):
                assert t.val_split is not None
                batches = iter_eval_batches(
                    data,
                    t.val_split,
                    t.val_batch_size,
                    rank=dist.rank,
                    world_size=dist.world_size,
                    body_kwargs=val_body,
                    max_samples=t.val_max_samples,
                )
                val = evaluate(
                    model,
                    batches,
                    val_prepare,
                    dist,
                    amp=t.amp,
                    progress=progress,
                    desc=f"val {epoch}",
                    expected=split_size(data, t.val_split, t.val_max_samples),
                )
            improved = _end_epoch(epoch, res, val, lr, time.perf_counter() - t0, state, metrics, dist, t)
            checkpoint(epoch, epoch_done=True, best=improved)
            summary = val or summary
    finally:
        metrics.close()
    return {
        "run": str(run),
        "step": state.step,
        "epoch": epoch,
        "stopped": stopped,
        "best": dict(state.best),
        "val": summary,
        "first_step_s": state.first_step_s,
        "seconds": round(time.perf_counter() - t_start, 2),
        "checkpoint_bytes": ckpt.disk_usage(run) if dist.is_main else None,
        "table": epoch_table(state.epoch_rows),
    }


def _meter_averages(meters: Mapping[str, Any] | None, t: TrainConfig) -> dict[str, float]:
    """The epoch's average losses from the meters saved with a part-done epoch (empty without them)."""
    if not meters:
        return {}
    mlog = MetricLogger(1, t.batch_size)
    mlog.load_state_dict(meters)
    return {k: v for k, v in mlog.averages().items() if k != "lr"}


def _end_epoch(
    epoch: int,
    res: EpochResult,
    val: dict[str, Any] | None,
    lr: float,
    seconds: float,
    state: _RunState,
    metrics: MetricsWriter,
    dist: DistInfo,
    t: TrainConfig,
) -> bool:
    """Update the best metric and write the epoch's rows; returns whether validation improved."""
    improved = False
    if val is not None:
        value = val.get(t.best_metric)
        if value is not None and (state.best.get("value") is None or value < state.best["value"]):
            state.best = {"metric": t.best_metric, "value": float(value), "epoch": epoch, "step": state.step}
            improved = True
        scalars = {k: v for k, v in val.items() if k != "per_action"}
        metrics.write({"kind": "val", "step": state.step, "epoch": epoch, "split": t.val_split, **scalars})
    parts = [a for a in D.all_gather_object(dist, res.averages) if a]
    train_avg = {k: sum(p[k] for p in parts) / len(parts) for k in (parts[0] if parts else {})}
    row = {
        "kind": "epoch",
        "step": state.step,
        "epoch": epoch,
        "lr": lr,
        **train_avg,
        **{k: v for k, v in (val or {}).items() if k != "per_action"},
        "seconds": seconds,
    }
    metrics.write(row)
    state.epoch_rows.append(row)
    if dist.is_main:
        val_text = (
            ""
            if val is None
            else "  "
            + "  ".join(f"{k} {val[k]:.1f}" for k in ("mpjpe", "pa_mpjpe", "mpvpe") if val.get(k) is not None)
        )
        logger.info(
            "epoch %d done: step %d, loss %.4g, %s%s%s",
            epoch,
            state.step,
            train_avg.get("loss", float("nan")),
            format_seconds(seconds),
            val_text,
            "  (best)" if improved else "",
        )
    return improved


def _restore(
    saved: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    loader: Any,
    metrics: MetricsWriter,
    state: _RunState,
    dist: DistInfo,
    where: Path,
) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None]:
    """Load a checkpoint; returns (first epoch to run, this rank's RNG state, meters of a part-done epoch)."""
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: does not fit the model/optimizer of its config: {exc}") from exc
    scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    state.step, state.best, state.init_posenet = (
        int(saved["step"]),
        dict(saved["best"]),
        saved["init_posenet"],
    )
    loader.load_state_dict(saved["data"])
    dropped = metrics.truncate_after(state.step)
    state.epoch_rows = [r for r in read_metrics(metrics.path) if r.get("kind") == "epoch"]
    per_rank = saved["rng"]["per_rank"]
    rng = per_rank[dist.rank] if dist.rank < len(per_rank) else None
    if saved["world_size"] != dist.world_size:
        logger.warning(
            "resuming a %d-rank run on %d ranks: data order and dropout masks differ from the saved run",
            saved["world_size"],
            dist.world_size,
        )
    epoch = int(saved["epoch"]) + (1 if saved["epoch_done"] else 0)
    logger.info(
        "resuming from %s: step %d, epoch %d%s; best %s %s; %d metric rows after the checkpoint dropped",
        where,
        state.step,
        epoch,
        "" if saved["epoch_done"] else " (part-way)",
        state.best.get("metric"),
        state.best.get("value"),
        dropped,
    )
    return epoch, rng, dict(saved["meters"]) or None


__all__ = ["EpochResult", "build_optimizer", "build_scheduler", "evaluate", "train", "train_one_epoch"]
