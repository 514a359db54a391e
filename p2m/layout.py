"""Read and write the dataset layout of DESIGN.md Contract 1: the one way stages touch annotation files.

A dataset folder holds, for each dataset ``name`` and subject ``S``::

    annotations/{name}_subject{S}_data.json        COCO: images, annotations, categories, licenses (all lists)
    annotations/{name}_subject{S}_camera.json      {cam_idx: {R, t (mm), f, c[, k, p]}}
    annotations/{name}_subject{S}_joint_3d.json    {action_idx: {subaction_idx: {frame_idx: 17x3 world mm}}}
    annotations/{name}_subject{S}_body_param.json  {action_idx: {subaction_idx: {frame_idx: {model, rig, pose,
                                                                                          shape, trans}}}}
    annotations/{name}_info.json                   dataset facts (name, version, licence, source...)
    images/<file_name>                             image files, ``file_name`` relative to ``images/``

Image and annotation ids are unique across all subject files of a dataset name, and never 0. Joints are in
:data:`p2m.joints.H36M_JOINTS` order. Use :class:`DatasetWriter` to write and :func:`read_dataset` to read.
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from p2m.body.common import ANNY_RIG_BONES, ANNY_SHAPE_NAMES, param_sizes
from p2m.camera import Camera
from p2m.errors import LayoutError, P2MError, short_repr
from p2m.io import is_int, read_json, write_json
from p2m.joints import COCO_JOINTS, COCO_SKELETON, H36M_NUM_JOINTS

logger = logging.getLogger(__name__)

ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "images"
#: Per-subject file kinds. ``smpl_param`` is Pose2Mesh's original Human3.6M name; it is read as body parameters.
SUBJECT_KINDS: tuple[str, ...] = ("data", "camera", "joint_3d", "body_param")
LEGACY_KINDS: tuple[str, ...] = ("smpl_param",)
SUBJECT_FILE_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*?)_subject(?P<subject>\d+)_(?P<kind>data|camera|joint_3d|body_param|smpl_param)\.json$"
)
INFO_FILE_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*?)_info\.json$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

#: Fields every ``images[]`` record carries (crawled images add ``source_url`` and ``license``).
IMAGE_FIELDS: tuple[str, ...] = (
    "id", "file_name", "width", "height", "subject", "action_idx", "subaction_idx", "cam_idx", "frame_idx",
)  # fmt: skip
#: Fields every ``annotations[]`` record carries.
ANNOTATION_FIELDS: tuple[str, ...] = (
    "id", "image_id", "category_id", "bbox", "area", "iscrowd", "keypoints", "num_keypoints", "joints_2d_h36m",
)  # fmt: skip
DATA_KEYS: tuple[str, ...] = ("images", "annotations", "categories", "licenses")
PERSON_CATEGORY_ID = 1
#: COCO's person category, with keypoint names and the 1-based skeleton as in person_keypoints_*.json.
PERSON_CATEGORY: dict[str, Any] = {
    "id": PERSON_CATEGORY_ID,
    "name": "person",
    "supercategory": "person",
    "keypoints": [n.lower() for n in COCO_JOINTS],
    "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
}


def subject_file(root: str | Path, name: str, subject: int, kind: str) -> Path:
    """Path of ``annotations/{name}_subject{subject}_{kind}.json`` under ``root``."""
    if kind not in SUBJECT_KINDS + LEGACY_KINDS:
        raise ValueError(
            f"unknown subject file kind {kind!r}; expected one of {SUBJECT_KINDS + LEGACY_KINDS}"
        )
    return Path(root) / ANNOTATIONS_DIR / f"{name}_subject{int(subject)}_{kind}.json"


def info_file(root: str | Path, name: str) -> Path:
    """Path of ``annotations/{name}_info.json`` under ``root``."""
    return Path(root) / ANNOTATIONS_DIR / f"{name}_info.json"


def frame_key(image: Mapping[str, Any]) -> tuple[str, str, str]:
    """The (action_idx, subaction_idx, frame_idx) keys, as strings, of an image in joint_3d / body_param files.

    Raises:
        KeyError, TypeError or ValueError (also for an infinite number): the image has no such integer fields.
    """
    try:
        return str(int(image["action_idx"])), str(int(image["subaction_idx"])), str(int(image["frame_idx"]))
    except OverflowError as exc:  # int(inf): JSON's 1e999
        raise ValueError(f"{exc}: action_idx, subaction_idx and frame_idx must be integers") from exc


@dataclass(frozen=True)
class SubjectFiles:
    """The files of one subject of one dataset name; a kind that is absent is None."""

    name: str
    subject: int
    data: Path | None = None
    camera: Path | None = None
    joint_3d: Path | None = None
    body_param: Path | None = None
    smpl_param: Path | None = None

    def paths(self) -> list[Path]:
        """The paths that exist, in kind order."""
        return [p for p in (self.data, self.camera, self.joint_3d, self.body_param, self.smpl_param) if p]


@dataclass
class Sample:
    """One person annotation with everything the layout knows about it.

    Attributes:
        dataset: the dataset name (file prefix).
        subject: subject number S.
        image: the ``images[]`` record (dict, as stored).
        annotation: the ``annotations[]`` record (dict, as stored).
        images_dir: ``root/images``; :attr:`image_path` is ``images_dir/<file_name>``.
        camera: the image's camera, or None when the subject has no camera file.
        joints_3d_world: (17, 3) float64 world mm (H36M order), or None. Read-only: the images of one frame
            (its cameras) share one array.
        joints_3d_cam: (17, 3) float64 camera mm, or None (needs the camera and the world joints).
        body_param: ``{"model", "rig", "pose", "shape", "trans"}`` dict, or None. Records of a Pose2Mesh
            ``smpl_param`` file come with ``"model": "smpl"`` added. The images of one frame share one dict.
        person: index of the annotation among its image's annotations, in file order (for stable keys).

    joint_3d and body_param files hold one person per frame (as in Human3.6M); they are attached to every
    annotation of that frame's images (:class:`DatasetWriter` only writes them for one-person frames).
    """

    dataset: str
    subject: int
    image: dict[str, Any]
    annotation: dict[str, Any]
    images_dir: Path = field(repr=False)
    camera: Camera | None = None
    joints_3d_world: np.ndarray | None = None
    joints_3d_cam: np.ndarray | None = None
    body_param: dict[str, Any] | None = None
    person: int = 0

    @property
    def image_path(self) -> Path:
        """``root/images/<file_name>`` (may not exist: pose-only datasets have no pixels). Made on access."""
        return self.images_dir / str(self.image.get("file_name", ""))

    @property
    def joints_2d_h36m(self) -> np.ndarray | None:
        """(17, 3) float64 px + visibility from the annotation, or None when absent."""
        value = self.annotation.get("joints_2d_h36m")
        return None if value is None else np.asarray(value, dtype=np.float64).reshape(H36M_NUM_JOINTS, 3)

    @property
    def keypoints(self) -> np.ndarray | None:
        """(17, 3) float64 COCO keypoints (px + v) from the annotation, or None when absent."""
        value = self.annotation.get("keypoints")
        return None if value is None else np.asarray(value, dtype=np.float64).reshape(17, 3)


@dataclass
class SubjectContent:
    """The parsed files of one subject (what :meth:`Dataset.load_subject` returns)."""

    files: SubjectFiles
    data: dict[str, Any]
    cameras: dict[str, Camera] = field(default_factory=dict)
    joint_3d: dict[str, Any] = field(default_factory=dict)
    body_param: dict[str, Any] = field(default_factory=dict)


class Dataset:
    """A dataset folder: the subject files of every dataset name under ``root/annotations``.

    Attributes:
        root: the dataset folder.
        names: dataset names found (sorted).
        subject_files: one :class:`SubjectFiles` per (name, subject), sorted by name then subject.
        info_paths: name -> its ``{name}_info.json`` (names without one are absent); see :meth:`read_info`.
        stray_files: files under ``annotations/`` that match no pattern of the layout.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        ann_dir = self.root / ANNOTATIONS_DIR
        if not ann_dir.is_dir():
            raise LayoutError(f"{self.root}: no {ANNOTATIONS_DIR}/ folder; expected {ann_dir}")
        found: dict[tuple[str, int], dict[str, Path]] = {}
        self.stray_files: list[Path] = []
        info_paths: dict[str, Path] = {}
        for path in sorted(ann_dir.iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue
            m = SUBJECT_FILE_RE.match(path.name)
            if m:
                found.setdefault((m["name"], int(m["subject"])), {})[m["kind"]] = path
                continue
            m = INFO_FILE_RE.match(path.name)
            if m:
                info_paths[m["name"]] = path
                continue
            self.stray_files.append(path)
        self.subject_files: list[SubjectFiles] = [
            SubjectFiles(name=n, subject=s, **kinds) for (n, s), kinds in sorted(found.items())
        ]
        self.names: list[str] = sorted({sf.name for sf in self.subject_files})
        self.info_paths: dict[str, Path] = info_paths

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, names={self.names}, subject_files={len(self.subject_files)})"

    def read_info(self, name: str) -> dict[str, Any]:
        """The parsed ``{name}_info.json`` ({} when the file is absent)."""
        path = self.info_paths.get(name)
        if path is None:
            return {}
        info = _read(path)
        if not isinstance(info, dict):
            raise LayoutError(f"{path}: expected a JSON object, got {_type(info)}")
        return info

    def load_subject(self, files: SubjectFiles, *, data: bool = True, nested: bool = True) -> SubjectContent:
        """Parse the files of one subject (each read once); errors name the file, record and field.

        ``data=False`` leaves data.json unread (``content.data`` is ``{}``), ``nested=False`` the joint_3d and
        body_param files: for a reader that decodes them its own way (the shard writer's columnar path).
        """
        if files.data is None:
            raise LayoutError(
                f"{self.root / ANNOTATIONS_DIR}: {files.name}_subject{files.subject}_data.json is missing "
                f"but other files of that subject exist ({[p.name for p in files.paths()]})"
            )
        content = SubjectContent(files=files, data=self._read_data(files.data) if data else {})
        if files.camera is not None:
            cams = _read(files.camera)
            if not isinstance(cams, dict):
                raise LayoutError(
                    f"{files.camera}: expected an object {{cam_idx: camera}}, got {_type(cams)}"
                )
            for cam_idx, rec in cams.items():
                content.cameras[str(cam_idx)] = Camera.from_dict(
                    rec, where=f"{files.camera}: cam_idx {cam_idx}"
                )
        if not nested:
            return content
        if files.joint_3d is not None:
            content.joint_3d = _read_nested(files.joint_3d)
        params = files.body_param or files.smpl_param
        if params is not None:
            content.body_param = _read_nested(params)
        return content

    @staticmethod
    def _read_data(path: Path) -> dict[str, Any]:
        data = _read(path)
        if not isinstance(data, dict):
            raise LayoutError(
                f"{path}: expected a JSON object with images/annotations, got {type(data).__name__}"
            )
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise LayoutError(f"{path}: field {key!r} must be a list, got {_type(data.get(key))}")
        return data

    def iter_subjects(self, names: Sequence[str] | None = None) -> Iterator[SubjectContent]:
        """Yield the parsed content of each subject (optionally only of some dataset names)."""
        for files in self.subject_files:
            if names is None or files.name in names:
                yield self.load_subject(files)

    def iter_samples(self, names: Sequence[str] | None = None) -> Iterator[Sample]:
        """Yield one :class:`Sample` per person annotation, subject file by subject file, in file order.

        Each subject's files are read once. Missing cameras, 3D joints or body parameters give None; an
        annotation whose image is unknown, or an image whose cam_idx is missing from an existing camera file,
        raises :class:`LayoutError` naming the file, the id and the field.
        """
        for content in self.iter_subjects(names):
            yield from _samples_of(self.root, content)


