"""`p2m train`: options -> one call to p2m.pose2mesh.train.train -> a summary."""

from __future__ import annotations

from pathlib import Path

import click

from p2m.cli.common import check_split, device_option, progress_option


@click.command("train")
@click.option(
    "--config",
    "config_spec",
    metavar="CONFIG",
    default=None,
    help="YAML config file, or the name of a shipped one: tiny_pose2mesh, tiny_posenet, cpu_pose2mesh, "
    "posenet_h36m, pose2mesh_h36m, release_posenet, release_pose2mesh. With --resume it defaults "
    "to RUN/config.yaml.",
)
@click.option(
    "--data",
    default=None,
    type=str,
    help="Shard folder (or its index.json) written by `p2m shard`: training and validation splits. "
    "Optional when every training batch is synthetic (synthetic.ratio: 1): then it serves "
    "validation only. Not needed with --resume: the run's config.yaml records it.",
)
@click.option(
    "--out",
    "run_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder: config.yaml, metrics.jsonl, checkpoints/, best.safetensors.  [required]",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt, exactly.")
@device_option(
    "Training device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (under torchrun, cuda "
    "means cuda:LOCAL_RANK)."
)
@click.option(
    "--stage",
    type=click.Choice(["posenet", "pose2mesh"]),
    default=None,
    help="Override model.stage: PoseNet alone, or PoseNet + MeshNet.",
)
@click.option(
    "--init-posenet",
    type=str,
    default=None,
    help="Start PoseNet from this run folder or checkpoint (a stage-1 run), or `default` (the shipped model).",
)
@click.option(
    "--init",
    "init",
    type=str,
    default=None,
    help="Start the whole model from this run folder or checkpoint, or `default` (the shipped model): "
    "fine-tuning; the config's model section must match it.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.lr=1e-4 --set train.accum_steps=4 (repeatable).",
)
@click.option(
    "--print-config", is_flag=True, help="Print the resolved config (file + --set) as YAML and exit."
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also keep the K newest checkpoints/step-*.pt snapshots.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this global step (with a checkpoint); --resume continues.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads of torch's operators (default: torch's choice, one per core). On a machine shared "
    "with other jobs, 1 is often several times faster.",
)
@click.option(
    "--logger",
    "loggers",
    multiple=True,
    metavar="[jsonl|csv|tensorboard]",
    help="Also write the training log as TensorBoard events (RUN/tensorboard/: `tensorboard --logdir "
    "runs/`) or CSV tables (RUN/metrics_*.csv); repeat for both. RUN/metrics.jsonl is always "
    "written: it is the record --resume trusts.  [default: jsonl]",
)
@progress_option
def command(
    config_spec: str | None,
    data: str | None,
    run_dir: Path | None,
    resume: bool,
    device: str,
    stage: str | None,
    init_posenet: str | None,
    init: str | None,
    overrides: tuple[str, ...],
    print_config: bool,
    keep_last: int,
    max_steps: int | None,
    threads: int | None,
    loggers: tuple[str, ...],
    progress: bool | None,
) -> None:
    """Train Pose2Mesh from shards into a run folder; --resume continues a run exactly.

    \b
    p2m train --config pose2mesh_h36m --data SHARDS --out runs/p2m
    p2m train --config my.yaml --set train.lr=1e-4 --print-config
    p2m train --data SHARDS --out runs/p2m --resume
    p2m train --config configs/release_pose2mesh.yaml --init default --data VAL_SHARDS --out runs/finetune
    torchrun --nproc_per_node=4 -m p2m train --config ... --data SHARDS --out runs/p2m
    """
    from p2m.errors import ConfigError
    from p2m.paths import find_config
    from p2m.pose2mesh.config import dump_config, load_config
    from p2m.pose2mesh.sinks import check_available, parse_loggers

    sets = list(overrides) + ([f"model.stage={stage}"] if stage else [])
    if config_spec is None:
        saved = run_dir / "config.yaml" if run_dir is not None else None
        if saved is None or not resume:
            raise click.UsageError(
                "--config is required (a YAML file or a shipped name such as tiny_pose2mesh), "
                "except with --resume on a run folder"
            )
        if not saved.exists():
            raise click.ClickException(
                f"{run_dir}: no run to resume (no config.yaml); start one with "
                f"--config CONFIG --data SHARDS --out {run_dir}"
            )
        config_path = saved
    else:
        config_path = find_config(config_spec)
    try:
        cfg = load_config(config_path, sets)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config/--set") from exc
    if print_config:
        click.echo(dump_config(cfg), nl=False)
        return
    if run_dir is None:
        raise click.UsageError("Missing option '--out'.")
    if data is None and resume:
        data = cfg.train.data if config_spec is None else load_config(run_dir / "config.yaml").train.data
        if data is None:
            raise click.UsageError(
                f"--data is required: {run_dir}/config.yaml does not record the run's shards "
                "(a run of an older p2m)"
            )
    if data is None and cfg.synthetic.ratio < 1:
        raise click.UsageError(
            f"Missing option '--data': synthetic.ratio {cfg.synthetic.ratio}: training shards are needed "
            "(only synthetic.ratio: 1 trains without shards)."
        )
    try:
        sinks = parse_loggers(loggers)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--logger "), param_hint="--logger") from exc
    check_available(sinks)
    if data is not None and cfg.synthetic.ratio < 1:
        check_split(
            data, cfg.train.train_split, "train.train_split"
        )  # before the model loads (a missing val_split
    # only means no validation)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from p2m.pose2mesh.train import train

    if init and init_posenet:
        raise click.UsageError("give --init or --init-posenet, not both")
    result = train(
        cfg,
        run_dir,
        data,
        resume=resume,
        device=device,
        init_posenet=init_posenet,
        keep_last=keep_last,
        max_steps=max_steps,
        progress=progress,
        loggers=sinks,
        init=init,
    )
    if result["checkpoint_bytes"] is None:  # a non-zero rank under torchrun: rank 0 reports
        return
    best = result["best"]
    best_text = (
        f"{best['metric']} {best['value']:.1f} mm at epoch {best['epoch']}"
        if best.get("value") is not None
        else "no validation yet"
    )
    if result["table"]:
        click.echo(result["table"])
    state = "stopped (continue with --resume)" if result["stopped"] else "done"
    click.echo(
        f"{run_dir}: {state} at step {result['step']} (epoch {result['epoch']}), best {best_text}; "
        f"checkpoints {result['checkpoint_bytes'] / 1e6:.1f} MB on disk; {result['seconds']:.0f} s"
    )
