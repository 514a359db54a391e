"""`p2m annotate fit`: 3D joints and body parameters for 2D-annotated people, by fitting anny through each camera.

For every person annotation of a dataset (Contract 1) the body model is fitted to its 2D keypoints (see
:mod:`p2m.annotate.fit_solver`) and the subject files get:

- ``joint_3d.json``: the fitted H36M-17 joints, world mm (camera mm for single photos, whose R = I, t = 0);
- ``body_param.json``: ``{"model": "anny", "rig", "topology", "pose" (J*3 axis-angle), "shape" (6), "trans"
  (3, metres, world)}``;
- ``camera.json``: unchanged where the subject has one; a subject without one gets the single-photo camera of
  each image (:func:`p2m.annotate.photo.single_photo_camera`: R = I, t = 0, f = the image diagonal, c = centre);
- in each annotation: ``fit_error_px`` (mean distance in px between the visible 2D keypoints and the projection
  of the fitted ones; null when the annotation could not be fitted) and ``fit_valid`` (false when the error is
  above ``max_error_px`` or too few keypoints are visible). Invalid people are marked, never deleted.

**Which 2D is fitted.** The COCO ``keypoints`` (v > 0; weight = ``keypoint_scores`` when the detector wrote them,
else 1) when at least ``MIN_KEYPOINTS`` are labelled; otherwise ``joints_2d_h36m`` (its original version, kept in
``joints_2d_h36m_input`` once fit has rewritten the field).

**joints_2d_h36m after a valid fit** is the projection of the fitted 3D joints (to 0.001 px, visibilities
unchanged), so that `p2m annotate validate` (projection of joint_3d within 0.5 px of the visible
joints_2d_h36m) holds and a trainer sees the 2D of the 3D it learns. The detected 2D stays in ``keypoints`` (and,
for people fitted from H36M joints, in ``joints_2d_h36m_input``). An invalid fit writes no 3D; if an earlier
fit had written 3D for that frame, it is removed and joints_2d_h36m is restored from the 2D input.

**Which people.** A frame (subject, action, subaction, frame) with one person annotation per image is one person,
seen by each of its images' cameras (multi-view frames are fitted jointly). Frames with several people in an
image are skipped: joint_3d and body_param hold one person per frame. Crowd annotations and people a reviewer
rejected are skipped. Frames that already have 3D (ground truth, or an earlier valid fit) and people already
marked invalid are skipped unless ``overwrite``, except people whose ``review.needs_refit`` is set by
`p2m annotate review` (refitted, then the flag is cleared). So a rerun resumes an interrupted fit.

Files are rewritten atomically per subject (data.json first, under the review server's file lock, re-read so
that saves made meanwhile are kept); every other field stays as it was.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.fit_solver import KINDS, BodyFitter, SolverOptions, View
from p2m.annotate.review_store import file_lock, is_rejected
from p2m.camera import Camera
from p2m.errors import LayoutError, P2MError
from p2m.io import read_json, write_json
from p2m.joints import coco_to_h36m
from p2m.layout import Dataset, SubjectFiles, frame_key, subject_file

logger = logging.getLogger(__name__)

#: Least number of labelled keypoints (v > 0) for a person to be fitted.
MIN_KEYPOINTS = 5
#: Default largest mean reprojection error (px) of a valid fit.
DEFAULT_MAX_ERROR_PX = 15.0
#: Default output topology of the body parameters (and of the regressors that give the written joints).
DEFAULT_TOPOLOGY = "full"
#: Topology the optimisation runs on (same rig and parameters; about 4 mm from the full mesh's joints).
FIT_TOPOLOGY = "notoes_collapse10pc"
#: Decimals of the written joint_3d (mm) and of the rewritten joints_2d_h36m (px).
MM_DECIMALS, PX_DECIMALS = 2, 3
#: Problems listed in the returned stats (the rest are only counted).
MAX_PROBLEMS = 50


def resolve_device(name: str = "auto"):
    """``"auto"`` -> CUDA when present, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``... as given.

    Raises:
        P2MError: a CUDA device was asked for but torch sees none.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise P2MError(
            f"--device {name!r}: not a torch device ({exc}); expected auto, cpu or cuda[:N]"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise P2MError(f"--device {name}: torch sees no CUDA device here; use --device cpu or auto")
    return device


# ----------------------------------------------------------------------------------------------------------------
# Reading: which people to fit, from which 2D
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Subject:
    """The raw (parsed JSON) files of one subject and what fit changes in them."""

    files: SubjectFiles
    root: Path
    data: dict[str, Any]
    cameras_raw: dict[str, Any] | None
    joint_3d: dict[str, Any]
    body_param: dict[str, Any]
    new_cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[int, dict[str, Any]] = field(
        default_factory=dict
    )  # ann id -> fields to set (None = delete)
    inputs: dict[int, Any] = field(default_factory=dict)  # ann id -> the 2D the fit used (for merge checks)
    frames_3d: dict[tuple[str, str, str], Any] = field(
        default_factory=dict
    )  # key -> (joints, params) or None
    pending: int = 0

    def path(self, kind: str) -> Path:
        return subject_file(self.root, self.files.name, self.files.subject, kind)


@dataclass
class _Obs:
    ann: dict[str, Any]
    image: dict[str, Any]
    camera: Camera
    view: View
    kind: str
    visible: np.ndarray  # (17,) bool, the points the error is measured on


@dataclass
class _Job:
    subject: _Subject
    key: tuple[str, str, str]
    obs: list[_Obs]
    had_fit_3d: bool  # the frame's 3D was written by an earlier fit
    others: list[tuple[dict[str, Any], Camera]] = field(default_factory=list)  # unfittable views of the frame


def _lookup(nested: dict[str, Any], key: tuple[str, str, str]) -> Any:
    level: Any = nested
    for part in key:
        if not isinstance(level, dict) or part not in level:
            return None
        level = level[part]
    return level


def _needs_refit(ann: dict[str, Any]) -> bool:
    review = ann.get("review")
    return isinstance(review, dict) and bool(review.get("needs_refit"))


def _array(value: Any, where: str, field_name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(17, 3)
    except (TypeError, ValueError) as exc:
        raise LayoutError(
            f"{where}: field {field_name!r}: expected 17x3 numbers, got {str(value)[:60]}"
        ) from exc
    if not np.all(np.isfinite(arr)):
        raise LayoutError(f"{where}: field {field_name!r}: has non-finite numbers")
    return arr


def target_2d(ann: dict[str, Any], where: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray] | str:
    """The 2D a person is fitted to.

    Returns:
        (kind ``"coco"`` | ``"h36m"``, points (17, 2) px, weights (17,), labelled (17,) bool), or a message saying
        why the annotation cannot be fitted (too few labelled keypoints).

    Raises:
        LayoutError: a malformed ``keypoints`` / ``joints_2d_h36m`` field (naming ``where`` and the field).
    """
    counts = {}
    if ann.get("keypoints") is not None:
        kp = _array(ann["keypoints"], where, "keypoints")
        labelled = kp[:, 2] > 0
        counts["keypoints"] = int(labelled.sum())
        if labelled.sum() >= MIN_KEYPOINTS:
            weights = labelled.astype(np.float64)
            scores = ann.get("keypoint_scores")
            if isinstance(scores, list) and len(scores) == 17:
                try:
                    weights = weights * np.clip(np.asarray(scores, dtype=np.float64), 0.05, 1.0)
                except (TypeError, ValueError):
                    pass
            return "coco", kp[:, :2], weights, labelled
    name = "joints_2d_h36m_input" if ann.get("joints_2d_h36m_input") is not None else "joints_2d_h36m"
    if ann.get(name) is not None:
        j = _array(ann[name], where, name)
        labelled = j[:, 2] > 0
        counts[name] = int(labelled.sum())
        if labelled.sum() >= MIN_KEYPOINTS:
            return "h36m", j[:, :2], labelled.astype(np.float64), labelled
    found = ", ".join(f"{k} {v}" for k, v in counts.items()) or "no keypoints or joints_2d_h36m field"
    return f"too few labelled keypoints to fit ({found}; need at least {MIN_KEYPOINTS} with v > 0)"


def _load_subject(ds: Dataset, files: SubjectFiles) -> _Subject:
    if files.data is None:
        raise LayoutError(
            f"{ds.root}: {files.name}_subject{files.subject}_data.json is missing but other files "
            f"of that subject exist"
        )

    def read(path: Path | None, what: str) -> dict[str, Any]:
        if path is None:
            return {}
        obj = read_json(path)
        if not isinstance(obj, dict):
            raise LayoutError(f"{path}: expected a JSON object ({what}), got {type(obj).__name__}")
        return obj

    data = read(files.data, "COCO images/annotations")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise LayoutError(f"{files.data}: field {key!r} must be a list")
    return _Subject(
        files=files,
        root=ds.root,
        data=data,
        cameras_raw=read(files.camera, "cam_idx -> camera") if files.camera else None,
        joint_3d=read(files.joint_3d, "3D joints"),
        body_param=read(files.body_param, "body parameters"),
    )


def _camera_of(sub: _Subject, img: dict[str, Any], parsed: dict[str, Camera], stats: Counter) -> Camera:
    from p2m.annotate.photo import single_photo_camera

    where = f"{sub.files.data}: image id {img.get('id')}"
    key = str(img.get("cam_idx"))
    if key in parsed:
        return parsed[key]
    if sub.cameras_raw is not None:
        if key not in sub.cameras_raw:
            raise LayoutError(
                f"{where}: field 'cam_idx' = {img.get('cam_idx')!r} has no camera in "
                f"{sub.files.camera.name} (has {sorted(sub.cameras_raw)[:10]}); fit needs the camera "
                "of every image"
            )
        parsed[key] = Camera.from_dict(sub.cameras_raw[key], where=f"{sub.files.camera}: cam_idx {key}")
        return parsed[key]
    try:
        width, height = int(img["width"]), int(img["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LayoutError(
            f"{where}: no camera file {sub.path('camera').name} and no integer width/height to make "
            "a single-photo camera from"
        ) from exc
    cam, _ = single_photo_camera(width, height, None)
    record = cam.to_dict()
    old = sub.new_cameras.get(key)
    if old is not None and old != record:
        raise LayoutError(
            f"{where}: cam_idx {key} is shared by images of different sizes; without "
            f"{sub.path('camera').name} fit cannot give them one camera"
        )
    sub.new_cameras[key] = record
    stats["cameras/default"] += 1
    parsed[key] = cam
    return cam


def _plan_subject(
    sub: _Subject, overwrite: bool, stats: Counter, problems: list[str], ann_ids: set[int] | None = None
) -> list[_Job]:
    """The frames of a subject to fit; marks unfittable annotations in ``sub.changed``."""
    images = {img.get("id"): img for img in sub.data["images"] if isinstance(img, dict)}
    frames: dict[tuple[str, str, str], dict[Any, list[dict[str, Any]]]] = defaultdict(dict)
    for ann in sub.data["annotations"]:
        if not isinstance(ann, dict):
            continue
        stats["annotations/total"] += 1
        img = images.get(ann.get("image_id"))
        if img is None:
            raise LayoutError(
                f"{sub.files.data}: annotation id {ann.get('id')}: field 'image_id' = "
                f"{ann.get('image_id')!r} names no image"
            )
        if ann_ids is not None and ann.get("id") not in ann_ids:
            stats["annotations/skipped/not_selected"] += 1
            continue
        if ann.get("iscrowd"):
            stats["annotations/skipped/crowd"] += 1
            continue
        if is_rejected(ann):
            stats["annotations/skipped/rejected"] += 1
            continue
        try:
            key = frame_key(img)
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(
                f"{sub.files.data}: image id {img.get('id')}: needs integer action_idx, "
                f"subaction_idx and frame_idx ({exc!r})"
            ) from exc
        frames[key].setdefault(img["id"], []).append(ann)
    parsed: dict[str, Camera] = {}
    if (
        sub.cameras_raw is None
    ):  # no camera file: every image gets its single-photo camera (validate needs all)
        for img in images.values():
            _camera_of(sub, img, parsed, stats)
    jobs = []
    for key, by_image in frames.items():
        anns = [a for group in by_image.values() for a in group]
        if any(len(group) > 1 for group in by_image.values()):
            stats["annotations/skipped/multi_person"] += len(anns)
            continue
        has_3d = _lookup(sub.joint_3d, key) is not None
        fitted_before = any("fit_valid" in a for a in anns)
        had_fit_3d = has_3d and any(a.get("fit_valid") is True for a in anns)
        if not overwrite and not any(_needs_refit(a) for a in anns):
            if fitted_before and (has_3d or all(a.get("fit_valid") is False for a in anns)):
                stats["annotations/skipped/already_fitted"] += len(anns)
                continue  # (a valid fit flag without 3D is an interrupted write: refitted)
            if has_3d and not fitted_before:
                stats["annotations/skipped/has_3d"] += len(anns)
                continue
        obs, others = [], []
        for ann in anns:
            img = images[ann["image_id"]]
            where = f"{sub.files.data}: annotation id {ann.get('id')}"
            target = target_2d(ann, where)
            if isinstance(target, str):
                stats["annotations/too_few_keypoints"] += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(f"{where}: {target}; marked fit_valid false")
                logger.warning("%s: %s; marked fit_valid false", where, target)
                sub.changed[ann["id"]] = {"fit_error_px": None, "fit_valid": False}
                others.append((ann, _camera_of(sub, img, parsed, stats)))
                continue
            kind, points, weights, labelled = target
            camera = _camera_of(sub, img, parsed, stats)
            bbox = ann.get("bbox")
            height = float(bbox[3]) if isinstance(bbox, list) and len(bbox) == 4 and bbox[3] > 0 else None
            view = View(camera=camera, points=points, weights=weights, kind=kind, height_px=height)
            obs.append(_Obs(ann, img, camera, view, kind, labelled))
        if obs:
            jobs.append(_Job(sub, key, obs, had_fit_3d, others))
            stats["frames/multi_view"] += len(obs) > 1
    sub.pending = len(jobs)
    return jobs


# ----------------------------------------------------------------------------------------------------------------
# Applying results and writing
# ----------------------------------------------------------------------------------------------------------------
def _apply(job: _Job, result, topology: str, rig: str, max_error_px: float, stats: Counter) -> list[float]:
    """Record a fit's 3D and per-annotation fields in the job's subject; return the per-annotation errors."""
    sub = job.subject
    joints = np.round(result.joints_mm, MM_DECIMALS)
    kps = np.round(result.keypoints_mm, MM_DECIMALS)
    errors = []
    for ob in job.obs:
        pred = ob.camera.project(kps if ob.kind == "coco" else joints)
        err = np.linalg.norm(pred - ob.view.points, axis=1)[ob.visible]
        errors.append(float(err.mean()) if err.size and np.all(np.isfinite(err)) else float("inf"))
    valid = all(e <= max_error_px for e in errors)
    for (
        ann,
        camera,
    ) in job.others:  # views that could not be fitted still get 2D consistent with the frame's 3D
        if valid:
            sub.changed[ann["id"]]["joints_2d_h36m"] = _projected(ann, camera, joints)
        elif job.had_fit_3d:
            sub.changed[ann["id"]]["joints_2d_h36m"] = _restored_2d(ann)
    for ob, err in zip(job.obs, errors):
        ann, fields = ob.ann, {}
        fields["fit_error_px"] = round(err, 3) if np.isfinite(err) else None
        fields["fit_valid"] = bool(valid)
        if valid:
            fields["joints_2d_h36m"] = _projected(ann, ob.camera, joints)
            if ob.kind == "h36m" and "joints_2d_h36m_input" not in ann:
                fields["joints_2d_h36m_input"] = ann.get("joints_2d_h36m")
        elif job.had_fit_3d:  # restore the 2D input: the 3D this frame had is removed below
            fields["joints_2d_h36m"] = _restored_2d(ann)
        if _needs_refit(ann):
            fields["review"] = {k: v for k, v in ann["review"].items() if k != "needs_refit"}
        sub.changed[ann["id"]] = fields
        sub.inputs[ann["id"]] = (
            ann.get("keypoints"),
            ann.get("joints_2d_h36m_input", ann.get("joints_2d_h36m")),
        )
        stats["annotations/fitted"] += 1
        stats["annotations/" + ("valid" if valid else "invalid")] += 1
    if valid:
        params = {
            "model": "anny",
            "rig": rig,
            "topology": topology,
            "pose": np.round(result.pose.reshape(-1), 6).tolist(),
            "shape": np.round(result.shape, 6).tolist(),
            "trans": np.round(result.trans, 6).tolist(),
        }
        sub.frames_3d[job.key] = (joints.tolist(), params)
    elif job.had_fit_3d:
        sub.frames_3d[job.key] = None
    return errors


def _projected(ann: dict[str, Any], camera: Camera, joints_mm: np.ndarray) -> list[list[float | int]]:
    """joints_2d_h36m as the projection of the frame's 3D joints, with the annotation's visibilities."""
    try:
        vis = np.asarray(ann.get("joints_2d_h36m"), dtype=np.float64).reshape(17, 3)[:, 2]
    except (TypeError, ValueError):
        vis = coco_to_h36m(np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3))[:, 2]
    uv = np.round(camera.project(joints_mm), PX_DECIMALS)
    return [[float(u), float(v), int(c) if float(c).is_integer() else float(c)] for (u, v), c in zip(uv, vis)]


def _restored_2d(ann: dict[str, Any]) -> Any:
    if ann.get("joints_2d_h36m_input") is not None:
        return ann["joints_2d_h36m_input"]
    kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    return np.round(coco_to_h36m(kp), 2).tolist()


def _set_nested(nested: dict[str, Any], key: tuple[str, str, str], value: Any) -> None:
    a, s, f = key
    if value is None:
        level = nested.get(a, {}).get(s, {})
        level.pop(f, None)
        if not level and s in nested.get(a, {}):
            del nested[a][s]
        if a in nested and not nested[a]:
            del nested[a]
        return
    nested.setdefault(a, {}).setdefault(s, {})[f] = value


def _write_subject(sub: _Subject, stats: Counter) -> None:
    """Write the subject's changes: camera.json (when new), data.json (merged under lock), joint_3d, body_param."""
    if sub.new_cameras:
        write_json(sub.path("camera"), sub.new_cameras)
    stale: set[tuple[str, str, str]] = set()
    data_path = sub.path("data")
    with file_lock(data_path):
        fresh = read_json(data_path)  # saves made by `p2m annotate review` meanwhile are kept
        images = {img.get("id"): img for img in fresh.get("images", []) if isinstance(img, dict)}
        for ann in fresh.get("annotations", []):
            if not isinstance(ann, dict) or ann.get("id") not in sub.changed:
                continue
            inputs = sub.inputs.get(ann["id"])
            now = (ann.get("keypoints"), ann.get("joints_2d_h36m_input", ann.get("joints_2d_h36m")))
            if inputs is not None and now != inputs:  # edited while we fitted: keep the edit, drop our fit
                stats["annotations/changed_during_fit"] += 1
                img = images.get(ann.get("image_id"))
                if img is not None:
                    stale.add(frame_key(img))
                continue
            for name, value in sub.changed[ann["id"]].items():
                ann[name] = value
        write_json(data_path, fresh)
    for key, value in sub.frames_3d.items():
        if key in stale:
            continue
        _set_nested(sub.joint_3d, key, None if value is None else value[0])
        _set_nested(sub.body_param, key, None if value is None else value[1])
    if sub.frames_3d:
        write_json(sub.path("joint_3d"), sub.joint_3d)
        write_json(sub.path("body_param"), sub.body_param)
    sub.changed.clear()
    sub.inputs.clear()
    sub.frames_3d.clear()


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
_FITTER: list[tuple[tuple, Any]] = []  # the last fitter built, reused by the next call with the same settings


def _fitter(device, topology: str, options: SolverOptions):
    key = (
        str(device),
        topology,
        FIT_TOPOLOGY,
        options.prior_source,
        options.candidates,
    )  # what __init__ uses
    if not _FITTER or _FITTER[0][0] != key:
        _FITTER[:] = [
            (key, BodyFitter(device, topology=topology, fit_topology=FIT_TOPOLOGY, options=options))
        ]
    fitter = _FITTER[0][1]
    fitter.options = options
    return fitter


def fit_people(
    people: Sequence[Sequence[View]], device: str, topology: str, options: SolverOptions
) -> tuple[list[Any], str, str]:
    """Fit one chunk of people (a list of views each): the unit a local run and ``fit --ray`` workers share.

    Returns:
        The :class:`~p2m.annotate.fit_solver.FitResult` per person, the output topology and the rig.
    """
    import torch

    fitter = _fitter(resolve_device(device), topology, options)
    with torch.enable_grad():
        return fitter.fit(people), fitter.topology, fitter.body.rig


def fit_bodies(
    dataset: str | Path,
    *,
    device: str = "auto",
    iters: int = 100,
    batch: int = 64,
    max_error_px: float = DEFAULT_MAX_ERROR_PX,
    topology: str = DEFAULT_TOPOLOGY,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
    options: SolverOptions | None = None,
    progress: bool | None = None,
    ann_ids: Collection[int] | None = None,
    map_chunks: Any = None,
) -> dict[str, Any]:
    """Fit the body model to every person annotation of ``dataset`` and write 3D joints and body parameters.

    Args:
        dataset: the dataset folder (Contract 1).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
        iters: optimisation steps of the pose stage (see :mod:`p2m.annotate.fit_solver`).
        batch: people fitted at once.
        max_error_px: largest mean reprojection error (px) of a valid fit.
        topology: anny topology of the written body parameters and joints.
        names: dataset names to fit (default: all).
        overwrite: also refit frames that already have 3D or an earlier fit.
        options: solver settings (``iters`` overrides its ``iters``).
        progress: tqdm bar (None: only on a terminal).
        ann_ids: fit only these annotation ids (the others are left as they are), e.g. the people a merge of
            corrected keypoints changed.
        map_chunks: an ordered executor ``map_chunks(fit_people, args)`` that yields :func:`fit_people` of each
            argument tuple elsewhere (``p2m annotate fit --ray``); its ``device`` is the worker's choice.

    Returns:
        Stats with slash keys (``annotations/total``, ``annotations/fitted``, ``annotations/valid``,
        ``annotations/invalid``, ``annotations/too_few_keypoints``, ``annotations/skipped/<reason>`` with reasons
        crowd, rejected, multi_person, has_3d, already_fitted; ``frames/fitted``, ``frames/multi_view``,
        ``cameras/default``, ``subjects/written``), ``fit_error_px/mean`` and ``/median`` over valid and invalid
        fits, ``problems`` (messages naming file, annotation and field), ``device``, ``seconds``.

    Raises:
        P2MError: unreadable or malformed files (naming file, record and field), a missing camera, a bad device.
    """
    from tqdm import tqdm

    from p2m.body import resolve_topology

    t0 = time.monotonic()
    if iters < 1 or batch < 1:
        raise ValueError(f"iters {iters} and batch {batch}: expected >= 1")
    if not max_error_px > 0:
        raise ValueError(f"max_error_px {max_error_px}: expected > 0")
    topo = resolve_topology(topology).name
    dev = resolve_device(device) if map_chunks is None else device
    ds = Dataset(dataset)
    unknown = sorted(set(names or ()) - set(ds.names))
    if unknown:
        raise P2MError(f"{ds.root}: no dataset named {unknown}; found {ds.names}")
    stats: Counter = Counter()
    problems: list[str] = []
    subjects, jobs = [], []
    for files in ds.subject_files:  # plan everything first: bad input fails before any file is rewritten
        if names and files.name not in names:
            continue
        sub = _load_subject(ds, files)
        subjects.append(sub)
        jobs += _plan_subject(sub, overwrite, stats, problems, None if ann_ids is None else set(ann_ids))
    for sub in subjects:  # subjects with nothing to fit but marks to record
        if sub.pending == 0 and (sub.changed or sub.new_cameras):
            _write_subject(sub, stats)
            stats["subjects/written"] += 1
    errors: list[float] = []
    if jobs:
        solver = replace(options or SolverOptions(), iters=iters)
        chunks = [jobs[start : start + batch] for start in range(0, len(jobs), batch)]
        args = [([[ob.view for ob in job.obs] for job in chunk], str(dev), topo, solver) for chunk in chunks]
        fitted = map_chunks(fit_people, args) if map_chunks is not None else (fit_people(*a) for a in args)
        people = sum(len(j.obs) for j in jobs)
        with tqdm(
            total=people, desc="fit", unit="person", disable=None if progress is None else not progress
        ) as bar:
            for chunk, (results, out_topology, rig) in zip(chunks, fitted):
                for job, result in zip(chunk, results):
                    errors += _apply(job, result, out_topology, rig, max_error_px, stats)
                    stats["frames/fitted"] += 1
                    job.subject.pending -= 1
                    if job.subject.pending == 0:
                        _write_subject(job.subject, stats)
                        stats["subjects/written"] += 1
                bar.update(sum(len(j.obs) for j in chunk))
    finite = [e for e in errors if np.isfinite(e)]
    out: dict[str, Any] = dict(sorted(stats.items()))
    if finite:
        out["fit_error_px/mean"] = round(float(np.mean(finite)), 3)
        out["fit_error_px/median"] = round(float(np.median(finite)), 3)
    out["problems"] = problems
    out["device"] = str(dev)
    out["seconds"] = round(time.monotonic() - t0, 2)
    logger.info("fit %s: %s", ds.root, {k: v for k, v in out.items() if k != "problems"})
    return out


__all__ = ["DEFAULT_MAX_ERROR_PX", "KINDS", "MIN_KEYPOINTS", "fit_bodies", "resolve_device", "target_2d"]
