"""What a review save does to a dataset: the one annotation rewritten, dependent fields recomputed, never corrupt.

:meth:`ReviewStore.save` rewrites only the one annotation of its subject's data.json:

- ``keypoints``: the keypoints the reviewer changed (moved, or visibility set; v = 0 stores x = y = 0, as COCO does);
  unchanged ones keep their stored values exactly. Moved ones are stored to 0.01 px.
- ``num_keypoints``: recounted. ``bbox``: recomputed from the keypoints when it was the
  :func:`p2m.camera.bbox_from_joints` box of the old ones, else grown (never shrunk) to hold every labelled
  keypoint; ``area`` follows when it was w * h.
- ``joints_2d_h36m``: when the frame has NO 3D joints (no joint_3d entry), its COCO-derived joints whose COCO
  parents changed are recomputed with :func:`p2m.joints.coco_to_h36m` (Head is kept). When 3D exists,
  joints_2d_h36m stays the projection of joint_3d (the frame's 3D is shared by all its cameras and one edited
  view cannot move it): the edited COCO keypoints are then the authoritative 2D and ``review.needs_refit`` says
  that ``p2m annotate fit`` should refit that person.
- ``review``: ``{"status": "accepted" | "rejected", "edited_keypoints": [COCO indices ever changed],
  "needs_refit": true (only when 3D exists and keypoints changed), "saved_at": ISO-8601 UTC}``. A rejected person
  is kept in the file; downstream stages skip it (:func:`is_rejected`).

Concurrent saves (two tabs, two servers) never corrupt the file: each save re-reads the file under a per-file lock
(a thread lock plus ``fcntl.flock`` on a hidden ``.{file}.lock`` beside it), checks the annotation's etag (a hash
of its stored JSON) against the one the page loaded and answers a stale save with :class:`ConflictError` (409),
then writes atomically through :func:`p2m.io.write_json`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.camera import bbox_from_joints
from p2m.errors import LayoutError, P2MError
from p2m.io import is_finite_number, is_int, read_json, temp_files_of, write_json
from p2m.joints import COCO_JOINTS, COCO_TO_H36M_PARENTS, coco_to_h36m
from p2m.layout import IMAGES_DIR, SubjectFiles, frame_key, read_dataset

try:  # POSIX: also lock against other processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

REVIEW_FIELD = "review"
#: Fields a save request may carry.
SAVE_FIELDS = ("etag", "keypoints", "rejected")
#: How many parsed files (data.json, joint_3d key sets) a store keeps in memory.
CACHE_FILES = 4
_MOVE_EPS_PX = (
    1e-3  # a keypoint counts as changed when it moved more than this; moved ones are stored to 0.01 px
)


class ReviewRequestError(P2MError):
    """A save or lookup the review server refuses; ``status`` is the HTTP status it answers with."""

    status = 400


class NotFoundError(ReviewRequestError):
    """An annotation, image or page that the dataset does not have (404)."""

    status = 404


class ConflictError(ReviewRequestError):
    """The annotation changed on disk since the page loaded it (409): reload, then edit again."""

    status = 409


def is_rejected(annotation: Mapping[str, Any]) -> bool:
    """True when a reviewer rejected this person (``review.status == "rejected"``)."""
    review = annotation.get(REVIEW_FIELD)
    return isinstance(review, Mapping) and review.get("status") == "rejected"


def annotation_etag(annotation: Mapping[str, Any]) -> str:
    """A short hash of the annotation's JSON (keys sorted): changes whenever any field of it changes."""
    text = json.dumps(annotation, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold the cross-process lock of ``path`` (``flock`` on ``.{name}.lock`` beside it); a no-op off POSIX."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Page:
    image_id: Any
    files: SubjectFiles


@dataclass
class _Cached:
    key: tuple[int, int, int]
    value: Any
    indent: int | None = None
    _index: tuple[dict, dict] | None = None

    def index(self) -> tuple[dict[Any, dict], dict[Any, list[dict]]]:
        """(image id -> image, image id -> its annotations in file order) of a data.json, built once."""
        if self._index is None:
            images = {i["id"]: i for i in self.value["images"] if isinstance(i, dict) and is_int(i.get("id"))}
            anns: dict[Any, list[dict]] = {}
            for a in self.value["annotations"]:
                if isinstance(a, dict) and is_int(a.get("image_id")):
                    anns.setdefault(a["image_id"], []).append(a)
            self._index = (images, anns)
        return self._index


class ReviewStore:
    """The dataset as the review page sees it: pages (one per image), annotations by id, and safe saves.

    Args:
        root: a dataset folder (DESIGN.md Contract 1).

    Raises:
        LayoutError: the folder has no data.json, or one is malformed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.dataset = read_dataset(self.root)
        self.pages: list[_Page] = []
        self._ann_files: dict[int, SubjectFiles] = {}
        self._image_files: dict[int, SubjectFiles] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._cache: OrderedDict[tuple[Path, str], _Cached] = OrderedDict()
        self._cache_guard = threading.Lock()
        for files in self.dataset.subject_files:
            if files.data is None:
                continue
            _remove_stale_temps(files.data)
            data = self._data(files.data)
            for img in data["images"]:
                if isinstance(img, dict) and is_int(img.get("id")):
                    self.pages.append(_Page(img["id"], files))
                    self._image_files[img["id"]] = files
            for ann in data["annotations"]:
                if isinstance(ann, dict) and is_int(ann.get("id")):
                    self._ann_files[ann["id"]] = files
        if not self.pages:
            raise LayoutError(f"{self.root}: no images in any annotations/*_data.json; nothing to review")
        logger.info(
            "%s: %d images, %d annotations to review", self.root, len(self.pages), len(self._ann_files)
        )

    # -------------------------------------------------------------------------------------------- reading
    def _cached(self, path: Path, what: str, load: Callable[[Path], tuple[Any, int | None]]) -> _Cached:
        """Parse ``path`` once per version on disk (inode, mtime, size)."""
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._cache_guard:
            hit = self._cache.get((path, what))
        if hit is None or hit.key != key:
            value, indent = load(path)
            hit = _Cached(key, value, indent)
        self._remember((path, what), hit)
        return hit

    def _remember(self, slot: tuple[Path, str], entry: _Cached) -> None:
        """Keep the most recently used parsed files only (a Human3.6M data.json parses to GBs)."""
        with self._cache_guard:
            self._cache[slot] = entry
            self._cache.move_to_end(slot)
            while len(self._cache) > CACHE_FILES:
                self._cache.popitem(last=False)

    def _data(self, path: Path) -> dict[str, Any]:
        return self._cached(path, "data", _load_data).value

    def _frames_3d(self, files: SubjectFiles) -> set[tuple[str, str, str]]:
        if files.joint_3d is None or not files.joint_3d.exists():
            return set()
        return self._cached(files.joint_3d, "frames", _load_frame_keys).value

    def _find(self, data: dict[str, Any], ann_id: int, path: Path) -> int:
        for i, ann in enumerate(data["annotations"]):
            if isinstance(ann, dict) and ann.get("id") == ann_id:
                return i
        raise NotFoundError(f"annotation id {ann_id} is no longer in {path} (changed by another tool?)")

    def locate(self, ann_id: Any) -> SubjectFiles:
        """The subject files whose data.json holds annotation ``ann_id`` (NotFoundError names the id)."""
        try:
            key = int(ann_id)
        except (TypeError, ValueError):
            raise NotFoundError(f"annotation id {ann_id!r} is not an integer") from None
        files = self._ann_files.get(key)
        if files is None or files.data is None:
            raise NotFoundError(f"annotation id {key} is in no data.json of {self.root}")
        return files

    def page(self, index: int) -> dict[str, Any]:
        """Everything the page shows for image number ``index`` (0-based, in subject-file order).

        Returns:
            ``{"index", "count", "image" (the images[] record), "data_file" (name), "has_3d" (bool),
            "image_url" (relative, without token) or None when the file is missing, "annotations":
            [{"annotation", "etag"}]}``.
        """
        if not 0 <= index < len(self.pages):
            raise NotFoundError(f"page {index} does not exist; pages are 0..{len(self.pages) - 1}")
        page = self.pages[index]
        images, by_image = self._cached(page.files.data, "data", _load_data).index()
        image = images.get(page.image_id)
        if image is None:
            raise NotFoundError(f"image id {page.image_id} is no longer in {page.files.data}")
        anns = by_image.get(page.image_id, [])
        try:
            has_3d = frame_key(image) in self._frames_3d(page.files)
        except (KeyError, TypeError, ValueError):
            has_3d = False
        return {
            "index": index,
            "count": len(self.pages),
            "image": image,
            "data_file": page.files.data.name,
            "has_3d": has_3d,
            "image_url": f"image/{page.image_id}" if self._image_path(image) is not None else None,
            "annotations": [{"annotation": a, "etag": annotation_etag(a)} for a in anns],
        }

    def annotation(self, ann_id: Any) -> dict[str, Any]:
        """``{"annotation", "etag"}`` of one annotation, as stored now."""
        files = self.locate(ann_id)
        data = self._data(files.data)
        ann = data["annotations"][self._find(data, int(ann_id), files.data)]
        return {"annotation": ann, "etag": annotation_etag(ann)}

    def image_path(self, image_id: Any) -> Path:
        """The file of an image, checked to lie under ``images/``."""
        try:
            key = int(image_id)
        except (TypeError, ValueError):
            raise NotFoundError(f"image id {image_id!r} is not an integer") from None
        files = self._image_files.get(key)
        if files is None:
            raise NotFoundError(f"image id {key} is in no data.json of {self.root}")
        image = self._cached(files.data, "data", _load_data).index()[0].get(key)
        path = self._image_path(image) if image else None
        if path is None:
            raise NotFoundError(
                f"image id {key}: no file images/{(image or {}).get('file_name')} in {self.root}"
            )
        return path

    def _image_path(self, image: Mapping[str, Any]) -> Path | None:
        base = (self.root / IMAGES_DIR).resolve()
        path = (base / str(image.get("file_name", ""))).resolve()
        return path if path.is_relative_to(base) and path.is_file() else None

    # -------------------------------------------------------------------------------------------- saving
    def _lock(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.Lock())

    def save(self, ann_id: Any, request: Any) -> dict[str, Any]:
        """Apply one reviewer's edit of one annotation and write its data.json atomically.

        Args:
            ann_id: the annotation id.
            request: ``{"etag": str (from the page load), "keypoints": 51 numbers (17 x, y px, v in {0,1,2}),
                optional, "rejected": bool, optional}``.

        Returns:
            ``{"annotation", "etag", "changed": [COCO keypoint indices changed by this save]}``.

        Raises:
            ReviewRequestError: a malformed request (names the field); NotFoundError: unknown id;
            ConflictError: the annotation changed since ``etag`` was read.
        """
        etag, keypoints, rejected = _parse_request(request)
        files = self.locate(ann_id)
        path = files.data
        with self._lock(path), file_lock(path):
            cached = self._cached(path, "data", _load_data)
            data = cached.value
            pos = self._find(data, int(ann_id), path)
            old = data["annotations"][pos]
            if annotation_etag(old) != etag:
                raise ConflictError(
                    f"annotation id {ann_id} in {path.name} was changed by another save since this page loaded "
                    "it (another tab?); reload to see the saved version, then edit again"
                )
            image = cached.index()[0].get(old.get("image_id")) or {}
            try:
                has_3d = frame_key(image) in self._frames_3d(files)
            except (KeyError, TypeError, ValueError):
                has_3d = False
            new, changed = apply_edit(old, image, keypoints, rejected, has_3d)
            new_data = dict(data)
            new_data["annotations"] = list(data["annotations"])
            new_data["annotations"][pos] = new
            write_json(path, new_data, indent=cached.indent)
            st = path.stat()
            self._remember(
                (path, "data"), _Cached((st.st_ino, st.st_mtime_ns, st.st_size), new_data, cached.indent)
            )
        logger.info(
            "%s: saved annotation %s (keypoints changed: %s, status %s)",
            path.name,
            ann_id,
            changed,
            new[REVIEW_FIELD]["status"],
        )
        return {"annotation": new, "etag": annotation_etag(new), "changed": changed}


def _load_data(path: Path) -> tuple[dict[str, Any], int | None]:
    data = _read(path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise LayoutError(f"{path}: expected an object whose 'images' and 'annotations' are lists")
    with open(path, "rb") as fh:  # keep the file's style: compact, or indented as it was
        head = fh.read(64)
    indent = None
    if head.startswith(b"{\n"):
        line = head[2:].split(b"\n", 1)[0]
        indent = max(1, len(line) - len(line.lstrip(b" ")))
    return data, indent


def _load_frame_keys(path: Path) -> tuple[set[tuple[str, str, str]], None]:
    nested = _read(path)
    keys: set[tuple[str, str, str]] = set()
    if isinstance(nested, dict):
        for a, subs in nested.items():
            for s, frames in subs.items() if isinstance(subs, dict) else ():
                keys.update((str(a), str(s), str(f)) for f in (frames if isinstance(frames, dict) else ()))
    return keys, None


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except P2MError as exc:
        raise LayoutError(str(exc)) from exc


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files that a save killed mid-write left beside ``path``.

    Under the file's lock: every save (this server's, another's, ``p2m annotate fit``'s) holds it while its
    temporary file exists, so none found here is still being written.
    """
    if not temp_files_of(path):  # the common case: no lock file is made, a read-only dataset stays readable
        return
    with file_lock(path):
        for tmp in temp_files_of(path):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                logger.info("%s: removed %s, left by an interrupted save", path.parent, tmp.name)


def _parse_request(request: Any) -> tuple[str, list[list[float]] | None, bool | None]:
    if not isinstance(request, dict):
        raise ReviewRequestError(
            f"request body: expected a JSON object with fields {list(SAVE_FIELDS)}, "
            f"got {type(request).__name__}"
        )
    unknown = sorted(set(request) - set(SAVE_FIELDS))
    if unknown:
        raise ReviewRequestError(f"unknown field(s) {repr(unknown)[:200]}; expected {list(SAVE_FIELDS)}")
    etag = request.get("etag")
    if not isinstance(etag, str) or not etag:
        raise ReviewRequestError(
            f"field 'etag' = {repr(etag)[:40]}: expected the etag string the page loaded with the annotation"
        )
    rejected = request.get("rejected")
    if rejected is not None and not isinstance(rejected, bool):
        raise ReviewRequestError(f"field 'rejected' = {repr(rejected)[:40]}: expected true or false")
    raw = request.get("keypoints")
    if raw is None:
        return etag, None, rejected
    if not isinstance(raw, list) or len(raw) != 51:
        got = f"{len(raw)} values" if isinstance(raw, list) else type(raw).__name__
        raise ReviewRequestError(f"field 'keypoints': expected 51 numbers (17 x, y, v), got {got}")
    for i, value in enumerate(raw):
        if not is_finite_number(value):
            shown = (
                repr(value)
                if len(repr(value)) <= 40
                else f"{repr(value)[:37]}... ({len(repr(value))} characters)"
            )
            raise ReviewRequestError(
                f"field 'keypoints': value {i} ({COCO_JOINTS[i // 3]} "
                f"{'xyv'[i % 3]}) = {shown}, expected a finite number"
            )
    kps = [list(raw[3 * k : 3 * k + 3]) for k in range(17)]
    for k, (_, _, v) in enumerate(kps):
        if v not in (0, 1, 2):
            raise ReviewRequestError(
                f"field 'keypoints': visibility of keypoint {k} ({COCO_JOINTS[k]}) = {v!r}, "
                "expected 0, 1 or 2"
            )
    return etag, kps, rejected


def apply_edit(
    old: Mapping[str, Any],
    image: Mapping[str, Any],
    keypoints: list[list[float]] | None,
    rejected: bool | None,
    has_3d: bool,
) -> tuple[dict[str, Any], list[int]]:
    """The annotation after a reviewer's edit, with its dependent fields recomputed (see the module docstring).

    Args:
        old: the stored annotation (not modified).
        image: its ``images[]`` record (for width and height).
        keypoints: (17, 3) nested lists x, y px, v; None keeps the stored keypoints.
        rejected: True rejects the person, False accepts it, None keeps the stored status (default "accepted").
        has_3d: whether the frame has joint_3d (then joints_2d_h36m is kept and ``needs_refit`` set on change).

    Returns:
        (new annotation, sorted COCO indices whose x, y or v changed).

    Raises:
        ReviewRequestError: a changed labelled keypoint lies outside the image, or the stored keypoints are not
            51 finite numbers.
    """
    new = copy.deepcopy(dict(old))
    old_kp = _as_kp(old.get("keypoints"))
    changed: list[int] = []
    if keypoints is not None:
        stored = old.get("keypoints")
        if stored is not None and not (
            isinstance(stored, list) and len(stored) == 51 and all(map(is_finite_number, stored))
        ):
            raise ReviewRequestError(
                f"annotation id {old.get('id')}: the stored field 'keypoints' is not 51 finite "
                "numbers, so an edit cannot be merged; fix the file first (`p2m annotate "
                "validate` names the problem)"
            )
        if old_kp is None:
            old_kp = np.zeros((17, 3))
        width, height = image.get("width"), image.get("height")
        flat = list(old.get("keypoints") or [0] * 51)
        for k, (x, y, v) in enumerate(keypoints):
            v = int(v)
            ox, oy, ov = old_kp[k]
            if int(ov) == v and (v == 0 or (abs(x - ox) <= _MOVE_EPS_PX and abs(y - oy) <= _MOVE_EPS_PX)):
                continue
            x, y = (round(float(x), 2), round(float(y), 2)) if v > 0 else (0, 0)
            if (
                v > 0
                and isinstance(width, (int, float))
                and isinstance(height, (int, float))
                and not (0 <= x <= width and 0 <= y <= height)
            ):
                raise ReviewRequestError(
                    f"field 'keypoints': keypoint {k} ({COCO_JOINTS[k]}) at ({x}, {y}) is "
                    f"outside the {width}x{height} image"
                )
            flat[3 * k : 3 * k + 3] = [x, y, v]
            changed.append(k)
        if changed:
            new["keypoints"] = flat
            new_kp = _as_kp(flat)
            new["num_keypoints"] = int((new_kp[:, 2] > 0).sum())
            _update_bbox(new, old_kp, new_kp, image)
            if not has_3d:
                _update_h36m(new, new_kp, set(changed))
    review = dict(old.get(REVIEW_FIELD)) if isinstance(old.get(REVIEW_FIELD), Mapping) else {}
    if rejected is not None:
        review["status"] = "rejected" if rejected else "accepted"
    review.setdefault("status", "accepted")
    if changed:
        review["edited_keypoints"] = sorted(set(review.get("edited_keypoints", [])) | set(changed))
        if has_3d:
            review["needs_refit"] = True
    review["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    new[REVIEW_FIELD] = review
    return new, changed


def _as_kp(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value, dtype=np.float64).reshape(17, 3)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        return None


def _update_bbox(
    ann: dict[str, Any], old_kp: np.ndarray, new_kp: np.ndarray, image: Mapping[str, Any]
) -> None:
    bbox = _as_box(ann.get("bbox"))
    if bbox is None or not (new_kp[:, 2] > 0).any():
        return
    derived = False
    if (old_kp[:, 2] > 0).any():
        size = (image.get("width"), image.get("height"))
        for clip in (None, size if all(is_finite_number(s) for s in size) else None):
            if np.allclose(bbox_from_joints(old_kp, image_size=clip), bbox, atol=0.01):
                derived, new_box = True, bbox_from_joints(new_kp, image_size=clip)
                break
    if not derived:
        pts = new_kp[new_kp[:, 2] > 0, :2]
        x0, y0 = np.minimum(pts.min(0), bbox[:2])
        x1, y1 = np.maximum(pts.max(0), bbox[:2] + bbox[2:])
        new_box = [x0, y0, x1 - x0, y1 - y0]
    new_box = [round(float(b), 2) for b in new_box]
    if np.allclose(new_box, bbox, atol=0.005):
        return
    area = ann.get("area")
    if isinstance(area, (int, float)) and math.isclose(area, bbox[2] * bbox[3], rel_tol=1e-4, abs_tol=0.01):
        ann["area"] = round(new_box[2] * new_box[3], 2)
    ann["bbox"] = new_box


def _as_box(value: Any) -> np.ndarray | None:
    try:
        box = np.asarray(value, dtype=np.float64).reshape(4)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        return None
    return box if np.all(np.isfinite(box)) else None


def _update_h36m(ann: dict[str, Any], kp: np.ndarray, changed: set[int]) -> None:
    try:
        j2d = np.asarray(ann.get("joints_2d_h36m"), dtype=np.float64).reshape(17, 3).tolist()
    except (TypeError, ValueError, OverflowError):
        return
    derived = coco_to_h36m(kp)
    for h, parents in COCO_TO_H36M_PARENTS.items():
        if changed.intersection(parents):
            x, y, v = derived[h]
            j2d[h] = [round(float(x), 3), round(float(y), 3), float(v)]
    stored = ann["joints_2d_h36m"]
    if isinstance(stored, list) and len(stored) == 17 and all(isinstance(r, list) for r in stored):
        j2d = [
            stored[i] if j2d[i] == stored[i] else j2d[i] for i in range(17)
        ]  # untouched rows stay as stored
    ann["joints_2d_h36m"] = j2d
