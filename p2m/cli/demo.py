"""`p2m demo`: options -> one call to :func:`p2m.demo.run_demo` -> where the report is."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from p2m.cli.common import device_option, verbosity

#: Loggers kept at WARNING during the demo unless -v is given: the demo prints its own line per step.
QUIET_LOGGERS = ("p2m", "anny", "absl")


@click.command("demo")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the report and every stage's output (an earlier demo's is replaced).",
)
@click.option(
    "--quick", is_flag=True, help="Reduced mode for CI: fewer pictures, less data, one short epoch."
)
@click.option(
    "--keep-serving", is_flag=True, help="Keep the local website running after the demo (Ctrl-C stops it)."
)
@device_option(
    "Device for fitting, training, evaluation and inference: auto (CUDA when present), cpu, cuda or cuda:N."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of the synthetic data.")
@click.pass_context
def command(ctx: click.Context, out: Path, quick: bool, keep_serving: bool, device: str, seed: int) -> None:
    """Run the whole pipeline offline on a small local example and write a report.

    \b
    Renders people with the body model, serves them as a website on 127.0.0.1 (three
    hosts, robots.txt, sitemap), crawls it, detects 2D keypoints, fits the body model,
    validates, synthesises training data, shards it, trains a small Pose2Mesh, evaluates
    it and turns a crawled picture into a mesh. One line per step; the report is
    OUT/report.html (and report.md). About 6 minutes on 2 CPU cores (346 s
    measured), --quick about 1 minute (58 s).
    """
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's native log lines
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from p2m.demo import run_demo

    saved = {}
    if verbosity(ctx) <= 0:
        for name in QUIET_LOGGERS:
            lg = logging.getLogger(name)
            saved[name] = lg.level
            lg.setLevel(logging.WARNING)
    try:
        result = run_demo(
            out, quick=quick, device=device, seed=seed, keep_serving=keep_serving, echo=click.echo
        )
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    live = [r.name for r in result.steps if r.status == "ok"]
    skipped = [r.name for r in result.steps if r.status == "skipped"]
    click.echo(
        f"done in {result.seconds:.0f} s: {len(live)} steps ran"
        + (f", skipped: {', '.join(skipped)}" if skipped else "")
    )
    click.echo(f"report: {result.report_html}")
    click.echo(f"        {result.report_md}")
    if result.site is not None:
        try:
            click.echo("the demo website is still being served (Ctrl-C stops it):")
            for label, base in result.site.bases.items():
                click.echo(f"  {label}: {base}/")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopped")
        finally:
            result.site.stop()
