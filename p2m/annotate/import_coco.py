"""`p2m annotate import coco`: a COCO person_keypoints JSON (and its images) as a Contract 1 dataset of single photos.

COCO-17 keypoints, bbox, area, iscrowd, num_keypoints and every other annotation field (segmentation...) are kept
as they are; ``joints_2d_h36m`` comes from :func:`p2m.joints.coco_to_h36m`. Each image becomes a single-photo
frame of subject 1 with its own camera (R = I, t = 0, focal from EXIF or the default of
:mod:`p2m.annotate.photo`). Ids are renumbered to stay unique in the dataset; the original ones are kept as
``source_id``. Every check runs before anything is written, so bad input leaves the dataset as it was.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.photo import (
    MAX_IMAGE_SIDE,
    check_image_file,
    next_photo_index,
    place_image,
    single_photo_camera,
)
from p2m.errors import LayoutError, short_repr
from p2m.io import is_finite_number, is_int, read_json, write_json
from p2m.joints import coco_to_h36m
from p2m.layout import IMAGES_DIR, DatasetWriter

logger = logging.getLogger(__name__)

SUBJECT = 1
_SKIP_IMAGE_KEYS = ("id", "subject", "action_idx", "subaction_idx", "cam_idx", "frame_idx")


def import_coco(
    src: str | Path,
    out: str | Path,
    name: str = "coco",
    images: str | Path | None = None,
    with_images: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Import a COCO person_keypoints file into the dataset ``out`` under ``name``.

    Args:
        src: the COCO JSON (``images``, ``annotations``, ``categories`` with a ``person`` category).
        out: the dataset folder (created if needed).
        name: dataset name (file prefix ``{name}_subject1_*``).
        images: folder the ``file_name`` values are relative to (default: the JSON's folder).
        with_images: check and copy (hard-link) the images into ``out/images``; False imports annotations
            only (a pose-only dataset: no ``images/`` folder is made and no file is checked).
        progress: show a tqdm bar (None: only on a terminal).

    Returns:
        Stats: ``images``, ``annotations``, ``annotations/skipped_category``, ``images/copied``,
        ``camera/exif_35mm``, ``camera/default_diagonal``, ``seconds``.

    Raises:
        P2MError: malformed JSON, a missing or mistyped field, a missing image or one that is not an image or
            not of the recorded size; the message names the file, the record id and the field.
    """
    from tqdm import tqdm

    t0 = time.monotonic()
    src, out = Path(src), Path(out)
    image_root = Path(images) if images is not None else src.parent
    coco = read_json(src)
    if not isinstance(coco, dict):
        raise LayoutError(f"{src}: expected a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories", "licenses"):
        if not isinstance(coco.get(key), list) and (key in coco or key != "licenses"):
            raise LayoutError(f"{src}: field {key!r} must be a list, got {_type(coco.get(key))}")
    person_ids = {
        cid for cid, c in _records_by_id(src, "categories", coco["categories"]) if c.get("name") == "person"
    }
    if not person_ids:
        raise LayoutError(f"{src}: field 'categories' has no category named 'person'")
    licenses = dict(_records_by_id(src, "licenses", coco.get("licenses", [])))
    stats: Counter = Counter()

    records = [_image_record(src, i, img, licenses) for i, img in enumerate(coco["images"])]
    by_id: dict[Any, dict[str, Any]] = {}
    for rec in records:
        if rec["source_id"] in by_id:
            raise LayoutError(f"{src}: image id {rec['source_id']}: field 'id' is used by two images")
        by_id[rec["source_id"]] = rec
    anns: dict[Any, list[dict[str, Any]]] = {k: [] for k in by_id}
    seen_ann: set[Any] = set()
    for i, ann in enumerate(coco["annotations"]):
        rec = _annotation_record(src, i, ann, by_id, person_ids, seen_ann)
        if rec is None:
            stats["annotations/skipped_category"] += 1
            continue
        anns[ann["image_id"]].append(rec)

    focal: dict[Any, float | None] = {}
    if with_images:
        for rec in tqdm(
            records, desc="check images", unit="img", disable=None if progress is None else not progress
        ):
            where = f"{src}: image id {rec['source_id']}"
            focal[rec["source_id"]] = check_image_file(
                image_root / rec["file_name"], rec["width"], rec["height"], where
            )

    # Everything is checked: write.
    idx = next_photo_index(out, name, SUBJECT)
    info = {"import": {"coco": {"source": str(src), "licenses": list(licenses.values())}}}
    with DatasetWriter(out, name, info=info) as writer:
        for rec in records:
            sid = rec["source_id"]
            image = dict(rec)
            if with_images:
                image["file_name"] = place_image(
                    image_root / rec["file_name"], out / IMAGES_DIR, rec["file_name"]
                )
                stats["images/copied"] += 1
            cam, cam_source = single_photo_camera(rec["width"], rec["height"], focal.get(sid))
            stats[f"camera/{cam_source}"] += 1
            image.update(action_idx=1, subaction_idx=1, cam_idx=idx, frame_idx=idx, focal_source=cam_source)
            writer.add_camera(SUBJECT, idx, cam)
            writer.add_frame(SUBJECT, image, anns[sid])
            idx += 1
        stats["images"] = writer.images_added
        stats["annotations"] = writer.annotations_added
    result: dict[str, Any] = dict(sorted(stats.items()))
    result["seconds"] = round(time.monotonic() - t0, 3)
    write_json(out / "import_coco_stats.json", result, indent=1)
    return result


