"""`p2m annotate import openpose|mmpose`: another detector's 2D keypoint files (and their photos) as a dataset.

Each JSON file holds the people of one photo (:mod:`p2m.pose_formats` reads both formats as COCO-17). The photo
is found beside it (or under ``images``) by the file's stem: OpenPose names its output ``<stem>_keypoints.json``,
MMPose's inferencer ``<stem>.json``. The layout is the one `p2m annotate detect` writes: the photo gets a camera
(R = I, t = 0, EXIF or default focal) and every person one frame of their own (``frame_idx``, ``person_idx``,
``people_in_image``), so `p2m annotate fit` fits each one. Everything is read and checked before anything is
written.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.photo import (
    IMAGE_SUFFIXES,
    check_image_file,
    next_photo_index,
    place_image,
    single_photo_camera,
)
from p2m.camera import bbox_from_joints
from p2m.errors import LayoutError
from p2m.io import read_json, write_json
from p2m.joints import coco_to_h36m
from p2m.layout import IMAGES_DIR, DatasetWriter
from p2m.pose_formats import FORMATS, Person2D, read_people, sniff_format

logger = logging.getLogger(__name__)

SUBJECT = 1
#: Least number of labelled keypoints (v > 0) for a person to be imported.
MIN_KEYPOINTS = 3


def import_keypoints(
    src: str | Path,
    out: str | Path,
    fmt: str,
    name: str | None = None,
    images: str | Path | None = None,
) -> dict[str, Any]:
    """Import OpenPose or MMPose JSON files (a file or a folder of them) with their photos into ``out``.

    Args:
        src: one JSON file or a folder (searched recursively for ``*.json``).
        out: the dataset folder (created or extended).
        fmt: "openpose" or "mmpose".
        name: dataset name (default: ``fmt``).
        images: folder of the photos (default: each JSON's folder).

    Returns:
        Stats: ``files``, ``images``, ``people``, ``people/too_few_keypoints``, ``camera/<source>``, ``seconds``.

    Raises:
        P2MError: a file in another format, a malformed record, or no photo for a file (the message names it).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {list(FORMATS)}")
    t0 = time.monotonic()
    src, out = Path(src), Path(out)
    name = name or fmt
    files = sorted(src.rglob("*.json")) if src.is_dir() else [src]
    if not files:
        raise LayoutError(f"{src}: no .json files")
    stats: Counter = Counter()
    plan = []
    for path in files:
        data = read_json(path)
        found = sniff_format(data)
        if found != fmt:
            raise LayoutError(f"{path}: not {fmt} JSON (looks like {found or 'neither OpenPose nor MMPose'})")
        photo = _photo_of(path, Path(images) if images is not None else path.parent, fmt)
        width, height = _image_size(photo)
        focal = check_image_file(photo, width, height, str(path))
        people = [p for p in read_people(data, str(path), fmt) if _enough(p, stats)]
        plan.append((photo, width, height, focal, people))
    idx = next_photo_index(out, name, SUBJECT)
    with DatasetWriter(out, name, info={"import": {fmt: {"source": str(src)}}}) as writer:
        for photo, width, height, focal, people in plan:
            rel = place_image(photo, out / IMAGES_DIR, photo.name)
            cam, cam_source = single_photo_camera(width, height, focal)
            stats[f"camera/{cam_source}"] += 1
            writer.add_camera(SUBJECT, idx, cam)
            image = {
                "file_name": rel,
                "width": width,
                "height": height,
                "action_idx": 1,
                "subaction_idx": 1,
                "cam_idx": idx,
                "frame_idx": idx,
                "focal_source": cam_source,
            }
            if len(people) <= 1:
                writer.add_frame(SUBJECT, image, [_annotation(p, width, height) for p in people])
            for k, person in enumerate(people if len(people) > 1 else []):
                frame = {**image, "frame_idx": idx + k, "person_idx": k, "people_in_image": len(people)}
                writer.add_frame(SUBJECT, frame, [_annotation(person, width, height)])
            idx += max(1, len(people))
            stats["people"] += len(people)
        stats["images"] = len(plan)
    stats["files"] = len(files)
    result: dict[str, Any] = dict(sorted(stats.items()))
    result["seconds"] = round(time.monotonic() - t0, 3)
    write_json(out / f"import_{fmt}_stats.json", result, indent=1)
    return result


def _enough(person: Person2D, stats: Counter) -> bool:
    if int((person.keypoints[:, 2] > 0).sum()) >= MIN_KEYPOINTS:
        return True
    stats["people/too_few_keypoints"] += 1
    return False


def _photo_of(path: Path, folder: Path, fmt: str) -> Path:
    stem = path.stem.removesuffix("_keypoints") if fmt == "openpose" else path.stem
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    raise LayoutError(
        f"{path}: no photo named {stem}.* ({', '.join(IMAGE_SUFFIXES)}) in {folder}; pass --images"
    )


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise LayoutError(f"{path}: not a readable image ({exc})") from exc


def _annotation(person: Person2D, width: int, height: int) -> dict[str, Any]:
    kp = person.keypoints
    bbox = person.bbox or bbox_from_joints(kp[:, :2], kp[:, 2], image_size=(width, height))
    return {
        "bbox": [round(float(b), 2) for b in bbox],
        "keypoints": np.round(kp, 2),
        "joints_2d_h36m": np.round(coco_to_h36m(kp), 2),
        "score": round(float(person.score), 4),
        "keypoint_scores": [round(float(s), 4) for s in person.scores],
    }