def read_dataset(root: str | Path) -> Dataset:
    """Open a dataset folder (Contract 1). Files are parsed lazily, per subject, by :meth:`Dataset.iter_samples`."""
    return Dataset(root)


def _samples_of(root: Path, content: SubjectContent) -> Iterator[Sample]:
    files = content.files
    images: dict[Any, dict[str, Any]] = {}
    for i, img in enumerate(content.data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise LayoutError(f"{files.data}: images[] record {short_repr(img)} has no 'id'")
        if not is_int(img["id"]):
            raise LayoutError(
                f"{files.data}: images[{i}]: field 'id' = {short_repr(img['id'])}, expected an integer"
            )
        images[img["id"]] = img
    legacy = files.body_param is None and files.smpl_param is not None
    images_dir = root / IMAGES_DIR
    cache: dict[Any, tuple[Camera | None, np.ndarray | None, np.ndarray | None, dict | None]] = {}
    frames: dict[
        tuple[str, str, str], tuple[np.ndarray | None, dict | None]
    ] = {}  # shared by a frame's cameras
    persons: dict[Any, int] = {}
    for ann in content.data["annotations"]:
        if not isinstance(ann, dict):
            raise LayoutError(f"{files.data}: annotations[] record {short_repr(ann)} is not an object")
        image_id = ann.get("image_id")
        img = images.get(image_id) if is_int(image_id) else None
        if img is None:
            raise LayoutError(
                f"{files.data}: annotation id {short_repr(ann.get('id'))}: field 'image_id' = {short_repr(image_id)} names "
                "no image"
            )
        if image_id not in cache:
            cache[image_id] = _frame_facts(files, content, img, legacy, frames)
        camera, j3d_world, j3d_cam, params = cache[image_id]
        person = persons.get(image_id, 0)
        persons[image_id] = person + 1
        yield Sample(
            dataset=files.name,
            subject=files.subject,
            image=img,
            annotation=ann,
            images_dir=images_dir,
            camera=camera,
            joints_3d_world=j3d_world,
            joints_3d_cam=j3d_cam,
            body_param=params,
            person=person,
        )


def _frame_facts(
    files: SubjectFiles,
    content: SubjectContent,
    img: dict[str, Any],
    legacy: bool,
    frames: dict[tuple[str, str, str], tuple[np.ndarray | None, dict | None]],
) -> tuple[Camera | None, np.ndarray | None, np.ndarray | None, dict | None]:
    """Camera, world and camera joints, body parameters of one image; ``frames`` caches the per-frame part."""
    camera = None
    if files.camera is not None:
        cam_idx = str(img.get("cam_idx"))
        camera = content.cameras.get(cam_idx)
        if camera is None:
            raise LayoutError(
                f"{files.data}: image id {img.get('id')}: field 'cam_idx' = {img.get('cam_idx')!r} is not in "
                f"{files.camera.name} (has {sorted(content.cameras)})"
            )
    try:
        key = frame_key(img)
    except (KeyError, TypeError, ValueError) as exc:
        if content.joint_3d or content.body_param:
            raise LayoutError(
                f"{files.data}: image id {img.get('id')}: needs integer action_idx, subaction_idx and frame_idx "
                f"to find its 3D joints / body parameters ({exc!r})"
            ) from exc
        return camera, None, None, None
    frame = frames.get(key)
    if frame is None:
        frame = frames[key] = _frame_data(files, content, key, img, legacy)
    j3d_world, params = frame
    j3d_cam = camera.world_to_camera(j3d_world) if camera is not None and j3d_world is not None else None
    return camera, j3d_world, j3d_cam, params


def _frame_data(
    files: SubjectFiles, content: SubjectContent, key: tuple[str, str, str], img: dict[str, Any], legacy: bool
) -> tuple[np.ndarray | None, dict | None]:
    """World joints (read-only (17, 3) float64) and body parameters of one frame, as every camera sees them."""
    j3d_world = None
    raw = _lookup(content.joint_3d, key)
    if raw is not None:
        try:
            j3d_world = np.asarray(raw, dtype=np.float64).reshape(H36M_NUM_JOINTS, 3)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LayoutError(
                f"{files.joint_3d}: frame {'/'.join(key)} (image id {img.get('id')}): expected 17x3 numbers, "
                f"got {short_repr(raw)}"
            ) from exc
        j3d_world.setflags(write=False)
    params = _lookup(content.body_param, key)
    if params is not None:
        if not isinstance(params, dict):
            where = files.body_param or files.smpl_param
            raise LayoutError(f"{where}: frame {'/'.join(key)}: expected an object, got {short_repr(params)}")
        if legacy and "model" not in params:
            params = {"model": "smpl", **params}
        check_param_sizes(params, f"{files.body_param or files.smpl_param}: frame {'/'.join(key)}")
    return j3d_world, params


def _lookup(nested: Mapping[str, Any], key: tuple[str, str, str]) -> Any:
    level: Any = nested
    for part in key:
        if not isinstance(level, Mapping):
            return None
        level = level.get(part)
        if level is None:
            return None
    return level


def _read(path: Path) -> Any:
    """A JSON file as :func:`p2m.io.read_json` gives it, parsed by msgspec when it can (4-5x faster).

    msgspec builds the same objects as the standard parser (same float rounding, last duplicate key wins), and
    refuses what the standard parser would refuse and more (NaN, numbers beyond float range, deep nesting);
    anything it refuses is parsed again by :func:`p2m.io.read_json`, whose errors name the file, line and column.
    """
    try:
        with path.open("rb") as fh:
            return decode_json(fh.read())
    except (OSError, ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        pass
    try:
        return read_json(path)
    except P2MError as exc:
        raise LayoutError(str(exc)) from exc


def decode_json(raw: bytes, decoder: Any = None) -> Any:
    """Decode JSON bytes with msgspec (``decoder``: a typed ``msgspec.json.Decoder``), the garbage collector paused.

    A subject file is millions of small containers: with the collector on, parsing one takes ~1.5x as long.
    Raises msgspec's errors (ValueError subclasses) and RecursionError unchanged.
    """
    if not raw.isascii():
        raw.decode("utf-8")  # the standard reader's check: invalid UTF-8 anywhere (even in unread fields)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return (decoder or _GENERIC).decode(raw)
    finally:
        if enabled:
            gc.enable()


_GENERIC = msgspec.json.Decoder()


def _read_nested(path: Path) -> dict[str, Any]:
    obj = _read(path)
    if not isinstance(obj, dict):
        raise LayoutError(f"{path}: expected an object {{action_idx: {{subaction_idx: {{frame_idx: ...}}}}}}")
    return obj


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def exclusion_reason(annotation: Mapping[str, Any]) -> str | None:
    """Why a person annotation stays out of training data, or None when it is usable.

    ``"iscrowd"`` (COCO crowd region), ``"rejected"`` (a reviewer rejected it in ``p2m annotate review``:
    ``review.status == "rejected"``), ``"fit_invalid"`` (``p2m annotate fit`` marked its 3D fit invalid). The
    annotation stays in the dataset either way; only consumers such as ``p2m shard`` leave it out.
    """
    if annotation.get("iscrowd"):
        return "iscrowd"
    review = annotation.get("review")
    if isinstance(review, Mapping) and review.get("status") == "rejected":
        return "rejected"
    if annotation.get("fit_valid") is False:
        return "fit_invalid"
    return None


def validate_body_param(record: Any, where: str = "body_param") -> dict[str, Any]:
    """Check a body_param record and return a normalised copy (numbers as Python floats).

    A record is ``{"model": str, "rig": str (optional), "pose": [floats] (axis-angle, rad), "shape": [floats],
    "trans": [3 floats] (m, world frame)}``; other keys pass through unchanged.

    Raises:
        LayoutError: naming ``where``, the field and what was expected.
    """
    if not isinstance(record, Mapping):
        raise LayoutError(
            f"{where}: expected an object with model, pose, shape, trans, got {short_repr(record)}"
        )
    out = dict(record)
    if not isinstance(record.get("model"), str) or not record.get("model"):
        raise LayoutError(
            f"{where}: field 'model' = {short_repr(record.get('model'))}, expected a body model name"
        )
    if "rig" in record and not isinstance(record["rig"], str):
        raise LayoutError(f"{where}: field 'rig' = {short_repr(record['rig'])}, expected a string")
    for key in ("pose", "shape", "trans"):
        value = record.get(key)
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
            arr = None
        if value is None or arr is None or arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise LayoutError(
                f"{where}: field {key!r} = {short_repr(value)}, expected a non-empty flat list of numbers"
            )
        out[key] = arr.tolist()
    if len(out["trans"]) != 3:
        raise LayoutError(f"{where}: field 'trans' has {len(out['trans'])} numbers, expected 3 (metres)")
    check_param_sizes(out, where)
    return out


def check_param_sizes(record: Mapping[str, Any], where: str = "body_param") -> None:
    """Check the lengths of ``pose`` and ``shape`` against the body model the record names (:func:`param_sizes`).

    Cheap (lengths only, no model is built), so the readers run it on every record; a model or anny rig whose
    sizes p2m does not know is not checked.

    Raises:
        LayoutError: naming ``where``, the field, its length and the expected one.
    """
    model, rig = record.get("model"), record.get("rig")
    sizes = param_sizes(model, rig if isinstance(rig, str) else None) if isinstance(model, str) else None
    if sizes is None:
        return
    for key in ("pose", "shape", "trans"):
        value = record.get(key)
        got = len(value) if isinstance(value, (list, tuple)) else None
        if got in sizes[key]:
            continue
        if str(model).lower() == "smpl":
            want = f"{sizes[key][0]} for SMPL"
        elif key == "pose" and isinstance(rig, str):
            want = f"{sizes[key][0]} for anny rig {rig!r} ({ANNY_RIG_BONES[rig]} bones x 3 axis-angle)"
        elif key == "pose":
            want = (
                "3 x the bones of an anny rig ("
                + ", ".join(f"{r} {3 * n}" for r, n in ANNY_RIG_BONES.items())
                + ")"
            )
        else:
            want = f"{sizes[key][0]} for anny" + (
                " (phenotypes " + ", ".join(ANNY_SHAPE_NAMES) + ")" if key == "shape" else ""
            )
        shown = f"{got} number{'' if got == 1 else 's'}" if got is not None else short_repr(value)
        raise LayoutError(f"{where}: field {key!r} has {shown}, expected {want}")


@dataclass
class _SubjectBuffer:
    data: dict[str, Any]
    cameras: dict[str, dict[str, Any]]
    joint_3d: dict[str, Any]
    body_param: dict[str, Any]


class DatasetWriter:
    """Write (or extend) one dataset name of a Contract 1 folder.

    Ids are assigned here: image and annotation ids continue after the largest ones already in any subject
    file of this name, so they stay unique across subject files and never 0. Everything is kept in memory and
    written by :meth:`close` (each file atomically; data.json last). Used as a context manager, it closes on
    success and writes nothing if the block raises.

    Example::

        with DatasetWriter(root, "synth", info={"version": "1"}) as w:
            w.add_camera(1, 1, cam)
            w.add_frame(1, {"file_name": "a.jpg", "width": 1000, "height": 1000, "action_idx": 2,
                            "subaction_idx": 1, "cam_idx": 1, "frame_idx": 0},
                        [{"bbox": [...], "keypoints": kp17x3, "joints_2d_h36m": j17x3}], joints_3d_world=j3d)
    """

    def __init__(self, root: str | Path, name: str, info: Mapping[str, Any] | None = None) -> None:
        if not NAME_RE.match(name) or "_subject" in name:
            raise LayoutError(f"dataset name {name!r}: use letters, digits, '-' and '_' (and no '_subject')")
        self.root = Path(root)
        self.name = name
        self._info = dict(info) if info else {}
        self._subjects: dict[int, _SubjectBuffer] = {}
        self._closed = False
        self.images_added = 0
        self.annotations_added = 0
        self._next_image_id, self._next_ann_id = 1, 1
        ann_dir = self.root / ANNOTATIONS_DIR
        if ann_dir.is_dir():
            for path in sorted(ann_dir.glob(f"{name}_subject*_data.json")):
                m = SUBJECT_FILE_RE.match(path.name)
                if not m or m["name"] != name:
                    continue
                data = _read(path)
                if not isinstance(data, dict):
                    raise LayoutError(f"{path}: expected a JSON object, got {_type(data)}; cannot extend it")
                for key, attr in (("images", "_next_image_id"), ("annotations", "_next_ann_id")):
                    records = data.get(key, [])
                    if not isinstance(records, list):
                        raise LayoutError(f"{path}: top-level {key!r} is not a list; cannot extend it")
                    ids = [r.get("id") for r in records if isinstance(r, dict)]
                    ids = [i for i in ids if is_int(i)]
                    if ids:
                        setattr(self, attr, max(getattr(self, attr), max(ids) + 1))

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            logger.warning(
                "%s: not written (%d images discarded) because of %s",
                self.root,
                self.images_added,
                exc_type.__name__,
            )
            self._closed = True

    def _subject(self, subject: int) -> _SubjectBuffer:
        if self._closed:
            raise LayoutError(f"DatasetWriter({self.root}, {self.name!r}) is closed")
        subject = int(subject)
        if subject < 0:
            raise LayoutError(f"subject {subject}: expected a non-negative integer")
        buf = self._subjects.get(subject)
        if buf is None:
            loaded = {}
            for kind in SUBJECT_KINDS:  # extend what is there
                path = subject_file(self.root, self.name, subject, kind)
                loaded[kind] = _read(path) if path.exists() else {}
                if not isinstance(loaded[kind], dict):
                    raise LayoutError(
                        f"{path}: expected a JSON object, got {_type(loaded[kind])}; cannot extend it"
                    )
            for key in DATA_KEYS:
                loaded["data"].setdefault(key, [PERSON_CATEGORY] if key == "categories" else [])
                if not isinstance(loaded["data"][key], list):
                    raise LayoutError(
                        f"{subject_file(self.root, self.name, subject, 'data')}: top-level {key!r} "
                        "is not a list; cannot extend it"
                    )
            buf = _SubjectBuffer(loaded["data"], loaded["camera"], loaded["joint_3d"], loaded["body_param"])
            self._subjects[subject] = buf
        return buf

    def add_camera(self, subject: int, cam_idx: int, camera: Camera) -> None:
        """Record the camera ``cam_idx`` of ``subject`` (re-adding the same camera is a no-op)."""
        buf = self._subject(subject)
        key, record = str(int(cam_idx)), camera.to_dict()
        old = buf.cameras.get(key)
        if old is not None and old != record:
            raise LayoutError(f"{self.name} subject {subject}: cam_idx {key} already has a different camera")
        buf.cameras[key] = record

    def add_frame(
        self,
        subject: int,
        image: Mapping[str, Any],
        annotations: Sequence[Mapping[str, Any]],
        joints_3d_world: np.ndarray | None = None,
        body_param: Mapping[str, Any] | None = None,
    ) -> tuple[int, list[int]]:
        """Add one image with its person annotations; return (image id, annotation ids).

        Args:
            subject: subject number S (file ``{name}_subject{S}_*``).
            image: ``file_name`` (relative to ``images/``), ``width``, ``height``, ``action_idx``,
                ``subaction_idx``, ``cam_idx``, ``frame_idx`` and any extra fields (``source_url``, ``license``).
                ``id`` and ``subject`` are filled in.
            annotations: per person: ``bbox`` [x, y, w, h] px, ``keypoints`` COCO (17, 3) or 51 numbers,
                ``joints_2d_h36m`` (17, 3) px + visibility; optional ``area`` (default w*h), ``iscrowd`` (0),
                ``category_id`` (1), ``num_keypoints`` (count of v > 0), extra fields.
            joints_3d_world: (17, 3) world mm for the frame (action, subaction, frame), shared by its cameras;
                only for frames with exactly one annotation.
            body_param: the frame's body parameters (see :func:`validate_body_param`); same rule.

        Raises:
            LayoutError: a missing or malformed field, or 3D data that conflicts with what the frame already has.
        """
        buf = self._subject(subject)
        img = dict(image)
        where = f"{self.name} subject {subject} image {img.get('file_name')!r}"
        if "id" in img:
            raise LayoutError(f"{where}: field 'id' is assigned by DatasetWriter; leave it out")
        if img.setdefault("subject", int(subject)) != int(subject):
            raise LayoutError(f"{where}: field 'subject' = {img['subject']!r}, expected {subject}")
        missing = [k for k in IMAGE_FIELDS if k not in img and k != "id"]
        if missing:
            raise LayoutError(f"{where}: missing field(s) {missing}")
        for k in ("width", "height", "action_idx", "subaction_idx", "cam_idx", "frame_idx"):
            if isinstance(img[k], bool) or not isinstance(img[k], (int, np.integer)):
                raise LayoutError(f"{where}: field {k!r} = {img[k]!r}, expected an integer")
            img[k] = int(img[k])
        anns = [self._annotation(a, f"{where} annotation {i}") for i, a in enumerate(annotations)]
        if (joints_3d_world is not None or body_param is not None) and len(anns) != 1:
            raise LayoutError(
                f"{where}: joint_3d and body_param hold one person per frame, but the frame has "
                f"{len(anns)} annotations"
            )
        key = frame_key(img)
        if joints_3d_world is not None:
            j3d = np.asarray(joints_3d_world, dtype=np.float64)
            if j3d.shape != (H36M_NUM_JOINTS, 3) or not np.all(np.isfinite(j3d)):
                raise LayoutError(f"{where}: joints_3d_world shape {j3d.shape}, expected finite (17, 3) mm")
            _put(
                buf.joint_3d, key, j3d.tolist(), where, "joint_3d", lambda a, b: np.allclose(a, b, atol=1e-6)
            )
        if body_param is not None:
            params = validate_body_param(body_param, f"{where}: body_param")
            _put(buf.body_param, key, params, where, "body_param", lambda a, b: a == b)
        img = {"id": self._next_image_id, **img}
        self._next_image_id += 1
        ann_ids = []
        for ann in anns:
            ann = {"id": self._next_ann_id, "image_id": img["id"], **ann}
            self._next_ann_id += 1
            buf.data["annotations"].append(ann)
            ann_ids.append(ann["id"])
        buf.data["images"].append(img)
        self.images_added += 1
        self.annotations_added += len(anns)
        return img["id"], ann_ids

    @staticmethod
    def _annotation(ann: Mapping[str, Any], where: str) -> dict[str, Any]:
        out = dict(ann)
        for k in ("id", "image_id"):
            if k in out:
                raise LayoutError(f"{where}: field {k!r} is assigned by DatasetWriter; leave it out")
        try:
            bbox = np.asarray(out["bbox"], dtype=np.float64).reshape(4)
            kp = np.asarray(out["keypoints"], dtype=np.float64).reshape(17, 3)
            j2d = np.asarray(out["joints_2d_h36m"], dtype=np.float64).reshape(H36M_NUM_JOINTS, 3)
        except KeyError as exc:
            raise LayoutError(f"{where}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise LayoutError(
                f"{where}: bbox needs 4 numbers, keypoints 17x3, joints_2d_h36m 17x3 ({exc})"
            ) from exc
        if not np.isin(kp[:, 2], (0, 1, 2)).all():
            raise LayoutError(
                f"{where}: keypoints visibility {kp[:, 2].tolist()}, expected values in {{0, 1, 2}}"
            )
        out["bbox"] = bbox.tolist()
        flat: list[float | int] = []
        for x, y, v in kp.tolist():
            flat += [x, y, int(v)]
        out["keypoints"] = flat
        out["joints_2d_h36m"] = j2d.tolist()
        out.setdefault("category_id", PERSON_CATEGORY_ID)
        out.setdefault("iscrowd", 0)
        out.setdefault("area", float(bbox[2] * bbox[3]))
        out.setdefault("num_keypoints", int((kp[:, 2] > 0).sum()))
        return out

    def close(self) -> None:
        """Write every touched subject's files and the info file (atomically; data.json last). Idempotent."""
        if self._closed:
            return
        for subject, buf in sorted(self._subjects.items()):
            for kind, obj in (
                ("camera", buf.cameras),
                ("joint_3d", buf.joint_3d),
                ("body_param", buf.body_param),
            ):
                if obj:
                    write_json(subject_file(self.root, self.name, subject, kind), obj)
            write_json(subject_file(self.root, self.name, subject, "data"), buf.data)
        path = info_file(self.root, self.name)
        info = _read(path) if path.exists() else {}
        if not isinstance(info, dict):
            raise LayoutError(f"{path}: expected a JSON object, got {_type(info)}")
        merged = {"name": self.name, **info, **self._info}
        if merged != info or not path.exists():
            write_json(path, merged, indent=1)
        self._closed = True
        logger.info(
            "%s: wrote %d images, %d annotations of %r",
            self.root,
            self.images_added,
            self.annotations_added,
            self.name,
        )


def _put(nested: dict[str, Any], key: tuple[str, str, str], value: Any, where: str, what: str, same) -> None:
    a, s, f = key
    level = nested.setdefault(a, {}).setdefault(s, {})
    if f in level and not same(level[f], value):
        raise LayoutError(
            f"{where}: {what} of frame {a}/{s}/{f} differs from the one already recorded for it"
        )
    level[f] = value
