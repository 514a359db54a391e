"""The `p2m` command: a click group whose stage commands live one per module and load lazily.

Each module ``p2m/cli/<stage>.py`` defines a click command (or group) named ``command``: it parses
options and makes one call into its stage. Loading them lazily keeps ``p2m --help`` fast and keeps torch
out of commands that do not need it.
"""

from __future__ import annotations

import importlib

import click

from p2m import __version__
from p2m.cli.common import add_verbosity, configure_logging, verbosity, verbosity_options
from p2m.errors import P2MError, error_line

# name -> (module under p2m.cli, one-line help shown by `p2m --help`)
STAGES: dict[str, tuple[str, str]] = {
    "crawl": ("crawl", "Harvest images of people from pages, sitemaps and feeds (resumable)."),
    "annotate": (
        "annotate",
        "Validate, detect, fit, review or import annotations (COCO + Human3.6M layout).",
    ),
    "synth": ("synth", "Make a fully annotated synthetic dataset from the body model and mocap poses."),
    "shard": ("shard", "Write, verify and summarise WebDataset shards."),
    "train": ("train", "Train PoseNet + MeshNet from shards; --resume continues exactly."),
    "eval": ("evaluate", "Report MPJPE, PA-MPJPE and MPVPE of a checkpoint on shards."),
    "infer": ("infer", "Turn a 2D pose into a mesh file and a picture."),
    "plot": ("plot", "Draw a run's training curves as PNG."),
    "demo": ("demo", "Run the whole pipeline on a small local example."),
}


class LazyGroup(click.Group):
    """A group that imports a stage's command module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STAGES:
            return None
        return add_verbosity(importlib.import_module(f"p2m.cli.{STAGES[name][0]}").command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help so that `p2m --help` imports no stage module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in STAGES.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except P2MError as exc:
            raise click.ClickException(error_line(exc)) from exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2m")
@verbosity_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """p2m: from images of people to a trained Pose2Mesh model on an open body model.

    \b
    crawl -> annotate -> shard -> train [--resume] -> eval / infer
                ^
    synth ------+   (body model + real mocap -> annotated data)

    Logs: warnings and each command's summary line by default; -v/-q here or after any
    command (`p2m train -v ...`). Progress bars are drawn only on a terminal (--no-progress).
    """
    configure_logging(verbosity(ctx))
