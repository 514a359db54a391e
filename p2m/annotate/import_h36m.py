"""`p2m annotate import h36m`: Human3.6M as released for Pose2Mesh (per-subject data/camera/joint_3d/smpl_param files).

Source layout (hongsukchoi/Pose2Mesh_RELEASE ``data/Human36M``)::

    SRC/annotations/{prefix}_subject{S}_data.json        COCO-style; images carry subject, action_idx,
                                                         subaction_idx, cam_idx, frame_idx; annotations bbox
                                                         (and keypoints_vis, 17 booleans)
    SRC/annotations/{prefix}_subject{S}_camera.json      {cam_idx: {R, t (mm), f, c}}, X_cam = R X_world + t
    SRC/annotations/{prefix}_subject{S}_joint_3d.json    {action: {subaction: {frame: 17x3 world mm}}}
    SRC/annotations/{prefix}_subject{S}_smpl_param.json  {action: {subaction: {frame: {pose 72, shape 10,
                                                         trans 3 (m, world)}}}}  (optional; frames may lack one)
    SRC/images/<file_name>                               optional

Joint order is already Pose2Mesh's H36M-17 (ours), right side first. What is added: ``joints_2d_h36m`` (the
projection of joint_3d through the camera, with Human3.6M's distortion when the camera has k/p; v = 2, or 1
where ``keypoints_vis`` is false), COCO ``keypoints`` for the 12 body joints the two sets share (face points
v = 0), ``num_keypoints``, ``area``, and body_param records ``{"model": "smpl", pose, shape, trans}``. Ids are
renumbered (unique across subjects, never 0); the original ones are kept as ``source_id``. Every check runs
before anything is written.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.photo import MAX_IMAGE_SIDE, check_image_file, place_image
from p2m.body.common import SMPL_PARAM_SIZES
from p2m.camera import Camera, bbox_from_joints
from p2m.errors import LayoutError, P2MError, short_repr
from p2m.io import is_int, read_json, write_json
from p2m.joints import H36M_NUM_JOINTS
from p2m.layout import ANNOTATIONS_DIR, IMAGES_DIR, DatasetWriter, frame_key

logger = logging.getLogger(__name__)

_FILE_RE = re.compile(
    r"^(?P<prefix>.+?)_subject(?P<subject>\d+)_(?P<kind>data|camera|joint_3d|smpl_param)\.json$"
)
#: COCO-17 index -> H36M-17 index for the 12 body joints both sets have (shoulders, elbows, wrists, hips, knees,
#: ankles); COCO's face points (0-4) have no H36M counterpart.
COCO_FROM_H36M: dict[int, int] = {
    5: 11,
    6: 14,
    7: 12,
    8: 15,
    9: 13,
    10: 16,
    11: 4,
    12: 1,
    13: 5,
    14: 2,
    15: 6,
    16: 3,
}
_IMAGE_INTS = ("width", "height", "action_idx", "subaction_idx", "cam_idx", "frame_idx")


@dataclass
class _Subject:
    subject: int
    files: dict[str, Path]
    cameras: dict[str, Camera] = field(default_factory=dict)
    frames: list[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None, dict | None]] = field(
        default_factory=list
    )


def import_h36m(
    src: str | Path,
    out: str | Path,
    name: str = "Human36M",
    images: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Import Pose2Mesh's Human3.6M annotation files into the dataset ``out`` under ``name``.

    Args:
        src: the Human36M folder (holding ``annotations/``) or the annotations folder itself.
        out: the dataset folder (created if needed).
        name: dataset name (default ``Human36M``, the prefix Pose2Mesh's loader reads).
        images: folder holding the images by ``file_name`` (default ``SRC/images`` when it exists). Without one,
            the result is pose-only (no ``images/`` folder). With one, every image must exist, be an image and
            have the recorded size; they are hard-linked or copied into ``out/images``.
        progress: show a tqdm bar (None: only on a terminal).

    Returns:
        Stats: ``subjects``, ``images``, ``annotations``, ``cameras``, ``joint_3d_frames``, ``body_params``,
        ``images/copied``, ``joints_2d/projected``, ``seconds``.

    Raises:
        P2MError: no subject files, malformed JSON, a missing or mistyped field, a wrong array shape, a missing
            or broken image; the message names the file, the record and the field.
    """
    from tqdm import tqdm

    t0 = time.monotonic()
    src, out = Path(src), Path(out)
    ann_dir = src / ANNOTATIONS_DIR if (src / ANNOTATIONS_DIR).is_dir() else src
    image_root = (
        Path(images) if images is not None else (src / IMAGES_DIR if (src / IMAGES_DIR).is_dir() else None)
    )
    subjects = _find_subjects(ann_dir)
    stats: Counter = Counter()
    for sub in subjects:
        _parse_subject(sub, stats)
    if image_root is not None:
        todo = [(sub, img) for sub in subjects for img, *_ in sub.frames]
        for sub, img in tqdm(
            todo, desc="check images", unit="img", disable=None if progress is None else not progress
        ):
            check_image_file(
                image_root / img["file_name"],
                img["width"],
                img["height"],
                f"{sub.files['data']}: image id {img['source_id']}",
            )

    # Everything is checked: write.
    info = {
        "import": {
            "h36m": {
                "source": str(ann_dir),
                "smpl": "Pose2Mesh's SMPL fits (pose 72, shape 10, "
                "trans m); SMPL itself is licensed separately",
            }
        }
    }
    with DatasetWriter(out, name, info=info) as writer:
        for sub in subjects:
            for cam_idx, cam in sub.cameras.items():
                writer.add_camera(sub.subject, int(cam_idx), cam)
            for img, anns, j3d, params in sub.frames:
                if image_root is not None:
                    img = {
                        **img,
                        "file_name": place_image(
                            image_root / img["file_name"], out / IMAGES_DIR, img["file_name"]
                        ),
                    }
                    stats["images/copied"] += 1
                writer.add_frame(sub.subject, img, anns, joints_3d_world=j3d, body_param=params)
        stats["images"] = writer.images_added
        stats["annotations"] = writer.annotations_added
    stats["subjects"] = len(subjects)
    result: dict[str, Any] = dict(sorted(stats.items()))
    result["seconds"] = round(time.monotonic() - t0, 3)
    write_json(out / "import_h36m_stats.json", result, indent=1)
    return result


