"""`p2m train`: options -> one call to p2m.pose2mesh.train.train -> a summary."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML config (configs/*.yaml). With --resume it defaults to RUN/config.yaml.")
@click.option("--data", default=None, type=str,
              help="Shard folder (or its index.json) written by `p2m shard`: training and validation splits. Optional "
                   "when every training batch is synthetic (synthetic.ratio: 1); then it serves validation only.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.yaml, metrics.jsonl, checkpoints/, best.safetensors.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.pt, exactly.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Training device (under torchrun, cuda means cuda:LOCAL_RANK).")
@click.option("--stage", type=click.Choice(["posenet", "pose2mesh"]), default=None,
              help="Override model.stage: PoseNet alone, or PoseNet + MeshNet.")
@click.option("--init-posenet", type=str, default=None,
              help="Start PoseNet from this run folder or checkpoint (a stage-1 run), or `default` (the shipped model).")
@click.option("--init", "init", type=str, default=None,
              help="Start the whole model from this run folder or checkpoint, or `default` (the shipped model): "
                   "fine-tuning; the config's model section must match it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.lr=1e-4 --set train.accum_steps=4 (repeatable).")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also keep the K newest checkpoints/step-*.pt snapshots.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop after this global step (with a checkpoint); --resume continues.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of torch's operators (default: torch's choice, one per core). On a machine shared "
                   "with other jobs, 1 is often several times faster.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
def command(config_path: Path | None, data: str | None, run_dir: Path, resume: bool, device: str, stage: str | None,
            init_posenet: str | None, init: str | None, overrides: tuple[str, ...], keep_last: int, max_steps: int | None,
            threads: int | None, progress: bool | None) -> None:  # fmt: skip
    """Train Pose2Mesh from shards into a run folder; --resume continues a run exactly.

    \b
    p2m train --config configs/pose2mesh_h36m.yaml --data SHARDS --out runs/p2m
    p2m train --data SHARDS --out runs/p2m --resume
    p2m train --config configs/release_pose2mesh.yaml --init default --data VAL_SHARDS --out runs/finetune
    torchrun --nproc_per_node=4 -m p2m train --config ... --data SHARDS --out runs/p2m
    """
    from p2m.errors import ConfigError
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.train import train

    sets = list(overrides) + ([f"model.stage={stage}"] if stage else [])
    if config_path is None:
        saved = run_dir / "config.yaml"
        if not resume or not saved.exists():
            raise click.UsageError("--config is required (except with --resume on a run folder that has config.yaml)")
        config_path = saved
    try:
        cfg = load_config(config_path, sets)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config/--set") from exc
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if init and init_posenet:
        raise click.UsageError("give --init or --init-posenet, not both")
    result = train(cfg, run_dir, data, resume=resume, device=device, init_posenet=init_posenet, keep_last=keep_last,
                   max_steps=max_steps, progress=progress, init=init)  # fmt: skip
    if result["checkpoint_bytes"] is None:  # a non-zero rank under torchrun: rank 0 reports
        return
    best = result["best"]
    best_text = f"{best['metric']} {best['value']:.1f} mm at epoch {best['epoch']}" if best.get("value") is not None \
        else "no validation yet"  # fmt: skip
    if result["table"]:
        click.echo(result["table"])
    state = "stopped (continue with --resume)" if result["stopped"] else "done"
    click.echo(f"{run_dir}: {state} at step {result['step']} (epoch {result['epoch']}), best {best_text}; "
               f"checkpoints {result['checkpoint_bytes'] / 1e6:.1f} MB on disk; {result['seconds']:.0f} s")  # fmt: skip
