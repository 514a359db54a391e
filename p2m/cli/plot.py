"""`p2m plot RUN`: options -> one call to p2m.pose2mesh.plot.plot_run -> the files written."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the PNG files (default: RUN/plots).",
)
def command(run_dir: Path, out: Path | None) -> None:
    """Draw a run's training curves (losses, learning rate, validation errors) as PNG files.

    Needs matplotlib (pip install 'p2m[plot]'). For live curves, train with --logger tensorboard and run
    `tensorboard --logdir runs/`.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            "p2m plot needs matplotlib, which is not installed: pip install 'p2m[plot]'"
        ) from exc
    from p2m.pose2mesh.plot import plot_run

    for path in plot_run(run_dir, out):
        click.echo(str(path))