def _image_record(src: Path, i: int, img: Any, licenses: dict[Any, dict]) -> dict[str, Any]:
    if not isinstance(img, dict):
        raise LayoutError(f"{src}: images[{i}] is a {type(img).__name__}, expected an object")
    rid = img.get("id")
    where = f"{src}: image id {short_repr(rid, 60)}" if rid is not None else f"{src}: images[{i}]"
    if not is_int(rid) or rid == 0:
        raise LayoutError(f"{where}: field 'id' = {short_repr(rid, 60)}, expected a non-zero integer")
    fn = img.get("file_name")
    if not isinstance(fn, str) or not fn or fn.startswith("/") or ".." in fn.split("/") or "\0" in fn:
        raise LayoutError(f"{where}: field 'file_name' = {short_repr(fn, 60)}, expected a relative path")
    for key in ("width", "height"):
        if not is_int(img.get(key)) or not 0 < img[key] <= MAX_IMAGE_SIDE:
            raise LayoutError(
                f"{where}: field {key!r} = {short_repr(img.get(key), 60)}, expected a positive integer "
                f"(at most {MAX_IMAGE_SIDE} px)"
            )
    rec = {k: v for k, v in img.items() if k not in _SKIP_IMAGE_KEYS}
    rec["source_id"] = rid
    lic_id = img.get("license")
    if lic_id is not None and not is_int(lic_id) and not isinstance(lic_id, str):
        raise LayoutError(
            f"{where}: field 'license' = {short_repr(lic_id, 60)}, expected a license id (integer) or name"
        )
    lic = licenses.get(lic_id) if is_int(lic_id) else None
    if lic is not None:
        rec["license_id"] = lic_id
        rec["license"] = str(lic.get("name", ""))
        if lic.get("url"):
            rec["license_url"] = lic["url"]
    elif is_int(lic_id):
        rec["license_id"] = rec.pop("license")
    url = img.get("flickr_url") or img.get("coco_url")
    if url and "source_url" not in rec:
        rec["source_url"] = url
    return rec


def _annotation_record(
    src: Path, i: int, ann: Any, images: dict[Any, dict], person_ids: set[Any], seen: set[Any]
) -> dict[str, Any] | None:
    if not isinstance(ann, dict):
        raise LayoutError(f"{src}: annotations[{i}] is a {type(ann).__name__}, expected an object")
    rid = ann.get("id")
    where = f"{src}: annotation id {short_repr(rid, 60)}" if rid is not None else f"{src}: annotations[{i}]"
    for key in ("category_id", "image_id"):
        if not is_int(ann.get(key)):
            raise LayoutError(
                f"{where}: field {key!r} = {short_repr(ann.get(key), 60)}, expected an integer id"
            )
    if ann["category_id"] not in person_ids:
        return None
    if not is_int(rid):
        raise LayoutError(f"{where}: field 'id' = {short_repr(rid, 60)}, expected an integer")
    if rid in seen:
        raise LayoutError(f"{where}: field 'id' is used by two annotations")
    seen.add(rid)
    if ann["image_id"] not in images:
        raise LayoutError(f"{where}: field 'image_id' = {ann['image_id']!r} names no image of the file")
    kp = _numbers(ann.get("keypoints"), 51, where, "keypoints", "17 x (x, y, v) = 51 numbers")
    vis = kp[2::3]
    if not np.isin(vis, (0, 1, 2)).all():
        raise LayoutError(f"{where}: field 'keypoints' has visibilities {vis.tolist()}, expected 0, 1 or 2")
    bbox = _numbers(ann.get("bbox"), 4, where, "bbox", "[x, y, w, h]")
    if bbox[2] < 0 or bbox[3] < 0:
        raise LayoutError(f"{where}: field 'bbox' = {bbox.tolist()}, expected w, h >= 0")
    nk = ann.get("num_keypoints")
    if nk is not None and nk != int((vis > 0).sum()):
        raise LayoutError(
            f"{where}: field 'num_keypoints' = {short_repr(nk, 60)}, but {int((vis > 0).sum())} keypoints "
            "have v > 0"
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        raise LayoutError(f"{where}: field 'iscrowd' = {short_repr(ann.get('iscrowd'), 60)}, expected 0 or 1")
    if "area" in ann and not (is_finite_number(ann["area"]) and ann["area"] >= 0):
        raise LayoutError(
            f"{where}: field 'area' = {short_repr(ann['area'], 60)}, expected a finite number >= 0"
        )
    rec = {k: v for k, v in ann.items() if k not in ("id", "image_id")}
    rec["source_id"] = rid
    rec["keypoints"] = ann["keypoints"]
    rec["joints_2d_h36m"] = coco_to_h36m(kp.reshape(17, 3)).tolist()
    return rec


def _numbers(value: Any, n: int, where: str, field: str, what: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} values" if isinstance(value, list) else f"a {type(value).__name__}"
        raise LayoutError(f"{where}: field {field!r} has {got}, expected {what}")
    bad = [v for v in value if not is_finite_number(v)]
    if bad:
        raise LayoutError(
            f"{where}: field {field!r} holds {short_repr(bad[0], 60)}, expected {what} (finite)"
        )
    return np.asarray(value, dtype=np.float64)


def _records_by_id(src: Path, key: str, records: list[Any]) -> list[tuple[int, dict[str, Any]]]:
    """(id, record) of the object records of a top-level list; a record whose id is not an integer is an error."""
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        if not is_int(rec.get("id")):
            raise LayoutError(
                f"{src}: {key}[{i}]: field 'id' = {short_repr(rec.get('id'), 60)}, expected an integer"
            )
        out.append((rec["id"], rec))
    return out


def _type(value: Any) -> str:
    return "nothing (null)" if value is None else type(value).__name__
