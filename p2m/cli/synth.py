"""`p2m synth`: options -> :func:`p2m.annotate.synth.synth`."""

from __future__ import annotations

import click

from p2m.annotate.synth import CAMERA_MODES, SynthOptions, synth
from p2m.cli.common import progress_option
from p2m.cli.ray_option import ray_option


@click.command("synth")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Dataset folder to write."
)
@click.option(
    "--num",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of images (one person each).",
)
@click.option(
    "--poses",
    default="cmu-train",
    show_default=True,
    help="Pose source: cmu-train / cmu-eval / cmu (the CMU mocap table shipped with p2m), sampler "
    "(joint ranges), or a PATH to a BVH file, a folder of BVH files or a pose table (.npz).",
)
@click.option(
    "--cameras",
    type=click.Choice(CAMERA_MODES),
    default="h36m",
    show_default=True,
    help="h36m: four fixed cameras per subject around the person (1000x1000 px); "
    "random: one camera per image anywhere around the person.",
)
@click.option(
    "--images/--no-images",
    default=False,
    show_default=True,
    help="Render each person shaded over a background (JPEG). Without it the dataset is pose-only.",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=64),
    default=512,
    show_default=True,
    help="Image width and height for --cameras random.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--subjects",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Split the frames into this many subject files.",
)
@click.option(
    "--first-subject",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of the first subject (e.g. 9 for an evaluation set beside subjects 1..8).",
)
@click.option(
    "--topology",
    default="full",
    show_default=True,
    help="Body mesh used to regress the joints: full, notoes, 1229, 615, 369.",
)
@click.option("--name", default="synth", show_default=True, help="Dataset name (file prefix).")
@progress_option
@ray_option
def command(progress: bool | None, **kwargs) -> None:
    """Make a fully annotated synthetic dataset from the anny body model and real motion capture.

    Writes COCO keypoints, H36M-17 2D/3D joints, cameras and body parameters in the Human3.6M-style layout
    (check it with `p2m annotate validate OUT`).

    \b
    Example:
      p2m synth --out data/synth --num 2000 --subjects 4 --images
    """
    out = kwargs.pop("out")
    ray_address = kwargs.pop("ray_address")
    if ray_address is not None:
        from p2m.scale.synth import synth as ray_synth

        stats = ray_synth(out, SynthOptions(**kwargs), address=ray_address)
    else:
        stats = synth(out, SynthOptions(**kwargs), progress=progress)
    click.echo(
        f"synth: {stats['images']} images, {stats['frames']} frames, {stats['subjects']} subject(s) "
        f"in {stats['seconds']} s ({stats['images_per_second']} img/s) -> {out}"
    )
