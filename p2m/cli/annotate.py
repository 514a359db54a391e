"""`p2m annotate`: a group of subcommands over a dataset folder (validate; detect, fit, review, import later).

Each subcommand is a small function that parses options, makes one call into ``p2m.annotate`` and prints a
summary. Other subcommands register themselves on the group with ``@command.command(...)`` below.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from p2m.cli.common import (
    batch_size_option,
    device_option,
    progress_enabled,
    progress_option,
    verbosity,
)
from p2m.cli.ray_option import ray_option

logger = logging.getLogger(__name__)


@click.group("annotate")
def command() -> None:
    """Validate, detect, fit, review, import or export annotations in the dataset layout.

    The layout is COCO data.json plus Human3.6M-style camera, joint_3d and body_param files per
    subject; docs/formats.md describes every file and field.
    """


@command.command("validate", short_help="Check a dataset folder against the layout (Contract 1).")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--tolerance-px",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="Largest allowed distance between joints_2d_h36m and the projection of joint_3d.",
)
@click.option("--no-pycocotools", is_flag=True, help="Skip loading each data.json with pycocotools (faster).")
@click.pass_context
def validate_cmd(ctx: click.Context, dataset: Path, tolerance_px: float, no_pycocotools: bool) -> None:
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
      - body_param records carry a model name and numeric pose, shape, trans (3),
        pose and shape as long as the named model needs (anny rig, SMPL 72/10).

    Problems are printed as FILE: id ID: FIELD: what was found and what was expected;
    -q prints only the problems and the summary line (no warnings).
    """
    from p2m.annotate.validate import validate

    report = validate(dataset, tolerance_px=tolerance_px, pycocotools=not no_pycocotools)
    for problem in report.problems:
        click.echo(f"ERROR {problem}")
    if verbosity(ctx) >= 0:
        for warning in report.warnings:
            click.echo(f"warning {warning}", err=True)
    click.echo(report.summary())
    if not report.ok:
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------------------------------------------- detect
@command.command(
    "detect", short_help="2D keypoints of every person (MediaPipe) in a crawl output or image folder."
)
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to write (created or extended).",
)
@click.option("--name", default="photos", show_default=True, help="Dataset name (annotation file prefix).")
@click.option(
    "--min-score",
    type=click.FloatRange(0.0, 1.0),
    default=0.3,
    show_default=True,
    help="Least mean keypoint confidence for a detection to count as a person.",
)
@batch_size_option(256, "Images per step; the dataset is written after each, so a rerun resumes there.")
@click.option(
    "--max-people",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Most people per image; 1 keeps only the most prominent (MediaPipe's legacy Pose).",
)
@click.option(
    "--tiles",
    "grid",
    type=click.IntRange(1, 6),
    default=2,
    show_default=True,
    help="Also search N x N overlapping tiles (finds small people; 1: whole image only).",
)
@progress_option
@ray_option
def detect_cmd(
    src: Path,
    out: Path,
    name: str,
    min_score: float,
    batch_size: int,
    max_people: int,
    grid: int,
    progress: bool | None,
    ray_address: str | None,
) -> None:
    """Find every person in each image of SRC and write COCO-17 + H36M-17 keypoints, bbox and a camera to OUT.

    SRC is a crawl output folder (manifest.parquet + images/) or any folder of images. Each person becomes
    its own frame (an image record of the photo with one annotation), so `p2m annotate fit` fits each one.
    Images without a person are kept as image records without annotation and listed in the info file;
    unreadable images are reported and skipped.
    """
    from collections import Counter

    from p2m.annotate.detect import detect, list_source
    from p2m.native import is_mediapipe_routine, native_stderr_filtered

    if not list_source(src, Counter(), exclude=out):
        raise click.ClickException(
            f"{src}: no images found; expected a crawl output (manifest.parquet with "
            "status ok rows) or a folder of .jpg/.png/.webp images"
        )
    if ray_address is not None:
        from p2m.scale.detect import detect as ray_detect

        stats = ray_detect(
            src,
            out,
            address=ray_address,
            name=name,
            min_score=min_score,
            batch=batch_size,
            max_people=max_people,
            grid=grid,
        )
    else:
        progress = progress_enabled(progress)  # decided before stderr becomes the filter's pipe
        with native_stderr_filtered(is_mediapipe_routine, logger, live=True):
            stats = detect(
                src,
                out,
                name=name,
                min_score=min_score,
                batch=batch_size,
                max_people=max_people,
                grid=grid,
                progress=progress,
            )
    click.echo(
        f"{out}: {stats.get('images/person', 0)} images with a person, {stats.get('images/no_person', 0)} "
        f"without, {stats.get('images/unreadable', 0)} unreadable, {stats.get('images/already_done', 0)} "
        f"already done ({stats['seconds']:.1f} s)"
    )


# ---------------------------------------------------------------------------------------------------- fit
@command.command("fit", short_help="Fit the body model to 2D keypoints: joint_3d, body_param, fit error.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@device_option()
@click.option(
    "--iters",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Optimisation steps of the pose stage.",
)
@batch_size_option(64, "People fitted at once.")
@click.option(
    "--max-error",
    "max_error",
    type=click.FloatRange(min=0.0, min_open=True),
    default=15.0,
    show_default=True,
    help="Largest mean reprojection error (px) of a valid fit.",
)
@click.option(
    "--topology",
    default="full",
    show_default=True,
    help="anny topology of the written body parameters and joints.",
)
@click.option("--name", "names", multiple=True, help="Dataset name(s) to fit (default: all).")
@click.option("--overwrite", is_flag=True, help="Refit frames that already have 3D or an earlier fit.")
@click.option(
    "--id", "ann_ids", type=int, multiple=True, help="Fit only these annotation id(s) (repeatable)."
)
@progress_option
@ray_option
def fit_cmd(
    dataset: Path,
    device: str,
    iters: int,
    batch_size: int,
    max_error: float,
    topology: str,
    names: tuple[str, ...],
    overwrite: bool,
    ann_ids: tuple[int, ...],
    progress: bool | None,
    ray_address: str | None,
) -> None:
    """Fit anny (pose, shape, translation) to each person's 2D keypoints through its camera.

    \b
    Writes joint_3d.json (world mm), body_param.json (anny, metres) and
    camera.json (unchanged where present; single-photo cameras otherwise), and
    sets fit_error_px / fit_valid on each annotation (invalid fits are marked,
    not deleted). joints_2d_h36m becomes the projection of the fitted joints;
    the detected 2D stays in keypoints. A rerun skips people already fitted.
    """
    from p2m.annotate import fit_bodies

    if ray_address is not None:
        from p2m.scale.fit import fit as ray_fit

        stats = ray_fit(
            dataset,
            address=ray_address,
            device=device,
            iters=iters,
            batch=batch_size,
            max_error_px=max_error,
            topology=topology,
            names=names or None,
            overwrite=overwrite,
            ann_ids=ann_ids or None,
        )
    else:
        stats = fit_bodies(
            dataset,
            device=device,
            iters=iters,
            batch=batch_size,
            max_error_px=max_error,
            topology=topology,
            names=names or None,
            overwrite=overwrite,
            ann_ids=ann_ids or None,
            progress=progress,
        )
    for problem in stats["problems"][:10]:
        click.echo(f"warning {problem}", err=True)
    skipped = sum(v for k, v in stats.items() if k.startswith("annotations/skipped/"))
    error = f", mean error {stats['fit_error_px/mean']:.2f} px" if "fit_error_px/mean" in stats else ""
    click.echo(
        f"{dataset}: {stats.get('annotations/fitted', 0)} people fitted ({stats.get('annotations/valid', 0)} valid, "
        f"{stats.get('annotations/invalid', 0)} over {max_error} px){error}; "
        f"{stats.get('annotations/too_few_keypoints', 0)} with too few keypoints, {skipped} skipped "
        f"({stats['device']}, {stats['seconds']:.1f} s)"
    )


# ---------------------------------------------------------------------------------------------------- import
@command.group("import", short_help="Import Human3.6M (Pose2Mesh release) or COCO keypoints.")
def import_group() -> None:
    """Convert other datasets' annotation files into the dataset layout."""


@import_group.command(
    "h36m", short_help="Import Pose2Mesh's Human3.6M files (data, camera, joint_3d, smpl_param)."
)
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="Human36M", show_default=True, help="Dataset name (annotation file prefix).")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of the images by file_name [default: SRC/images if present, else pose-only].",
)
@progress_option
def import_h36m_cmd(src: Path, out: Path, name: str, images: Path | None, progress: bool | None) -> None:
    """Import Pose2Mesh's Human36M_subject{S}_{data,camera,joint_3d,smpl_param}.json files from SRC."""
    from p2m.annotate.import_h36m import import_h36m

    stats = import_h36m(src, out, name=name, images=images, progress=progress)
    click.echo(
        f"{out}: {stats['subjects']} subjects, {stats['images']} images, {stats['annotations']} annotations, "
        f"{stats.get('body_params', 0)} SMPL parameter sets, {stats.get('images/copied', 0)} image files"
    )


