"""`p2m shard`: write shards (the default action), `p2m shard verify`, `p2m shard info`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from p2m.cli.common import progress_option
from p2m.cli.ray_option import ray_option

WRITE_USAGE = "p2m shard DATASET... --out SHARDS [OPTIONS]"


class DefaultWriteGroup(click.Group):
    """A group whose default action is ``write``: arguments that do not start with a subcommand name go to it.

    So ``p2m shard DATA --out S`` runs ``p2m shard write DATA --out S`` while ``p2m shard verify S`` and
    ``p2m shard info S`` run those subcommands. (A dataset folder literally named ``verify`` or ``info`` must
    be written as ``./verify``.)
    """

    default_command = "write"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(
            "p2m shard", "[DATASET... --out SHARDS | verify SHARDS | info SHARDS] [OPTIONS]"
        )

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write = self.commands[self.default_command]
        with formatter.section(f"Options of {WRITE_USAGE}"):
            rows = [
                r
                for p in write.get_params(ctx)
                if isinstance(p, click.Option) and (r := p.get_help_record(ctx))
            ]
            formatter.write_dl(rows)
        self.format_commands(ctx, formatter)


class _AsGroupContext(click.Context):
    """Context of the hidden ``write`` command: usage and "Try ... --help" hints name ``p2m shard``."""

    @property
    def command_path(self) -> str:
        return self.parent.command_path if self.parent is not None else super().command_path


def _parse_split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, subjects = value.partition("=")
        if not sep or not name or not subjects:
            raise click.BadParameter(
                f"{value!r}: expected NAME=S1,S5 (e.g. train=S1,S5,S6,S7,S8)", ctx, param
            )
        if name in out:
            raise click.BadParameter(f"split {name!r} is given twice", ctx, param)
        out[name] = subjects
    return out


@click.group("shard", cls=DefaultWriteGroup, invoke_without_command=False)
def command() -> None:
    """Write WebDataset shards from datasets (default), verify them, or summarise them.

    \b
    p2m shard DATASET... --out SHARDS [--split NAME=S1,S5] [--pose-only | --with-images [--crop]]
    p2m shard verify SHARDS
    p2m shard info SHARDS
    """


@command.command(
    "write", hidden=True, cls=type("WriteCommand", (click.Command,), {"context_class": _AsGroupContext})
)
@click.argument(
    "datasets", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="DATASET..."
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Shard folder to write.")
@click.option(
    "--split",
    "splits",
    multiple=True,
    callback=_parse_split,
    metavar="NAME=S1,S5",
    help="Subjects of a split (repeat per split; '*' = all others). Default: everything to train.",
)
@click.option(
    "--pose-only/--with-images",
    "pose_only",
    default=True,
    help="Pose and camera only (default), or also a JPEG per sample.",
)
@click.option(
    "--with-meta",
    is_flag=True,
    help="Also store a .json per sample (ids, file name, camera, source URL and licence); training needs none.",
)
@click.option("--crop", is_flag=True, help="With images: store the person crop, not the frame.")
@click.option(
    "--crop-size", default=256, show_default=True, type=click.IntRange(16, 4096), help="Crop side, px."
)
@click.option(
    "--crop-margin",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 2),
    help="Crop margin, fraction of the box's longer side per side.",
)
@click.option("--jpeg-quality", default=90, show_default=True, type=click.IntRange(1, 95))
@click.option(
    "--max-side", type=click.IntRange(16), default=None, help="Downscale stored frames to this longer side."
)
@click.option(
    "--maxcount", default=10_000, show_default=True, type=click.IntRange(1), help="Samples per shard."
)
@click.option(
    "--maxsize", default=1_000_000_000, show_default=True, type=click.IntRange(4096), help="Bytes per shard."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Processes that parse and encode whole subjects in parallel.",
)
@click.option("--overwrite", is_flag=True, help="Replace shards written with other options.")
@click.option(
    "--no-validate",
    is_flag=True,
    help="Skip checking each dataset first (the checks of `p2m annotate validate`, less pycocotools and "
    "the reprojection).",
)
@progress_option
@ray_option
def write(
    datasets: tuple[str, ...],
    out: str,
    splits: dict[str, str],
    pose_only: bool,
    with_meta: bool,
    crop: bool,
    crop_size: int,
    crop_margin: float,
    jpeg_quality: int,
    max_side: int | None,
    maxcount: int,
    maxsize: int,
    workers: int,
    overwrite: bool,
    no_validate: bool,
    progress: bool | None,
    ray_address: str | None,
) -> None:
    """Write shards + index.json; rerunning the same command resumes an interrupted run."""
    from p2m.shards import build_shards

    if ray_address is not None:
        from functools import partial

        from p2m.scale.shard import build_shards as ray_build_shards

        build_shards = partial(ray_build_shards, address=ray_address)
    if crop and pose_only:
        raise click.BadParameter("--crop needs --with-images", param_hint="--crop")
    if not no_validate:
        _check_datasets(datasets)
    _check_split_subjects(datasets, splits)
    if not pose_only:
        _check_images(datasets)
    stats = build_shards(
        list(datasets),
        out,
        splits=splits or None,
        with_images=not pose_only,
        with_meta=with_meta,
        crop=crop,
        crop_size=crop_size,
        crop_margin=crop_margin,
        jpeg_quality=jpeg_quality,
        max_side=max_side,
        maxcount=maxcount,
        maxsize=maxsize,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
    )
    _check_output(out, stats, splits)
    parts = [
        f"{k.split('/')[1]}: {v} samples"
        for k, v in stats.items()
        if k.startswith("split/") and k.endswith("/samples")
    ]
    click.echo(
        f"{out}: {stats.get('samples/written', 0)} samples in {stats.get('shards/written', 0)} new shards, "
        f"{stats.get('shards/kept', 0)} shards kept ({'; '.join(parts)}) in {stats['duration_s']:.1f} s"
    )
    skipped = {k: v for k, v in stats.items() if k.startswith("samples/skipped/")}
    if skipped:
        click.echo("skipped: " + ", ".join(f"{k.rsplit('/', 1)[1]} {v}" for k, v in skipped.items()))


def _check_datasets(datasets: Sequence[str]) -> None:
    """Refuse a dataset that `p2m annotate validate` rejects, before any shard is written (one line)."""
    from p2m.annotate.validate import validate

    for ds in datasets:
        report = validate(ds, pycocotools=False, reprojection=False)  # the fast path
        if not report.ok:
            more = f" (and {len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else ""
            raise click.ClickException(
                f"{ds}: not a valid dataset, nothing written: {report.problems[0]}{more}; "
                f"see `p2m annotate validate {ds}`"
            )


def _subjects(datasets: Sequence[str]) -> list[int]:
    from p2m.layout import Dataset

    return sorted({sf.subject for ds in datasets for sf in Dataset(ds).subject_files})


def _check_split_subjects(datasets: Sequence[str], splits: Mapping[str, str]) -> None:
    """A --split naming a subject that no dataset has is a typo, not an empty split: say which subjects exist."""
    from p2m.shards.write import parse_subjects

    have = set(_subjects(datasets))
    for name, spec in splits.items():
        missing = [s for s in parse_subjects(spec) if s != "*" and s not in have]
        if missing:
            raise click.ClickException(
                f"--split {name}={spec}: no subject {', '.join(f'S{s}' for s in missing)} in "
                f"{', '.join(datasets)} (subjects there: {', '.join(f'S{s}' for s in sorted(have)) or 'none'})"
            )


def _check_images(datasets: Sequence[str]) -> None:
    from p2m.layout import IMAGES_DIR

    for ds in datasets:
        if not (Path(ds) / IMAGES_DIR).is_dir():
            raise click.ClickException(
                f"{ds}: no {IMAGES_DIR}/ folder (a pose-only dataset), so --with-images "
                "would write nothing; leave it out for pose-only shards"
            )


#: Why a sample was skipped, in words the user can act on.
SKIP_REASONS = {
    "image_missing": "no image file (a pose-only dataset? then leave out --with-images)",
    "no_split": "subject in no --split",
}


def _check_output(out: str, stats: Mapping[str, Any], splits: Mapping[str, str]) -> None:
    """Zero samples from datasets that have people is an error (exit 1), with the reasons they were skipped."""
    total = stats.get("samples/written", 0) + sum(
        stats.get(k, 0) for k in stats if k.startswith("split/") and k.endswith("/samples")
    )
    skipped = {k.rsplit("/", 1)[1]: v for k, v in stats.items() if k.startswith("samples/skipped/") and v}
    if total or not skipped:
        return
    why = "; ".join(
        f"{n} {SKIP_REASONS.get(reason, reason.replace('_', ' '))}" for reason, n in skipped.items()
    )
    raise click.ClickException(
        f"{out}: no samples written, all {sum(skipped.values())} people were skipped: {why}"
    )


@command.command("verify")
@click.argument("shards")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Processes.")
@progress_option
def verify(shards: str, workers: int, progress: bool | None) -> None:
    """Re-read every shard with webdataset; check sha256, counts, decoding and shapes. Exit 1 on any problem."""
    from p2m.shards import verify_shards

    report = verify_shards(shards, workers=workers, progress=progress)
    click.echo(report.format())
    if not report.ok:
        raise SystemExit(1)


@command.command("info")
@click.argument("shards")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(shards: str, as_json: bool) -> None:
    """Print splits, samples, bytes and sources of a shard set."""
    from p2m.shards.index import format_info, shard_info

    summary = shard_info(shards)
    click.echo(json.dumps(summary, indent=1) if as_json else format_info(summary))
