"""Check a dataset folder against every rule of DESIGN.md Contract 1 and list each problem by file, id and field."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m.body.common import param_sizes
from p2m.camera import Camera
from p2m.errors import LayoutError, P2MError, short_repr
from p2m.io import is_finite_number, is_int, read_json
from p2m.joints import H36M_JOINTS, H36M_NUM_JOINTS
from p2m.layout import (
    ANNOTATION_FIELDS,
    ANNOTATIONS_DIR,
    DATA_KEYS,
    IMAGE_FIELDS,
    IMAGES_DIR,
    Dataset,
    SubjectFiles,
    frame_key,
    validate_body_param,
)

logger = logging.getLogger(__name__)

#: Largest distance (px) allowed between a visible joints_2d_h36m joint and the projection of its joint_3d.
REPROJECTION_TOLERANCE_PX = 0.5


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (file relative to the dataset, record id, field) and what (value vs expected)."""

    file: str
    message: str
    id: int | str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.id is not None:
            where += f": id {self.id}"
        if self.field is not None:
            where += f": {self.field}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """What :func:`validate` found.

    Attributes:
        root: the dataset folder.
        problems: every broken rule; the dataset is valid when this is empty.
        warnings: things worth knowing that break no rule (no info file, Pose2Mesh's smpl_param file...).
        counts: names, subject_files, images, annotations, cameras, joint_3d_frames, body_params,
            reprojected (annotations checked against their 3D joints) and max_reprojection_px.
    """

    root: Path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when no rule is broken."""
        return not self.problems

    def summary(self) -> str:
        """One line: the counts and the number of problems."""
        c = self.counts
        text = (
            f"{self.root}: {c['names']} dataset name(s), {c['subject_files']} subject(s), {c['images']} images, "
            f"{c['annotations']} annotations, {c['cameras']} cameras, {c['joint_3d_frames']} 3D frames, "
            f"{c['body_params']} body parameter sets"
        )
        if c["reprojected"]:
            text += (
                f"; reprojection max {c['max_reprojection_px']:.4f} px over {c['reprojected']} annotations"
            )
        return text + (f"; {len(self.problems)} problem(s)" if self.problems else "; OK")

    def add(self, file: Path | str, message: str, id: Any = None, field: str | None = None) -> None:
        self.problems.append(Problem(self._rel(file), message, id, field))

    def warn(self, file: Path | str, message: str, id: Any = None, field: str | None = None) -> None:
        self.warnings.append(Problem(self._rel(file), message, id, field))

    def _rel(self, file: Path | str) -> str:
        try:
            return str(Path(file).relative_to(self.root))
        except ValueError:
            return str(file)


def validate(
    root: str | Path,
    tolerance_px: float = REPROJECTION_TOLERANCE_PX,
    pycocotools: bool = True,
    reprojection: bool = True,
) -> ValidationReport:
    """Check ``root`` against every rule of Contract 1; collect every problem instead of stopping at the first.

    Rules: ``annotations/`` holds only ``{name}_subject{S}_{data,camera,joint_3d,body_param}.json`` and
    ``{name}_info.json``; each file is valid JSON; every top-level value of a data.json is a list (no ``info``
    object) and images, annotations, categories, licenses are all present; image and annotation records carry
    the required fields with the right types and shapes (keypoints 51 numbers with v in {0, 1, 2},
    joints_2d_h36m 17x3, bbox 4 numbers); image and annotation ids are integers, never 0 and unique across all
    subject files of a name; each annotation's image_id names an image of its file; pycocotools' ``COCO(path)``
    loads each data.json; each cam_idx used has a valid camera; joint_3d frames are 17x3 finite numbers and
    project through the image's camera onto the visible joints_2d_h36m within ``tolerance_px``; body_param
    records have a model name and numeric pose, shape and trans (3), as long as the named body model needs
    (:func:`p2m.body.param_sizes`).

    Args:
        root: the dataset folder.
        tolerance_px: reprojection tolerance in pixels.
        pycocotools: also load each data.json with ``pycocotools.coco.COCO`` (slower on large files).
        reprojection: also project every joint_3d frame onto its annotations (the fast path of `p2m shard`
            leaves this and pycocotools out).

    Returns:
        The :class:`ValidationReport` (``report.ok`` is True when there are no problems).
    """
    root = Path(root)
    report = ValidationReport(root=root)
    if not (root / ANNOTATIONS_DIR).is_dir():
        report.add(root / ANNOTATIONS_DIR, "folder missing: a dataset keeps its annotation files there")
        return report
    try:
        dataset = Dataset(root)
    except P2MError as exc:
        report.add(root / ANNOTATIONS_DIR, str(exc))
        return report
    for path in dataset.stray_files:
        report.add(
            path,
            "file name matches neither {name}_subject{S}_{data,camera,joint_3d,body_param}.json "
            "nor {name}_info.json",
        )
    report.counts["names"] = len(dataset.names)
    report.counts["max_reprojection_px"] = 0.0
    images_dir = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else None
    if images_dir is None:
        report.warn(root / IMAGES_DIR, "absent: a pose-only dataset (no image files are checked)")
    for name in dataset.names:
        _check_info(report, dataset, name)
        state = _NameState(images_dir=images_dir)
        for files in (f for f in dataset.subject_files if f.name == name):
            report.counts["subject_files"] += 1
            _check_subject(report, files, state, tolerance_px if reprojection else None, pycocotools)
    if not dataset.names:
        report.add(root / ANNOTATIONS_DIR, "no {name}_subject{S}_data.json file: the dataset is empty")
    return report


# ------------------------------------------------------------------------------------------------------------
@dataclass
class _NameState:
    """What the checks of one dataset name carry from subject file to subject file."""

    images_dir: Path | None
    image_ids: dict[Any, Path] = field(default_factory=dict)
    ann_ids: dict[Any, Path] = field(default_factory=dict)
    top_keys: tuple[str, list[str]] | None = None  # (first file, its top-level keys)


def _check_info(report: ValidationReport, dataset: Dataset, name: str) -> None:
    path = dataset.info_paths.get(name)
    if path is None:
        report.warn(
            dataset.root / ANNOTATIONS_DIR / f"{name}_info.json",
            "absent: dataset facts (name, version, licence, source) belong there",
        )
        return
    info = _load(report, path)
    if info is not None and not isinstance(info, dict):
        report.add(path, f"expected a JSON object of dataset facts, got {type(info).__name__}")


def _load(report: ValidationReport, path: Path) -> Any:
    try:
        return read_json(path)
    except P2MError as exc:
        report.add(path, str(exc).removeprefix(f"{path}: "))
        return None


def _check_subject(
    report: ValidationReport, files: SubjectFiles, state: _NameState, tol: float | None, pycoco: bool
) -> None:
    if files.data is None:
        report.add(
            files.paths()[0], f"{files.name}_subject{files.subject}_data.json is missing for this subject"
        )
        return
    data = _load(report, files.data)
    if data is None:
        return
    if not isinstance(data, dict):
        report.add(files.data, f"expected a JSON object (COCO), got {type(data).__name__}")
        return
    top_ok = True
    for key, value in data.items():
        if not isinstance(value, list):
            top_ok = False
            hint = " (dataset facts go in {name}_info.json)" if key == "info" else ""
            report.add(files.data, f"top-level value is {_type(value)}, expected a list{hint}", field=key)
    for key in DATA_KEYS:
        if key not in data:
            top_ok = False
            report.add(
                files.data, "missing top-level list (every subject file needs the same keys)", field=key
            )
    if state.top_keys is None:
        state.top_keys = (report._rel(files.data), sorted(data))
    elif sorted(data) != state.top_keys[1]:
        report.add(
            files.data,
            f"top-level keys {sorted(data)} differ from {state.top_keys[1]} of "
            f"{state.top_keys[0]} (Pose2Mesh's loader concatenates them key by key)",
        )
    for i, cat in enumerate(data.get("categories") if isinstance(data.get("categories"), list) else []):
        if not (isinstance(cat, dict) and is_int(cat.get("id")) and isinstance(cat.get("name"), str)):
            report.add(
                files.data,
                f"categories[{i}] = {short_repr(cat)}, expected {{id: int, name: str, ...}}",
                field="categories",
            )
    images = _check_images(report, files, data.get("images"), state.image_ids)
    if state.images_dir is not None:
        for rid, img in images.items():
            fn = img.get("file_name")
            if isinstance(fn, str) and fn and not (state.images_dir / fn).is_file():
                report.add(files.data, f"value {fn!r}: no such file under images/", id=rid, field="file_name")
    anns = _check_annotations(report, files, data, images, state.ann_ids)
    if pycoco and top_ok:
        _check_pycocotools(report, files.data)
    cameras = _check_cameras(report, files, images)
    joints = _check_nested(report, files.joint_3d, "joint_3d", _check_joint_leaf)
    report.counts["joint_3d_frames"] += len(joints)
    params_path = files.body_param or files.smpl_param
    if files.smpl_param is not None:
        report.warn(
            files.smpl_param, "Pose2Mesh's SMPL parameter file: read as body parameters with model 'smpl'"
        )
    if files.body_param is not None and files.smpl_param is not None:
        report.warn(files.smpl_param, "ignored: a body_param file exists for this subject")
    legacy = files.body_param is None
    params = _check_nested(report, params_path, "body_param", lambda v, w: _check_param_leaf(v, w, legacy))
    report.counts["body_params"] += len(params)
    unknown = sorted(
        {(p["model"], p.get("rig")) for p in params.values() if param_sizes(p["model"], p.get("rig")) is None}
    )
    for model, rig in unknown:
        report.warn(
            params_path,
            f"body model {model!r}" + (f" rig {rig!r}" if rig else "") + ": p2m does not know "
            "its parameter sizes, so the lengths of pose and shape were not checked",
        )
    if tol is not None:
        _check_reprojection(report, files, images, anns, cameras, joints, tol)


def _check_id(report: ValidationReport, path: Path, rec: dict, kind: str, seen: dict[Any, Path]) -> Any:
    rid = rec.get("id")
    if not is_int(rid):
        report.add(path, f"{kind} id {rid!r} is not an integer", id=rid, field="id")
        return None
    if rid == 0:
        report.add(
            path, f"{kind} id 0: ids are never 0 (Pose2Mesh's loader treats 0 as missing)", id=0, field="id"
        )
    if rid in seen:
        report.add(
            path,
            f"duplicate {kind} id, also in {report._rel(seen[rid])} (ids are unique across all "
            "subject files)",
            id=rid,
            field="id",
        )
    else:
        seen[rid] = path
    return rid


def _check_images(
    report: ValidationReport, files: SubjectFiles, images: Any, seen: dict[Any, str]
) -> dict[Any, dict]:
    out: dict[Any, dict] = {}
    if not isinstance(images, list):
        return out
    path = files.data
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            report.add(path, f"images[{i}] is a {type(img).__name__}, expected an object", field="images")
            continue
        report.counts["images"] += 1
        rid = _check_id(report, path, img, "image", seen)
        ref = rid if rid is not None else f"images[{i}]"
        for key in IMAGE_FIELDS:
            if key not in img:
                report.add(path, "missing field", id=ref, field=key)
        for key in ("width", "height", "subject", "action_idx", "subaction_idx", "cam_idx", "frame_idx"):
            if key in img and not is_int(img[key]):
                report.add(path, f"value {short_repr(img[key])}, expected an integer", id=ref, field=key)
        for key in ("width", "height"):
            if is_int(img.get(key)) and img[key] <= 0:
                report.add(path, f"value {img[key]}, expected > 0", id=ref, field=key)
        if "subject" in img and img["subject"] != files.subject:
            report.add(
                path,
                f"value {short_repr(img['subject'])}, expected {files.subject} (from the file name)",
                id=ref,
                field="subject",
            )
        fn = img.get("file_name")
        if "file_name" in img and (
            not isinstance(fn, str) or not fn or fn.startswith("/") or ".." in fn.split("/")
        ):
            report.add(
                path,
                f"value {short_repr(fn)}, expected a non-empty path relative to images/",
                id=ref,
                field="file_name",
            )
        if rid is not None:
            out[rid] = img
    return out


def _check_annotations(
    report: ValidationReport, files: SubjectFiles, data: dict, images: dict[Any, dict], seen: dict[Any, str]
) -> list[dict]:
    anns = data.get("annotations")
    if not isinstance(anns, list):
        return []
    path = files.data
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    cat_ids = {c["id"] for c in cats if isinstance(c, dict) and is_int(c.get("id"))}
    out = []
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            report.add(
                path, f"annotations[{i}] is a {type(ann).__name__}, expected an object", field="annotations"
            )
            continue
        report.counts["annotations"] += 1
        rid = _check_id(report, path, ann, "annotation", seen)
        ref = rid if rid is not None else f"annotations[{i}]"
        for key in ANNOTATION_FIELDS:
            if key not in ann:
                report.add(path, "missing field", id=ref, field=key)
        for key, known, what in (
            ("image_id", images, "names no image of this file"),
            ("category_id", cat_ids, f"is not in categories {sorted(cat_ids)}"),
        ):
            if key not in ann:
                continue
            if not is_int(ann[key]):
                report.add(path, f"value {short_repr(ann[key])}, expected an integer id", id=ref, field=key)
            elif ann[key] not in known:
                report.add(path, f"value {ann[key]!r} {what}", id=ref, field=key)
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            report.add(path, f"value {short_repr(ann['iscrowd'])}, expected 0 or 1", id=ref, field="iscrowd")
        if "area" in ann and not (is_finite_number(ann["area"]) and ann["area"] >= 0):
            report.add(
                path, f"value {short_repr(ann['area'])}, expected a finite number >= 0", id=ref, field="area"
            )
        bbox = _array(ann.get("bbox"), (4,))
        if "bbox" in ann and (bbox is None or bbox[2] < 0 or bbox[3] < 0):
            report.add(
                path,
                f"value {short_repr(ann['bbox'])}, expected [x, y, w, h] with w, h >= 0",
                id=ref,
                field="bbox",
            )
        if "keypoints" in ann:
            kp = _array(ann["keypoints"], (51,))
            if kp is None:
                report.add(
                    path,
                    f"value {short_repr(ann['keypoints'])}, expected 51 numbers (17 x, y, v)",
                    id=ref,
                    field="keypoints",
                )
            elif not ((kp[2::3] == 0) | (kp[2::3] == 1) | (kp[2::3] == 2)).all():  # np.isin costs 10x here
                report.add(
                    path,
                    f"visibilities {kp[2::3].tolist()}, expected values in {{0, 1, 2}}",
                    id=ref,
                    field="keypoints",
                )
            elif "num_keypoints" in ann and ann["num_keypoints"] != int((kp[2::3] > 0).sum()):
                report.add(
                    path,
                    f"value {short_repr(ann['num_keypoints'])}, expected {int((kp[2::3] > 0).sum())} "
                    "(keypoints with v > 0)",
                    id=ref,
                    field="num_keypoints",
                )
        if (
            "joints_2d_h36m" in ann
            and _array(ann["joints_2d_h36m"], (H36M_NUM_JOINTS, 3), nested=True) is None
        ):
            report.add(
                path,
                f"value {short_repr(ann['joints_2d_h36m'])}, expected 17x3 numbers (x, y px, visibility)",
                id=ref,
                field="joints_2d_h36m",
            )
        out.append(ann)
    return out


def _check_pycocotools(report: ValidationReport, path: Path) -> None:
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(str(path))
    except Exception as exc:  # noqa: BLE001  (any failure of the third-party loader is the finding)
        report.add(path, f"pycocotools COCO() cannot load it: {type(exc).__name__}: {exc}")


def _check_cameras(
    report: ValidationReport, files: SubjectFiles, images: dict[Any, dict]
) -> dict[str, Camera]:
    cameras: dict[str, Camera] = {}
    used = sorted({str(img["cam_idx"]) for img in images.values() if "cam_idx" in img}, key=str)
    if files.camera is None:
        if used:
            report.add(
                files.data,
                f"no {files.name}_subject{files.subject}_camera.json, but images use cam_idx {used}",
                field="cam_idx",
            )
        return cameras
    raw = _load(report, files.camera)
    if raw is None:
        return cameras
    if not isinstance(raw, dict):
        report.add(files.camera, f"expected an object {{cam_idx: {{R, t, f, c}}}}, got {type(raw).__name__}")
        return cameras
    for key, rec in raw.items():
        if not key.lstrip("-").isdigit():
            report.add(files.camera, f"key {key!r} is not an integer cam_idx", field=key)
        try:
            cameras[key] = Camera.from_dict(rec, where=f"cam_idx {key}")
        except LayoutError as exc:
            report.add(files.camera, str(exc), field=key)
    report.counts["cameras"] += len(cameras)
    for img in images.values():
        cam = str(img.get("cam_idx"))
        if "cam_idx" in img and cam not in raw:
            report.add(
                files.data,
                f"value {img['cam_idx']!r} has no camera in {files.camera.name} (has {sorted(raw)})",
                id=img["id"],
                field="cam_idx",
            )
    return cameras


def _walk(nested: dict) -> Iterator[tuple[tuple[str, str, str], Any, str | None]]:
    """Yield ((action, subaction, frame), leaf, None) or (key so far, value, error) for malformed levels."""
    for a, subs in nested.items():
        if not isinstance(subs, dict):
            yield (a, "", ""), subs, "expected {subaction_idx: {frame_idx: ...}}"
            continue
        for s, frames in subs.items():
            if not isinstance(frames, dict):
                yield (a, s, ""), frames, "expected {frame_idx: ...}"
                continue
            for f, leaf in frames.items():
                yield (a, s, f), leaf, None


def _check_nested(report: ValidationReport, path: Path | None, what: str, check_leaf) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    if path is None:
        return out
    raw = _load(report, path)
    if raw is None:
        return out
    if not isinstance(raw, dict):
        report.add(
            path,
            f"expected {{action_idx: {{subaction_idx: {{frame_idx: {what}}}}}}}, got {type(raw).__name__}",
        )
        return out
    for key, leaf, error in _walk(raw):
        label = "/".join(k for k in key if k)
        if error is None and not all(k.lstrip("-").isdigit() for k in key):
            error = "keys must be integers (action_idx/subaction_idx/frame_idx)"
        if error is None:
            try:
                out[key] = check_leaf(leaf, f"frame {label}")
                continue
            except LayoutError as exc:
                error = str(exc).removeprefix(f"frame {label}: ")
        report.add(path, error, id=label, field=what)
    return out


def _check_joint_leaf(value: Any, where: str) -> np.ndarray:
    arr = _array(value, (H36M_NUM_JOINTS, 3), nested=True)
    if arr is None:
        raise LayoutError(f"{where}: value {short_repr(value)}, expected 17x3 finite numbers (world mm)")
    return arr


def _check_param_leaf(value: Any, where: str, legacy: bool) -> dict:
    if legacy and isinstance(value, Mapping) and "model" not in value:
        value = {"model": "smpl", **value}
    return validate_body_param(value, where)


def _check_reprojection(
    report: ValidationReport,
    files: SubjectFiles,
    images: dict[Any, dict],
    anns: list[dict],
    cameras: dict[str, Camera],
    joints: dict[tuple, np.ndarray],
    tol: float,
) -> None:
    for ann in anns:
        img = images.get(ann.get("image_id")) if is_int(ann.get("image_id")) else None
        if img is None:
            continue
        try:
            key = frame_key(img)
        except (KeyError, TypeError, ValueError):
            continue
        j3d, cam = joints.get(key), cameras.get(str(img.get("cam_idx")))
        j2d = _array(ann.get("joints_2d_h36m"), (H36M_NUM_JOINTS, 3), nested=True)
        if j3d is None or cam is None or j2d is None:
            continue
        vis = j2d[:, 2] > 0
        if not vis.any():
            continue
        report.counts["reprojected"] += 1
        depth = cam.world_to_camera(j3d)[:, 2]
        behind = vis & (depth <= 0)
        for j in np.flatnonzero(behind):
            report.add(
                files.data,
                f"visible joint {H36M_JOINTS[j]} is behind the camera (z = {depth[j]:.1f} mm)",
                id=ann.get("id"),
                field="joints_2d_h36m",
            )
        err = np.linalg.norm(cam.project(j3d) - j2d[:, :2], axis=1)
        check = vis & ~behind
        if check.any():
            worst = float(err[check].max())
            report.counts["max_reprojection_px"] = max(report.counts["max_reprojection_px"], worst)
            for j in np.flatnonzero(check & (err > tol)):
                report.add(
                    files.data,
                    f"joint {H36M_JOINTS[j]} is {err[j]:.3f} px from the projection of "
                    f"joint_3d frame {'/'.join(key)} (tolerance {tol} px)",
                    id=ann.get("id"),
                    field="joints_2d_h36m",
                )


def _array(value: Any, shape: tuple[int, ...], nested: bool = False) -> np.ndarray | None:
    """``value`` as a finite float array of ``shape`` (nested lists required when ``nested``), else None."""
    if not isinstance(value, list):
        return None
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        return None
    if arr.shape != (shape if nested else (math.prod(shape),)):
        return None
    if bool in map(type, itertools.chain.from_iterable(value) if nested else value):
        return None  # JSON true/false would pass as 1.0/0.0
    return arr.reshape(shape) if np.isfinite(arr).all() else None


def _type(value: Any) -> str:
    name = type(value).__name__
    return "null" if value is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