@import_group.command("coco", short_help="Import a COCO person_keypoints JSON file and its images.")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder to write (created or extended); or use --merge-into.",
)
@click.option(
    "--merge-into",
    "merge_into",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Merge SRC's keypoints into this dataset by annotation id (a review tool's corrections).",
)
@click.option(
    "--refit/--no-refit",
    default=False,
    show_default=True,
    help="With --merge-into: refit (p2m annotate fit) only the changed people that have 3D.",
)
@device_option("For --refit: auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--name", default="coco", show_default=True, help="Dataset name (annotation file prefix).")
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder the file_name values are relative to [default: the JSON's folder].",
)
@click.option("--no-images", is_flag=True, help="Annotations only (pose-only dataset; images not checked).")
@progress_option
def import_coco_cmd(
    src: Path,
    out: Path | None,
    name: str,
    images: Path | None,
    no_images: bool,
    merge_into: Path | None,
    refit: bool,
    device: str,
    progress: bool | None,
) -> None:
    """Import a COCO person_keypoints JSON file SRC (and its images), or merge its keypoints into a dataset.

    \b
    With --merge-into DATASET, SRC is a review tool's (CVAT, Label Studio) export
    of `p2m annotate export coco DATASET`: each person's keypoints go back to the
    annotation with the same id (or, when the tool renumbered them, the person of
    the same photo with the most overlapping box). Only changed people are
    rewritten; those with a 3D fit are marked review.needs_refit (refitted now
    with --refit), every other fit is kept.
    """
    if merge_into is not None:
        from p2m.annotate.coco_roundtrip import merge_coco
        from p2m.layout import Dataset

        chosen = (
            name if name != "coco" or name in Dataset(merge_into).names else None
        )  # --name's default: any
        stats = merge_coco(src, merge_into, name=chosen, refit=refit, device=device)
        click.echo(
            f"{merge_into}: {stats.get('annotations/changed', 0)} people changed, "
            f"{stats.get('annotations/unchanged', 0)} unchanged, {stats.get('annotations/unmatched', 0)} "
            f"not matched; {len(stats['needs_refit'])} need a refit"
            + (f", {stats['fit'].get('annotations/fitted', 0)} refitted" if "fit" in stats else "")
        )
        return
    if out is None:
        raise click.UsageError("give --out DATASET (a new import) or --merge-into DATASET")
    from p2m.annotate.import_coco import import_coco

    stats = import_coco(src, out, name=name, images=images, with_images=not no_images, progress=progress)
    click.echo(
        f"{out}: {stats['images']} images, {stats['annotations']} annotations, "
        f"{stats.get('images/copied', 0)} image files"
    )


