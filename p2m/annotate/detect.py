"""`p2m annotate detect`: 2D keypoints from MediaPipe Pose for a crawl output or a folder of photos, as a dataset.

Each image gets its own camera (``cam_idx``; R = I, t = 0, focal from EXIF or the default of
:mod:`p2m.annotate.photo`) and every person found in it becomes one single-photo frame of subject 1: an image
record of that file with its own ``frame_idx`` and exactly one person annotation, because joint_3d and
body_param hold one person per frame (Contract 1), so `p2m annotate fit` fits each person on their own. Such
records carry ``person_idx`` and ``people_in_image``; `p2m annotate export coco` joins them back into one image.
By default every person is searched (:mod:`p2m.annotate.multi_pose`); ``max_people=1`` runs MediaPipe's legacy
Pose solution, which finds the most prominent person only, and writes what detect always wrote.
Images without a person keep an image record with no annotation and are listed under ``detect.no_person`` in
``{name}_info.json``; unreadable images are logged, counted and listed under ``detect.unreadable``. Nothing is
dropped silently.

Keypoint visibility (COCO's v) comes from MediaPipe's per-landmark confidence ``s`` (``visibility``, times
``presence`` when the model sets it; mediapipe 0.10.21's Pose solution sets only ``visibility``):

- ``v = 2`` (visible) when ``s >= VISIBLE_SCORE`` (0.5) and the point lies inside the image;
- ``v = 1`` (labelled, maybe occluded) when ``LABELLED_SCORE <= s < VISIBLE_SCORE`` (0.2..0.5), inside;
- ``v = 0`` otherwise (low confidence, or outside the image); x = y = 0 then, as in COCO files.

The raw confidences go to the annotation's ``keypoint_scores`` and their mean to ``score``. Pixel coordinates
put pixel centres on integers (``u = x_norm * W - 0.5``), like :mod:`p2m.camera` and :mod:`p2m.render`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.annotate.photo import (
    IMAGE_SUFFIXES,
    ImageReadError,
    Photo,
    place_image,
    read_photo,
    single_photo_camera,
)
from p2m.camera import bbox_from_joints
from p2m.errors import P2MError
from p2m.io import read_json, write_json
from p2m.joints import MEDIAPIPE_NUM_LANDMARKS, coco_to_h36m, mediapipe_to_coco
from p2m.layout import IMAGES_DIR, DatasetWriter, info_file, subject_file

logger = logging.getLogger(__name__)

#: Landmark confidence at or above which a keypoint is visible (v = 2).
VISIBLE_SCORE = 0.5
#: Landmark confidence at or above which a keypoint is labelled (v = 1); below it v = 0.
LABELLED_SCORE = 0.2
#: Default least person score (mean confidence of the 17 COCO keypoints) for a detection to count as a person.
MIN_PERSON_SCORE = 0.3
#: Least number of keypoints with v > 0 for a detection to count as a person.
MIN_KEYPOINTS = 3
#: Relative margin around the keypoints for the bbox (see :func:`p2m.camera.bbox_from_joints`).
BBOX_MARGIN = 0.1
#: Images decoded ahead of the detector (in two threads); bounds memory for large photos.
DECODE_AHEAD = 8
SUBJECT = 1
ACTION_IDX = 1
SUBACTION_IDX = 1
MEDIAPIPE_INSTALL_HINT = "pip install 'p2m[detect]'  (mediapipe==0.10.21, which bundles the pose models)"


@dataclass
class SourceImage:
    """One image to annotate: its file, the name it gets under DATASET/images and what the crawl knew of it."""

    path: Path
    rel: str
    extra: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------------------------
class MediaPipePose:
    """MediaPipe Pose (the ``mp.solutions`` API of mediapipe 0.10.21) on still images; a context manager.

    Args:
        model_complexity: 0 (lite), 1 (full) or 2 (heavy). Only 1 ships inside the 0.10.21 wheel; 0 and 2 try to
            download their model unless it was copied in.
    """

    def __init__(self, model_complexity: int = 1) -> None:
        mp = self.check_installed()
        self.version = getattr(mp, "__version__", "?")
        self.model_complexity = int(model_complexity)
        self.description = f"mediapipe {self.version} pose, model_complexity {self.model_complexity}"
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=self.model_complexity)

    @staticmethod
    def check_installed() -> Any:
        """Import mediapipe (the pinned version, with ``mp.solutions``) or say how to install it."""
        from p2m.paths import configure_third_party_caches

        configure_third_party_caches()  # mediapipe imports matplotlib, whose cache must not go to $HOME
        try:
            import mediapipe as mp
        except ImportError as exc:
            raise P2MError(f"`p2m annotate detect` needs MediaPipe: {MEDIAPIPE_INSTALL_HINT}") from exc
        if not hasattr(mp, "solutions"):
            raise P2MError(
                f"mediapipe {getattr(mp, '__version__', '?')} has no `mp.solutions` (dropped in 0.10.30); "
                f"{MEDIAPIPE_INSTALL_HINT}"
            )
        return mp

    def __enter__(self) -> MediaPipePose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the graph."""
        self._pose.close()

    def people(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The one person found, as a list (the interface of :class:`p2m.annotate.multi_pose.MediaPipeMultiPose`)."""
        found = self(rgb)
        return [] if found is None else [found]

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """Find one person.

        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            (33, 3) float64 landmarks: x, y in px (pixel centres on integers) and confidence in [0, 1]; None when
            no person is found.
        """
        result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return None
        h, w = rgb.shape[:2]
        out = np.empty((MEDIAPIPE_NUM_LANDMARKS, 3))
        for i, lm in enumerate(result.pose_landmarks.landmark):
            score = lm.visibility * (lm.presence if lm.HasField("presence") else 1.0)
            out[i] = (lm.x * w - 0.5, lm.y * h - 0.5, score)
        return out


def landmarks_to_coco(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's 33 landmarks -> COCO-17 keypoints with v in {0, 1, 2} (thresholds in the module docstring).

    Args:
        landmarks: (33, 3) x, y px and confidence.
        width, height: image size in px; points outside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` get v = 0.

    Returns:
        (keypoints (17, 3) float64 with v in {0, 1, 2} and x = y = 0 where v = 0, scores (17,) raw confidences).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (MEDIAPIPE_NUM_LANDMARKS, 3):
        raise ValueError(f"landmarks shape {lm.shape}, expected ({MEDIAPIPE_NUM_LANDMARKS}, 3)")
    coco = mediapipe_to_coco(lm)
    scores = coco[:, 2].copy()
    inside = (
        (coco[:, 0] >= -0.5) & (coco[:, 0] < width - 0.5) & (coco[:, 1] >= -0.5) & (coco[:, 1] < height - 0.5)
    )
    v = np.where(scores >= VISIBLE_SCORE, 2, np.where(scores >= LABELLED_SCORE, 1, 0)) * inside
    kp = np.zeros((17, 3))
    kp[:, :2] = coco[:, :2] * (v > 0)[:, None]
    kp[:, 2] = v
    return kp, scores


def person_annotation(landmarks: np.ndarray, width: int, height: int) -> tuple[dict[str, Any], float, int]:
    """The annotation record of a detected person (bbox from the landmarks, COCO and H36M keypoints).

    The bbox is the box of every landmark of confidence >= LABELLED_SCORE inside the image (all 33, so hands,
    heels and toes count), grown by ``BBOX_MARGIN`` on each side and clipped to the image.

    Returns:
        (annotation fields for :meth:`DatasetWriter.add_frame`, person score, number of keypoints with v > 0).
    """
    kp, scores = landmarks_to_coco(landmarks, width, height)
    lm = np.asarray(landmarks, dtype=np.float64)
    inside = (lm[:, 0] >= -0.5) & (lm[:, 0] < width - 0.5) & (lm[:, 1] >= -0.5) & (lm[:, 1] < height - 0.5)
    use = inside & (lm[:, 2] >= LABELLED_SCORE)
    points = lm[use, :2] if use.any() else kp[kp[:, 2] > 0, :2]
    bbox = (
        bbox_from_joints(points, margin=BBOX_MARGIN, image_size=(width, height)) if len(points) else [0.0] * 4
    )
    score = float(scores.mean())
    ann = {
        "bbox": [round(b, 2) for b in bbox],
        "keypoints": np.round(kp, 2),
        "joints_2d_h36m": np.round(coco_to_h36m(kp), 2),
        "score": round(score, 4),
        "keypoint_scores": [round(float(s), 4) for s in scores],
    }
    return ann, score, int((kp[:, 2] > 0).sum())


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------
def list_source(src: Path, stats: Counter, exclude: Path | None = None) -> list[SourceImage]:
    """The images of a crawl output (``manifest.parquet``) or of a plain folder (recursively, sorted).

    ``exclude``: a folder whose files are never listed (the output dataset, when it lies inside ``src``).
    """
    if not src.is_dir():
        raise P2MError(
            f"{src}: not a folder; expected a crawl output (with manifest.parquet) or a folder of images"
        )
    manifest = src / "manifest.parquet"
    if manifest.is_file():
        return _list_manifest(src, manifest, stats)
    out = []
    skip = exclude.resolve() if exclude is not None else None
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        rel = path.relative_to(src).as_posix()
        if rel.startswith(f"{IMAGES_DIR}/"):
            rel = rel[len(IMAGES_DIR) + 1 :]
        out.append(SourceImage(path, rel, {}))
    return out


def _list_manifest(src: Path, manifest: Path, stats: Counter) -> list[SourceImage]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(manifest).to_pylist()
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a broken file)
        raise P2MError(f"{manifest}: cannot read the crawl manifest ({type(exc).__name__}: {exc})") from exc
    for column in ("url", "status"):
        if rows and column not in rows[0]:
            raise P2MError(f"{manifest}: no {column!r} column; is this a p2m crawl manifest?")
    out, seen = [], set()
    for i, row in enumerate(rows):
        if row.get("kind") not in (None, "image"):
            continue
        status = row.get("status")
        if status != "ok":
            stats[f"manifest/skipped/{status}"] += 1
            continue
        rel = row.get("path") or ""
        if not rel:
            stats["manifest/skipped/no_path"] += 1
            logger.warning("%s: row %d (%s) has status ok but no path; skipped", manifest, i, row.get("url"))
            continue
        if rel in seen:
            stats["manifest/skipped/same_file"] += 1
            continue
        seen.add(rel)
        dest = rel[len(IMAGES_DIR) + 1 :] if rel.startswith(f"{IMAGES_DIR}/") else rel
        extra = {"source_url": row.get("url") or "", "license": row.get("license") or ""}
        if row.get("page_url"):
            extra["page_url"] = row["page_url"]
        if row.get("sha256"):
            extra["sha256"] = row["sha256"]
        out.append(SourceImage(src / rel, dest, extra))
    return out


def _read(item: SourceImage) -> Photo | ImageReadError:
    try:
        return read_photo(item.path)
    except ImageReadError as exc:
        return exc


def _decoded(items: Sequence[SourceImage], ahead: int = DECODE_AHEAD) -> Iterator[tuple[SourceImage, Any]]:
    """Yield (item, Photo or ImageReadError) in order, decoding up to ``ahead`` images in threads meanwhile."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        window: deque = deque()
        for item in items:
            window.append((item, pool.submit(_read, item)))
            if len(window) > ahead:
                done, fut = window.popleft()
                yield done, fut.result()
        while window:
            done, fut = window.popleft()
            yield done, fut.result()


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def detect_images(
    items: Sequence[SourceImage], images_dir: Path, detector: Any, min_score: float = MIN_PERSON_SCORE
) -> tuple[list[list[tuple[Any, dict[str, Any], list[dict[str, Any]]]] | str], Counter]:
    """Place and annotate a batch of images: the unit a local run and ``detect --ray`` workers share.

    Returns:
        Per item, in order, its frames (see :func:`_frames`, numbered from 0: the writer adds the next free
        index, in order) or the ``"path: reason"`` line of an unreadable image; and the batch's stats.
    """
    stats: Counter = Counter()
    out: list[list[tuple[Any, dict[str, Any], list[dict[str, Any]]]] | str] = []
    for item, photo in _decoded(items):
        if isinstance(photo, ImageReadError):
            logger.error("skipped: %s", photo)
            stats["images/unreadable"] += 1
            out.append(str(photo))
        else:
            out.append(_frames(item, photo, detector, images_dir, 0, min_score, stats))
    return out, stats


def detect(
    src: str | Path,
    out: str | Path,
    name: str = "photos",
    min_score: float = MIN_PERSON_SCORE,
    batch: int = 256,
    model_complexity: int = 1,
    progress: bool | None = None,
    max_people: int = 20,
    grid: int = 2,
    map_batches: Any = None,
) -> dict[str, Any]:
    """Detect 2D keypoints on every image of ``src`` and add them to the dataset ``out`` under ``name``.

    Images already recorded in ``out`` under ``name`` (same file name) are skipped, so a rerun after an
    interruption continues where the last written batch ended. Every ``batch`` images the dataset files are
    written (atomically, via :class:`DatasetWriter`), and the stats to ``out/detect_stats.json``.

    Args:
        src: a crawl output folder (``manifest.parquet`` + ``images/``; rows with status ``ok`` are used and
            carry ``source_url``, ``license``, ``page_url``) or any folder of images (searched recursively).
        out: the dataset folder (created if needed); images are hard-linked or copied to ``out/images``.
        name: dataset name (file prefix ``{name}_subject1_*``).
        min_score: least mean confidence of the 17 COCO keypoints for a detection to count as a person.
        batch: images per step: after each step the dataset files are written, so a rerun resumes there.
        model_complexity: MediaPipe Pose model, 1 (bundled) by default (``max_people=1`` only).
        progress: show a tqdm bar (None: only on a terminal).
        max_people: most people per image; 1 runs the legacy single-person solution.
        grid: largest tile grid of the multi-person search (1: whole image only; see ``multi_pose``).
        map_batches: ``(detector description, executor)`` to detect elsewhere (``p2m annotate detect --ray``):
            the executor yields ``(results, stats)`` of :func:`detect_images` per batch of images, in order.

    Returns:
        Stats with slash keys: ``images/total``, ``images/person``, ``people`` (annotations written), ``images/no_person``, ``images/unreadable``,
        ``images/already_done``, ``keypoints/visible`` (v = 2), ``keypoints/labelled`` (v = 1),
        ``camera/exif_35mm``, ``camera/default_diagonal``, ``manifest/skipped/<status>``, plus ``no_person`` and
        ``unreadable`` (lists of file names / "path: reason" lines) and ``seconds``.

    Raises:
        P2MError: ``src`` is not a folder, the manifest is unreadable, mediapipe is missing.
    """
    from contextlib import nullcontext

    from tqdm import tqdm

    if batch < 1:
        raise ValueError(f"batch {batch}, expected >= 1")
    t0 = time.monotonic()
    src, out = Path(src), Path(out)
    stats: Counter = Counter()
    items = list_source(src, stats, exclude=out)
    done, next_idx = _already_recorded(out, name)
    todo = [it for it in items if it.rel not in done]
    stats["images/total"] = len(items)
    stats["images/already_done"] = len(items) - len(todo)
    images_dir = out / IMAGES_DIR
    if max_people < 1:
        raise ValueError(f"max_people {max_people}, expected >= 1")
    batches = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    with (
        nullcontext() if map_batches else make_detector(max_people, grid, model_complexity) as detector,
        tqdm(
            total=len(todo), desc="detect", unit="img", disable=None if progress is None else not progress
        ) as bar,
    ):
        if map_batches:
            described, executor = map_batches
            results = executor(batches)
        else:
            described = detector.description
            results = (detect_images(b, images_dir, detector, min_score) for b in batches)
        for found, batch_stats in results:
            stats.update(batch_stats)
            bar.update(len(found))
            frames, no_person, unreadable = [], [], []
            for result in found:
                if isinstance(result, str):
                    unreadable.append(result)
                    continue
                for (
                    cam,
                    image,
                    anns,
                ) in result:  # numbered from 0 by the worker: cam_idx per image, frame per person
                    image["frame_idx"] += next_idx
                    image["cam_idx"] = next_idx
                    frames.append((cam, image, anns))
                if not result[0][2]:
                    no_person.append(result[0][1]["file_name"])
                next_idx += len(result)
            info = _merged_info(out, name, described, min_score, no_person, unreadable)
            with DatasetWriter(out, name, info=info) as writer:
                for cam, image, anns in frames:
                    writer.add_camera(SUBJECT, image["cam_idx"], cam)
                    writer.add_frame(SUBJECT, image, anns)
    result: dict[str, Any] = dict(sorted(stats.items()))
    info = read_json(info_file(out, name)) if info_file(out, name).exists() else {}
    result["no_person"] = info.get("detect", {}).get("no_person", [])
    result["unreadable"] = info.get("detect", {}).get("unreadable", [])
    result["seconds"] = round(time.monotonic() - t0, 3)
    write_json(out / "detect_stats.json", result, indent=1)
    logger.info(
        "detect: %d images, %d with a person, %d without, %d unreadable",
        len(todo),
        stats["images/person"],
        stats["images/no_person"],
        stats["images/unreadable"],
    )
    return result


def make_detector(max_people: int, grid: int, model_complexity: int) -> Any:
    """The detector :func:`detect` uses for these settings (a context manager with ``people`` and ``description``)."""
    if max_people == 1:
        return MediaPipePose(model_complexity)
    MediaPipePose.check_installed()
    from p2m.annotate.multi_pose import MediaPipeMultiPose

    return MediaPipeMultiPose(max_people=max_people, grid=grid)


def _frames(
    item: SourceImage,
    photo: Photo,
    detector: Any,
    images_dir: Path,
    idx: int,
    min_score: float,
    stats: Counter,
) -> list[tuple[Any, dict[str, Any], list[dict[str, Any]]]]:
    """Place one decoded image in the dataset and detect its people: (camera, image record, annotations) per
    person (one frame each, frame_idx = idx, idx + 1...), or one record without annotation when none is found."""
    rel = place_image(item.path, images_dir, item.rel, photo)
    cam, cam_source = single_photo_camera(photo.width, photo.height, photo.focal_35mm)
    stats[f"camera/{cam_source}"] += 1
    anns = []
    for landmarks in detector.people(photo.rgb):
        ann, score, n_kp = person_annotation(landmarks, photo.width, photo.height)
        if score >= min_score and n_kp >= MIN_KEYPOINTS:
            anns.append(ann)
            v = np.asarray(ann["keypoints"])[:, 2]
            stats["keypoints/visible"] += int((v == 2).sum())
            stats["keypoints/labelled"] += int((v == 1).sum())
        else:
            stats["detections/below_min_score"] += 1
    stats["images/person" if anns else "images/no_person"] += 1
    stats["people"] += len(anns)
    image = {
        "file_name": rel,
        "width": photo.width,
        "height": photo.height,
        "action_idx": ACTION_IDX,
        "subaction_idx": SUBACTION_IDX,
        "cam_idx": idx,
        "frame_idx": idx,
        "focal_source": cam_source,
        **item.extra,
    }
    if item.rel != rel:
        image["source_file"] = item.rel
    if len(anns) <= 1:
        return [(cam, image, anns)]
    return [
        (cam, {**image, "frame_idx": idx + k, "person_idx": k, "people_in_image": len(anns)}, [ann])
        for k, ann in enumerate(anns)
    ]


def _already_recorded(out: Path, name: str) -> tuple[set[str], int]:
    """File names already in ``name``'s subject file, and the next free cam_idx / frame_idx."""
    path = subject_file(out, name, SUBJECT, "data")
    if not path.exists():
        return set(), 1
    data = read_json(path)
    images = data.get("images", []) if isinstance(data, dict) else []
    names = {str(img.get("source_file", img.get("file_name"))) for img in images if isinstance(img, dict)}
    used = [
        int(img[k])
        for img in images
        if isinstance(img, dict)
        for k in ("cam_idx", "frame_idx")
        if isinstance(img.get(k), int)
    ]
    return names, max(used, default=0) + 1


def _merged_info(
    out: Path, name: str, detector: str, min_score: float, no_person: list[str], unreadable: list[str]
) -> dict[str, Any]:
    """The ``detect`` section of ``{name}_info.json``, with this batch's lists appended to the stored ones."""
    path = info_file(out, name)
    old = read_json(path) if path.exists() else {}
    section = old.get("detect", {}) if isinstance(old, dict) else {}
    return {
        "detect": {
            "detector": detector,
            "visibility": {"visible_score": VISIBLE_SCORE, "labelled_score": LABELLED_SCORE},
            "min_person_score": min_score,
            "min_keypoints": MIN_KEYPOINTS,
            "focal": "EXIF FocalLengthIn35mmFilm * diagonal / 43.27 mm, else the image diagonal (px)",
            "no_person": sorted(set(section.get("no_person", [])) | set(no_person)),
            "unreadable": sorted(set(section.get("unreadable", [])) | set(unreadable)),
        }
    }
