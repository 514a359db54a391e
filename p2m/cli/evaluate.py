"""`p2m eval`: options -> one call to p2m.pose2mesh.evaluate.evaluate_checkpoint -> the table."""

from __future__ import annotations

from pathlib import Path

import click

from p2m.cli.common import check_split, device_option, progress_option


@click.command("eval")
@click.argument("checkpoint", type=str)
@click.option("--data", required=True, type=str, help="Shard folder (or its index.json).")
@click.option("--split", default="test", show_default=True, help="Split of the shards to score.")
@click.option(
    "--input",
    "eval_input",
    type=click.Choice(["noisy", "gt"]),
    default="noisy",
    show_default=True,
    help="2D input: ground truth + the config's synthetic error model (seeded), or clean ground truth.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the evaluation noise.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--max-samples", type=click.IntRange(min=1), default=None, help="Score only the first N samples."
)
@device_option()
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file (default: RUN/eval_SPLIT.json, beside the checkpoint, or ./default_eval_SPLIT.json).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of torch's operators.")
@progress_option
def command(
    checkpoint: str,
    data: str,
    split: str,
    eval_input: str,
    seed: int,
    batch_size: int,
    max_samples: int | None,
    device: str,
    out: Path | None,
    threads: int | None,
    progress: bool | None,
) -> None:
    """Report MPJPE, PA-MPJPE (14 and 17 joints) and MPVPE in mm of CHECKPOINT (a .pt, a .safetensors, a run
    folder, or `default`: the model shipped with p2m) on a shard split, per action where actions exist, and write
    them as JSON."""
    from p2m.errors import CheckpointError
    from p2m.paths import configure_third_party_caches
    from p2m.pose2mesh.pretrained import resolve

    check_split(data, split)  # before the model loads
    configure_third_party_caches()
    from p2m.pose2mesh.evaluate import evaluate_checkpoint, format_result

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        path = resolve(checkpoint)
    except CheckpointError as exc:
        raise click.BadParameter(str(exc), param_hint="CHECKPOINT") from exc
    if not path.exists():
        raise click.BadParameter(f"{path}: no such checkpoint file or run folder", param_hint="CHECKPOINT")
    if out is None and path != Path(checkpoint):  # the shipped model: never write into the installed package
        out = Path(f"{checkpoint}_eval_{split}.json")
    result = evaluate_checkpoint(
        path,
        data,
        split=split,
        batch_size=batch_size,
        device=device,
        eval_input=eval_input,
        seed=seed,
        max_samples=max_samples,
        out=out,
        progress=progress,
    )
    click.echo(format_result(result))
    click.echo(f"written: {result['json']}")
