"""`p2m annotate`: a group of subcommands over a dataset folder (validate; detect, fit, review, import later).

Each subcommand is a small function that parses options, makes one call into ``p2m.annotate`` and prints a
summary. Other subcommands register themselves on the group with ``@command.command(...)`` below.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group("annotate")
def command() -> None:
    """Validate, detect, fit, review or import annotations (COCO + Human3.6M layout, DESIGN.md Contract 1)."""


@command.command("validate", short_help="Check a dataset folder against the layout (Contract 1).")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tolerance-px", type=click.FloatRange(min=0.0), default=0.5, show_default=True,
              help="Largest allowed distance between joints_2d_h36m and the projection of joint_3d.")  # fmt: skip
@click.option("--no-pycocotools", is_flag=True, help="Skip loading each data.json with pycocotools (faster).")
@click.option(
    "-q", "--quiet", is_flag=True, help="Print only the problems and the summary line, no warnings."
)
def validate_cmd(dataset: Path, tolerance_px: float, no_pycocotools: bool, quiet: bool) -> None:
    """Check DATASET against every rule of the dataset layout; exit 1 listing every problem.

    \b
    Checks:
      - annotations/ holds only {name}_subject{S}_{data,camera,joint_3d,body_param}.json
        and {name}_info.json, each valid JSON;
      - every top-level value of a data.json is a list (no `info` object), with
        images, annotations, categories and licenses all present;
      - image fields (id, file_name, width, height, subject, action_idx, subaction_idx,
        cam_idx, frame_idx) and annotation fields (id, image_id, category_id, bbox, area,
        iscrowd, keypoints [51 numbers, v in {0,1,2}], num_keypoints, joints_2d_h36m [17x3]);
      - image and annotation ids unique across ALL subject files of a name, never 0;
        each image_id names an image of its file;
      - pycocotools' COCO(path) loads each data.json; all data.json of a name have
        the same top-level keys (Pose2Mesh's loader concatenates them);
      - if images/ exists, every file_name is a file under it (no images/: pose-only);
      - every cam_idx used has a valid camera (R 3x3 rotation, t, f > 0, c[, k, p]);
      - joint_3d frames are 17x3 world mm and project through the camera onto the
        visible joints_2d_h36m within --tolerance-px;
      - body_param records carry a model name and numeric pose, shape, trans (3).

    Problems are printed as FILE: id ID: FIELD: what was found and what was expected.
    """
    from p2m.annotate.validate import validate

    report = validate(dataset, tolerance_px=tolerance_px, pycocotools=not no_pycocotools)
    for problem in report.problems:
        click.echo(f"ERROR {problem}")
    if not quiet:
        for warning in report.warnings:
            click.echo(f"warning {warning}", err=True)
    click.echo(report.summary())
    if not report.ok:
        raise click.exceptions.Exit(1)