def _import_keypoints_cmd(fmt: str, what: str) -> None:
    @import_group.command(
        fmt,
        short_help=f"Import {what} JSON files and their photos (each person a frame).",
        help=f"Import {what} JSON SRC (one file per photo, or a folder of them) as COCO-17 people.",
    )
    @click.argument("src", type=click.Path(exists=True, path_type=Path))
    @click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--name", default=fmt, show_default=True, help="Dataset name (annotation file prefix).")
    @click.option(
        "--images",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Folder of the photos, found by the JSON file's stem [default: beside each JSON].",
    )
    def cmd(src: Path, out: Path, name: str, images: Path | None) -> None:
        from p2m.annotate.import_keypoints import import_keypoints

        stats = import_keypoints(src, out, fmt, name=name, images=images)
        click.echo(
            f"{out}: {stats['files']} {what} files, {stats['images']} images, {stats.get('people', 0)} "
            f"people, {stats.get('people/too_few_keypoints', 0)} with too few keypoints"
        )


_import_keypoints_cmd("openpose", "OpenPose")
_import_keypoints_cmd("mmpose", "MMPose")


@command.group("export", short_help="Write a dataset in another tool's format (COCO for CVAT, Label Studio).")
def export_group() -> None:
    """Write dataset annotations for other tools."""


@export_group.command("coco", short_help="One COCO person-keypoints file of a dataset, for review tools.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The COCO JSON file to write.",
)
@click.option("--name", default=None, help="Dataset name (needed when DATASET holds several).")
def export_coco_cmd(dataset: Path, out: Path, name: str | None) -> None:
    """Write DATASET's people as one COCO person-keypoints file (for CVAT, Label Studio, pycocotools).

    \b
    Photos whose people are separate frames become one image again; annotation
    ids stay the dataset's, so `p2m annotate import coco FILE --merge-into
    DATASET` can bring the corrected keypoints back. Upload DATASET/images
    with the file.
    """
    from p2m.annotate.coco_roundtrip import export_coco

    stats = export_coco(dataset, out, name=name)
    click.echo(f"{out}: {stats['images']} images, {stats['annotations']} people of {stats['name']}")


@command.command("review", short_help="Correct keypoints and reject people in a local web page.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "--open/--no-open",
    "open_browser",
    default=False,
    show_default=True,
    help="Open the page in the default web browser.",
)
def review_cmd(dataset: Path, port: int, open_browser: bool) -> None:
    """Serve a review page for DATASET on 127.0.0.1 until Ctrl+C.

    \b
    Page through the images, drag keypoints, set their visibility (2 visible,
    1 occluded, 0 unlabelled), accept or reject each person, and save. A save
    rewrites only that annotation of its data.json, atomically; a save from a
    stale tab is refused with a conflict message. Rejected people stay in the
    file with review.status = "rejected". The URL carries a random token:
    only someone with the URL can use the page. Over SSH, forward the port
    (ssh -L PORT:127.0.0.1:PORT host) and pass --port PORT.
    """
    from p2m.annotate.review import review

    def ready(url: str) -> None:
        click.echo(f"Reviewing {dataset} at {url}")
        click.echo("Press Ctrl+C to stop.")

    review(dataset, port=port, open_browser=open_browser, on_ready=ready)
