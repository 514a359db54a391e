"""`p2m infer`: options -> one call to p2m.infer.infer -> the fitted camera and a one-line summary."""

from __future__ import annotations

import json
from pathlib import Path

import click

from p2m.cli.common import device_option


@click.command("infer")
@click.argument("checkpoint", type=str)
@click.option(
    "--pose2d",
    "pose2d",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="2D pose: JSON or .npy, COCO-17 or H36M-17, (17, 2) or (17, 3) with visibility; a data.json "
    "from `p2m annotate detect`, one annotation, or a plain list.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: mesh.obj, mesh.ply (and mesh.glb, per --format), joints3d.json, mesh.png, "
    "refine.png, infer.json.",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Photo to draw the mesh on (default: the photo a data.json names, else a blank canvas).",
)
@click.option(
    "--joint-set",
    type=click.Choice(["auto", "coco", "h36m"]),
    default="auto",
    show_default=True,
    help="Joint set of the 2D pose (auto: from the file's fields, else from the joint layout).",
)
@click.option(
    "--person",
    type=click.IntRange(min=0),
    default=None,
    help="0-based person in the file (annotations of a data.json, a list of people).  [default: 0]",
)
@click.option(
    "--annotation-id", type=int, default=None, help="Pick a data.json annotation by its id instead."
)
@device_option()
@click.option(
    "--mesh-axes",
    type=click.Choice(["y-up", "camera"]),
    default="y-up",
    show_default=True,
    help="Axes of the mesh files: y-up (x right, y up, z to the viewer) or the camera's (y down, z ahead).",
)
@click.option("--full-image", is_flag=True, help="Show the whole photo even when the person is small in it.")
@click.option(
    "--format",
    "formats",
    multiple=True,
    metavar="FORMATS",
    help="Mesh files to write: obj, ply, glb (rigged glTF binary, H36M-17 skeleton); repeat the option or "
    "give a comma list.  [default: obj,ply]",
)
@click.option(
    "--refine/--no-refine",
    default=True,
    show_default=True,
    help="Restore the hands and feet from the body model (a graph CNN blurs them); refine.png shows "
    "before / after.",
)
@click.option(
    "--refine-method",
    type=click.Choice(["fit", "paste"]),
    default="fit",
    show_default=True,
    help="fit: fit the body model to the whole mesh and take its hands and feet (~1 s); paste: rigidly "
    "align the template's.",
)
@click.option(
    "--texture",
    is_flag=True,
    help="Texture the mesh from the photo (needs --image, or a data.json naming its photo): mesh.obj + "
    "mesh.mtl + mesh_texture.png, and a textured mesh.glb.",
)
@click.option(
    "--mesh",
    type=click.Choice(["network", "full"]),
    default="network",
    show_default=True,
    help="network: the predicted mesh; full: the refine fit's full-resolution anny mesh (13,718 "
    "vertices) with MakeHuman's UV layout, so --texture writes a standard body UV map.",
)
@click.option(
    "--intrinsics",
    type=str,
    default=None,
    metavar="FX,FY,CX,CY",
    help="The photo's camera (px): the root is then placed in the camera frame and joints3d.json gets "
    "camera-frame joints (a data.json with a camera file gives them already).",
)
def command(
    checkpoint: str,
    pose2d: Path,
    out: Path,
    image: Path | None,
    joint_set: str,
    person: int | None,
    annotation_id: int | None,
    device: str,
    mesh_axes: str,
    full_image: bool,
    formats: tuple[str, ...],
    refine: bool,
    refine_method: str,
    texture: bool,
    mesh: str,
    intrinsics: str | None,
) -> None:
    """Turn one person's 2D pose into a mesh, 3D joints and a picture.

    CHECKPOINT is a run folder (its best.pt, else last.pt, else best.safetensors), a .pt checkpoint, a
    best.safetensors file, or `default`: the pretrained model shipped with p2m.

    \b
    p2m infer default --pose2d pose.json --out out/
    p2m infer runs/p2m --pose2d pose.json --out out/
    p2m infer runs/p2m/best.safetensors --pose2d DS/annotations/photos_subject1_data.json --person 2 --out out/
    p2m infer runs/p2m --pose2d pose.json --image photo.jpg --format obj,glb --texture --out out/
    """
    if person is not None and annotation_id is not None:
        raise click.UsageError("give --person or --annotation-id, not both")
    fmts = tuple(dict.fromkeys(f.strip().lower() for arg in formats for f in arg.split(",") if f.strip()))
    allowed = ("obj", "ply", "glb")
    if bad := [f for f in fmts if f not in allowed]:
        raise click.BadParameter(f"{', '.join(bad)}: expected obj, ply or glb", param_hint="--format")
    k = None
    if intrinsics is not None:
        try:
            k = tuple(float(v) for v in intrinsics.split(","))
        except ValueError:
            k = ()
        if len(k) != 4:
            raise click.BadParameter(
                f"{intrinsics!r}: expected four numbers FX,FY,CX,CY", param_hint="--intrinsics"
            )
    # checked here, before the model loads (the same words as the checks behind them)
    if checkpoint != "default" and not Path(checkpoint).exists():
        raise click.ClickException(f"{checkpoint}: no such checkpoint file or run folder")
    if not pose2d.is_file():
        raise click.ClickException(f"{pose2d}: no such 2D pose file (expected a .json or .npy file)")
    from p2m.infer import infer

    result = infer(
        checkpoint,
        pose2d,
        out,
        image=image,
        joint_set=joint_set,
        person=person,
        annotation_id=annotation_id,
        device=device,
        mesh_axes=mesh_axes.replace("-", "_"),
        crop=not full_image,
        formats=fmts or ("obj", "ply"),
        refine=refine,
        refine_method=refine_method,
        texture=texture,
        mesh=mesh,
        intrinsics=k,
    )
    click.echo(f"camera: {json.dumps(result.camera.to_dict())}")
    if result.root_translation_mm is not None:
        click.echo(
            f"root in the photo's camera frame: {[round(float(v), 1) for v in result.root_translation_mm]} mm"
        )
    for kind, path in result.files.items():
        click.echo(f"written: {path}  ({kind})")
    click.echo(result.summary())
