"""A round trip through CVAT / Label Studio: one COCO person-keypoints file out, corrected keypoints merged back.

`p2m annotate export coco` writes one name of a dataset as a single plain COCO file (images, annotations,
categories; only COCO's fields) that review tools open. A photo whose people are separate frames (detect and the
keypoint imports give each person a frame) is one image again, so a reviewer sees everyone on it. Annotation ids
are the dataset's own, so the corrections can come back by id.

`p2m annotate import coco FILE --merge-into DATASET` puts the corrected keypoints back into the annotations they
came from: by annotation id when the file kept it (same id, same photo), else (tools that renumber ids on export)
the person of the same photo whose box overlaps most (IoU >= ``MATCH_IOU``). Only people whose keypoints changed
are rewritten, with the same rules as a review save (:func:`p2m.annotate.review_store.apply_edit`: bbox and
num_keypoints recomputed; with 3D, ``review.needs_refit`` set so that `p2m annotate fit` refits that person and
keeps every other fit). People the file adds are counted, not merged.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.multi_pose import box_overlap
from p2m.annotate.review_store import ReviewRequestError, apply_edit, file_lock
from p2m.errors import LayoutError
from p2m.io import read_json, write_json
from p2m.layout import PERSON_CATEGORY, Dataset, frame_key

logger = logging.getLogger(__name__)

#: Least box IoU for a person of the file to be the dataset's person of the same photo (when ids differ).
MATCH_IOU = 0.5
_COCO_ANN_FIELDS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "keypoints", "num_keypoints")


def _name_of(ds: Dataset, name: str | None) -> str:
    if name is None:
        if len(ds.names) != 1:
            raise LayoutError(f"{ds.root}: holds dataset names {ds.names}; pick one with --name")
        return ds.names[0]
    if name not in ds.names:
        raise LayoutError(f"{ds.root}: no dataset named {name!r}; found {ds.names}")
    return name


def export_coco(dataset: str | Path, out: str | Path, name: str | None = None) -> dict[str, Any]:
    """Write the people of ``dataset`` (one name, all subjects) as one COCO person-keypoints file ``out``.

    Returns:
        Stats: ``images`` (photos), ``annotations``, ``name``.
    """
    ds = Dataset(dataset)
    name = _name_of(ds, name)
    images: dict[tuple[int, str], dict[str, Any]] = {}
    anns = []
    for files in ds.subject_files:
        if files.name != name or files.data is None:
            continue
        data = read_json(files.data)
        photo_of: dict[Any, dict[str, Any]] = {}
        for img in data.get("images", []):
            key = (files.subject, str(img.get("file_name")))
            photo = images.setdefault(
                key,
                {
                    "id": img["id"],
                    "file_name": img["file_name"],
                    "width": img["width"],
                    "height": img["height"],
                },
            )
            for extra in ("license", "source_url", "flickr_url", "coco_url"):
                if extra in img and extra not in photo:
                    photo[extra] = img[extra]
            photo_of[img["id"]] = photo
        for ann in data.get("annotations", []):
            rec = {k: ann[k] for k in _COCO_ANN_FIELDS if k in ann}
            rec["image_id"] = photo_of[ann["image_id"]]["id"]
            rec["keypoints"] = [
                round(float(v), 2) if i % 3 != 2 else int(v) for i, v in enumerate(ann["keypoints"])
            ]
            rec.setdefault("category_id", 1)
            rec.setdefault("iscrowd", 0)
            rec.setdefault("area", float(rec["bbox"][2] * rec["bbox"][3]))
            anns.append(rec)
    coco = {"images": list(images.values()), "annotations": anns, "categories": [dict(PERSON_CATEGORY)]}
    write_json(out, coco, indent=1)
    return {"name": name, "images": len(images), "annotations": len(anns)}


def merge_coco(
    src: str | Path,
    dataset: str | Path,
    name: str | None = None,
    refit: bool = False,
    device: str = "auto",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Merge corrected keypoints from the COCO file ``src`` into ``dataset`` (module docstring).

    Args:
        src: a COCO person-keypoints file (a review tool's export of `p2m annotate export coco`).
        dataset: the dataset the export came from.
        name: its dataset name (needed when it holds several).
        refit: run `p2m annotate fit` on the changed people that have 3D (only those).
        device: for the refit.
        progress: for the refit.

    Returns:
        Stats: ``annotations/changed``, ``annotations/unchanged``, ``annotations/matched_by_id``,
        ``annotations/matched_by_box``, ``annotations/unmatched``, ``needs_refit`` (ids), ``changed`` (ids), and
        ``fit`` (the refit's stats) when ``refit``.

    Raises:
        P2MError: a malformed file, or corrected keypoints outside their photo (naming file, id and field).
    """
    t0 = time.monotonic()
    src, ds = Path(src), Dataset(dataset)
    name = _name_of(ds, name)
    coco = read_json(src)
    if not isinstance(coco, dict) or not all(
        isinstance(coco.get(k), list) for k in ("images", "annotations")
    ):
        raise LayoutError(f"{src}: expected a COCO object with lists 'images' and 'annotations'")
    photo_name = {img.get("id"): str(img.get("file_name")) for img in coco["images"] if isinstance(img, dict)}
    incoming = []
    for i, ann in enumerate(coco["annotations"]):
        where = (
            f"{src}: annotation id {ann.get('id')}" if isinstance(ann, dict) else f"{src}: annotations[{i}]"
        )
        kp = _keypoints(ann, where)
        if ann.get("image_id") not in photo_name:
            raise LayoutError(
                f"{where}: field 'image_id' = {ann.get('image_id')!r} names no image of the file"
            )
        incoming.append((ann, kp, photo_name[ann["image_id"]], where))

    stats: Counter = Counter()
    changed_ids: list[int] = []
    refit_ids: list[int] = []
    subjects = [f for f in ds.subject_files if f.name == name and f.data is not None]
    where_is = {}
    topologies: set[str] = set()  # of the fits being redone: a refit keeps their mesh topology
    claimed: set[int] = set()
    plan: dict[Path, list[tuple[int, dict[str, Any], np.ndarray, str]]] = {}
    on_photo: dict[str, list[dict[str, Any]]] = {}
    for files in subjects:
        data = read_json(files.data)
        names = {img["id"]: str(img["file_name"]) for img in data["images"]}
        for a in data["annotations"]:
            where_is[a["id"]] = files
            on_photo.setdefault(names.get(a["image_id"], ""), []).append(a)
    for ann, kp, fname, where in incoming:
        target = _match(ann, [a for a in on_photo.get(fname, []) if a["id"] not in claimed], stats)
        if target is None:
            stats["annotations/unmatched"] += 1
            logger.warning(
                "%s: matches no person of %s (a person added in the review tool?); not merged", where, fname
            )
            continue
        claimed.add(target)
        plan.setdefault(where_is[target].data, []).append((target, ann, kp, where))
    if incoming and not plan:
        raise LayoutError(
            f"{src}: none of its {len(incoming)} people matches a person of {ds.root} ({name}) by "
            f"annotation id or by photo and box; is it an export of this dataset?"
        )

    for files in subjects:
        if files.data not in plan:
            continue
        frames_3d = set()
        if files.joint_3d is not None:
            j3d = read_json(files.joint_3d)
            frames_3d = {(a, s, f) for a, subs in j3d.items() for s, fr in subs.items() for f in fr}
        params = read_json(files.body_param) if files.body_param is not None else {}
        with file_lock(files.data):
            data = read_json(files.data)  # re-read under the lock the review server uses
            images = {img["id"]: img for img in data["images"]}
            pos = {a["id"]: i for i, a in enumerate(data["annotations"])}
            for target, _ann, kp, where in plan[files.data]:
                old = data["annotations"][pos[target]]
                image = images[old["image_id"]]
                has_3d = frame_key(image) in frames_3d
                try:
                    new, changed = apply_edit(old, image, kp.tolist(), None, has_3d)
                except ReviewRequestError as exc:
                    raise LayoutError(f"{where}: {exc}") from exc
                if not changed:
                    stats["annotations/unchanged"] += 1
                    continue
                new["review"]["source"] = str(src.name)
                data["annotations"][pos[target]] = new
                stats["annotations/changed"] += 1
                changed_ids.append(target)
                if new["review"].get("needs_refit"):
                    refit_ids.append(target)
                    a_, s_, f_ = frame_key(image)
                    topo = params.get(a_, {}).get(s_, {}).get(f_, {}).get("topology")
                    if isinstance(topo, str):
                        topologies.add(topo)
            if any(t in changed_ids for t, *_ in plan[files.data]):
                write_json(files.data, data, indent=1)
    result: dict[str, Any] = dict(sorted(stats.items()))
    result["changed"] = sorted(changed_ids)
    result["needs_refit"] = sorted(refit_ids)
    if refit and refit_ids:
        from p2m.annotate.fit import fit_bodies

        kwargs = {"topology": topologies.pop()} if len(topologies) == 1 else {}
        result["fit"] = fit_bodies(
            ds.root, device=device, names=[name], ann_ids=refit_ids, progress=progress, **kwargs
        )
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def _keypoints(ann: Any, where: str) -> np.ndarray:
    if not isinstance(ann, dict):
        raise LayoutError(f"{where}: expected an annotation object")
    try:
        kp = np.asarray(ann.get("keypoints"), dtype=np.float64).reshape(17, 3)
    except (TypeError, ValueError) as exc:
        raise LayoutError(f"{where}: field 'keypoints' is not 17 x (x, y, v) = 51 numbers") from exc
    if not np.isin(kp[:, 2], (0, 1, 2)).all() or not np.isfinite(kp).all():
        raise LayoutError(
            f"{where}: field 'keypoints' has visibilities {kp[:, 2].tolist()}, expected 0, 1 or 2"
        )
    return kp


def _match(ann: dict[str, Any], candidates: list[dict[str, Any]], stats: Counter) -> int | None:
    """The dataset annotation id the file's annotation corrects: the same id among the people of the same photo
    not yet claimed (``candidates``), else the one whose box overlaps most."""
    by_id = [a for a in candidates if a["id"] == ann.get("id")]
    if by_id:
        stats["annotations/matched_by_id"] += 1
        return by_id[0]["id"]
    box = np.asarray(ann.get("bbox", [0, 0, 0, 0]), dtype=np.float64)
    scored = [(box_overlap(box, np.asarray(a["bbox"], dtype=np.float64))[0], a["id"]) for a in candidates]
    if scored and max(scored)[0] >= MATCH_IOU:
        stats["annotations/matched_by_box"] += 1
        return max(scored)[1]
    return None