def _find_subjects(ann_dir: Path) -> list[_Subject]:
    if not ann_dir.is_dir():
        raise P2MError(f"{ann_dir}: not a folder; expected Pose2Mesh's Human36M folder or its annotations/")
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for path in sorted(ann_dir.iterdir()):
        m = _FILE_RE.match(path.name)
        if m:
            found.setdefault((m["prefix"], int(m["subject"])), {})[m["kind"]] = path
    prefixes = sorted({p for p, _ in found})
    if not found:
        raise P2MError(
            f"{ann_dir}: no {{prefix}}_subject{{S}}_data.json files (Pose2Mesh's Human3.6M layout)"
        )
    if len(prefixes) > 1:
        raise P2MError(f"{ann_dir}: files of several datasets {prefixes}; import one folder per dataset")
    out = []
    for (_, s), files in sorted(found.items()):
        for kind in ("data", "camera", "joint_3d"):
            if kind not in files:
                raise P2MError(f"{ann_dir}: subject {s} has no {prefixes[0]}_subject{s}_{kind}.json")
        out.append(_Subject(s, files))
    return out


def _parse_subject(sub: _Subject, stats: Counter) -> None:
    data_path, cam_path = sub.files["data"], sub.files["camera"]
    data = read_json(data_path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise LayoutError(f"{data_path}: expected an object with 'images' and 'annotations' lists")
    cams = read_json(cam_path)
    if not isinstance(cams, dict):
        raise LayoutError(f"{cam_path}: expected an object {{cam_idx: {{R, t, f, c}}}}")
    for key, rec in cams.items():
        if not str(key).isdigit():
            raise LayoutError(f"{cam_path}: key {key!r} is not an integer cam_idx")
        sub.cameras[str(int(key))] = Camera.from_dict(rec, where=f"{cam_path}: cam_idx {key}")
    stats["cameras"] += len(sub.cameras)
    joints = _nested(sub.files["joint_3d"])
    smpl = _nested(sub.files["smpl_param"]) if "smpl_param" in sub.files else {}
    anns_of: dict[Any, list[dict[str, Any]]] = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise LayoutError(f"{data_path}: annotations[{i}] is a {type(ann).__name__}, expected an object")
        if not is_int(ann.get("image_id")):
            raise LayoutError(
                f"{data_path}: annotation id {short_repr(ann.get('id'), 60)}: field 'image_id' = "
                f"{short_repr(ann.get('image_id'), 60)}, expected an integer id"
            )
        anns_of.setdefault(ann["image_id"], []).append(ann)
    seen_frames: set[tuple[str, str, str]] = set()
    for i, img in enumerate(data["images"]):
        where = (
            f"{data_path}: image id {short_repr(img.get('id'), 60)}"
            if isinstance(img, dict)
            else f"{data_path}: images[{i}]"
        )
        rec = _image(img, sub.subject, where)
        cam = sub.cameras.get(str(rec["cam_idx"]))
        if cam is None:
            raise LayoutError(f"{where}: field 'cam_idx' = {rec['cam_idx']} has no camera in {cam_path.name}")
        key = frame_key(rec)
        j3d = _joints(joints, key, sub.files["joint_3d"], where)
        params = _smpl(smpl, key, sub.files.get("smpl_param"))
        anns = [
            _annotation(a, rec, cam, j3d, f"{data_path}: annotation id {a.get('id')}", stats)
            for a in anns_of.pop(img.get("id"), [])
        ]
        if key not in seen_frames:
            seen_frames.add(key)
            stats["joint_3d_frames"] += j3d is not None
            stats["body_params"] += params is not None
        sub.frames.append((rec, anns, j3d, params))
    if anns_of:
        image_id, anns = next(iter(anns_of.items()))
        raise LayoutError(
            f"{data_path}: annotation id {anns[0].get('id')}: field 'image_id' = {image_id!r} "
            "names no image of the file"
        )


def _image(img: Any, subject: int, where: str) -> dict[str, Any]:
    if not isinstance(img, dict):
        raise LayoutError(f"{where}: expected an object, got {type(img).__name__}")
    fn = img.get("file_name")
    if not isinstance(fn, str) or not fn or fn.startswith("/") or ".." in fn.split("/"):
        raise LayoutError(f"{where}: field 'file_name' = {short_repr(fn, 60)}, expected a relative path")
    for key in ("id", *_IMAGE_INTS):
        value = img.get(key)
        if not is_int(value):
            raise LayoutError(f"{where}: field {key!r} = {short_repr(value, 60)}, expected an integer")
    for key in ("width", "height"):
        if not 0 < img[key] <= MAX_IMAGE_SIDE:
            raise LayoutError(
                f"{where}: field {key!r} = {short_repr(img[key], 60)}, expected 1 to {MAX_IMAGE_SIDE} px"
            )
    if img.get("subject", subject) != subject:
        raise LayoutError(f"{where}: field 'subject' = {img['subject']!r}, but the file is subject {subject}")
    rec = {k: v for k, v in img.items() if k not in ("id", "subject")}
    rec["source_id"] = img.get("id")
    return rec


def _annotation(
    ann: dict[str, Any], img: dict[str, Any], cam: Camera, j3d: np.ndarray | None, where: str, stats: Counter
) -> dict[str, Any]:
    rec = {k: v for k, v in ann.items() if k not in ("id", "image_id", "keypoints_vis")}
    rec["source_id"] = ann.get("id")
    if "joints_2d_h36m" in ann:
        j2d = _array(ann["joints_2d_h36m"], (H36M_NUM_JOINTS, 3), where, "joints_2d_h36m")
    elif j3d is not None:
        vis = ann.get("keypoints_vis")
        if vis is None:
            vis = [True] * H36M_NUM_JOINTS
        vis = _array(vis, (H36M_NUM_JOINTS,), where, "keypoints_vis")
        j2d = np.concatenate([cam.project(j3d), np.where(vis > 0, 2.0, 1.0)[:, None]], axis=1)
        stats["joints_2d/projected"] += 1
    else:
        raise LayoutError(
            f"{where}: no field 'joints_2d_h36m' and no joint_3d for frame {'/'.join(frame_key(img))}"
        )
    rec["joints_2d_h36m"] = j2d.tolist()
    if "keypoints" in ann:
        kp = _array(ann["keypoints"], (51,), where, "keypoints").reshape(17, 3)
        if not np.isin(kp[:, 2], (0, 1, 2)).all():
            raise LayoutError(
                f"{where}: field 'keypoints' has visibilities {kp[:, 2].tolist()}, expected 0, 1 or 2"
            )
    else:
        kp = np.zeros((17, 3))
        for c, h in COCO_FROM_H36M.items():
            kp[c] = j2d[h]
    rec["keypoints"] = kp
    rec.pop("num_keypoints", None)  # recomputed from the keypoints by DatasetWriter
    if "bbox" in ann:
        bbox = _array(ann["bbox"], (4,), where, "bbox")
        if bbox[2] < 0 or bbox[3] < 0:
            raise LayoutError(f"{where}: field 'bbox' = {bbox.tolist()}, expected w, h >= 0")
        rec["bbox"] = bbox.tolist()
    else:
        rec["bbox"] = bbox_from_joints(j2d, margin=0.1, image_size=(img["width"], img["height"]))
    return rec


def _array(value: Any, shape: tuple[int, ...], where: str, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        arr = None
    if arr is None or arr.shape != shape or not np.all(np.isfinite(arr)):
        got = f"has shape {arr.shape}" if arr is not None else f"holds {short_repr(value, 60)}"
        want = "x".join(map(str, shape))
        raise LayoutError(f"{where}: field {field!r} {got}, expected {want} finite numbers")
    return arr


def _nested(path: Path) -> dict[str, Any]:
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise LayoutError(f"{path}: expected {{action_idx: {{subaction_idx: {{frame_idx: ...}}}}}}")
    return obj


def _lookup(nested: dict[str, Any], key: tuple[str, str, str]) -> Any:
    level: Any = nested
    for part in key:
        level = level.get(part) if isinstance(level, dict) else None
    return level


def _joints(nested: dict[str, Any], key: tuple[str, str, str], path: Path, where: str) -> np.ndarray | None:
    raw = _lookup(nested, key)
    if raw is None:
        return None
    return _array(
        raw, (H36M_NUM_JOINTS, 3), f"{path}: frame {'/'.join(key)} ({where.split(': ')[-1]})", "joint_3d"
    )


def _smpl(nested: dict[str, Any], key: tuple[str, str, str], path: Path | None) -> dict[str, Any] | None:
    raw = _lookup(nested, key)
    if raw is None:
        return None
    where = f"{path}: frame {'/'.join(key)}"
    if not isinstance(raw, dict):
        raise LayoutError(f"{where}: expected an object with pose, shape, trans")
    out: dict[str, Any] = {"model": "smpl"}
    for k, n in SMPL_PARAM_SIZES.items():
        if k not in raw:
            raise LayoutError(f"{where}: missing field {k!r} ({n} numbers)")
        out[k] = _array(raw[k], (n,), where, k).tolist()
    if isinstance(raw.get("gender"), str):
        out["gender"] = raw["gender"]
    return out
