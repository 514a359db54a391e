"""Every person in a photo, offline: MediaPipe's PoseLandmarker (tasks API) over the whole image and over tiles.

The pinned mediapipe wheel ships the BlazePose detector and landmark models (``modules/pose_detection`` and
``modules/pose_landmark``) but no ``.task`` bundle, and its tflite files lack the input-normalisation metadata the
tasks API needs. :func:`landmarker_bundle` adds that metadata (detector input in [-1, 1], landmark input in [0, 1],
as the legacy graphs feed them) and zips both into ``pose_landmarker_full.task`` under the p2m cache, once.

BlazePose's detector sees the image at 224 x 224, so people under ~100 px tall are missed on a whole photo. The
detector therefore also runs on overlapping square tiles (a ``tiles`` x ``tiles`` grid for each grid size from 2 up,
half-tile stride); duplicates are dropped by box overlap, most confident first, and every person found on a tile
is re-landmarked alone on a square crop around them (so a person cut by a tile border gets all their landmarks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from p2m.errors import P2MError
from p2m.joints import MEDIAPIPE_NUM_LANDMARKS, MEDIAPIPE_TO_COCO

logger = logging.getLogger(__name__)

#: Confidence of a landmark for it to count in a person's box.
BOX_SCORE = 0.2
#: Boxes overlapping more than this (IoU, or intersection over the smaller box) are the same person.
SAME_PERSON_IOU = 0.5
SAME_PERSON_CONTAINED = 0.8
#: Side of the re-landmarking crop relative to the candidate's box.
CROP_SCALE = 1.4
#: Least box height (px) of a person; smaller landmark sets are noise.
MIN_PERSON_PX = 24
BUNDLE_FILES = {
    "pose_detector.tflite": ("pose_detection/pose_detection.tflite", 127.5, 127.5),
    "pose_landmarks_detector.tflite": ("pose_landmark/pose_landmark_full.tflite", 0.0, 255.0),
}


def landmarker_bundle(cache: Path | None = None) -> Path:
    """The ``.task`` bundle of the wheel's pose models, built into the p2m cache on first use.

    Raises:
        P2MError: mediapipe is missing or its wheel lacks the pose models.
    """
    import mediapipe as mp

    from p2m.io import atomic_write
    from p2m.paths import cache_dir

    version = getattr(mp, "__version__", "unknown")
    path = (cache or cache_dir() / "mediapipe") / f"pose_landmarker_full-{version}.task"
    if path.is_file():
        return path
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, model_asset_bundle_utils

    modules = Path(mp.__file__).parent / "modules"
    models = {}
    for name, (rel, mean, std) in BUNDLE_FILES.items():
        src = modules / rel
        if not src.is_file():
            raise P2MError(
                f"{src}: missing from the mediapipe {version} wheel; multi-person detection needs it"
            )
        buf = bytearray(src.read_bytes())
        writer = metadata_writer.MetadataWriter.create(buf).add_general_info(name.removesuffix(".tflite"))
        writer.add_image_input(norm_mean=[mean], norm_std=[std])
        for i in range(len(metadata_writer.writer_utils.get_output_tensor_types(buf))):
            writer.add_feature_output(name=f"output_{i}")
        models[name] = bytes(writer.populate()[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".zip")
    model_asset_bundle_utils.create_model_asset_bundle(models, str(tmp))
    with atomic_write(path, "wb") as fh:
        fh.write(tmp.read_bytes())
    tmp.unlink()
    logger.info("built %s from the mediapipe wheel's pose models", path)
    return path


def tiles(width: int, height: int, grid: int) -> Iterator[tuple[int, int, int, int]]:
    """(x0, y0, w, h) of the whole image, then of square tiles of side ``max(W, H) / g`` for g = 2..grid.

    Tiles overlap by about half a tile so that a person cut by one tile lies whole in a neighbour.
    """
    yield 0, 0, width, height
    for g in range(2, grid + 1):
        side = int(max(width, height) / g)
        xs = _starts(width, side)
        ys = _starts(height, side)
        for y0 in ys:
            for x0 in xs:
                yield x0, y0, min(side, width), min(side, height)


def _starts(length: int, side: int) -> list[int]:
    if length <= side:
        return [0]
    n = math.ceil((length - side) / (side / 2)) + 1
    return [round(i * (length - side) / (n - 1)) for i in range(n)]


def person_box(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """[x, y, w, h] of the confident landmarks (score >= BOX_SCORE) inside the image; zeros when none."""
    lm = np.asarray(landmarks)
    ok = (
        (lm[:, 2] >= BOX_SCORE) & (lm[:, 0] >= 0) & (lm[:, 1] >= 0) & (lm[:, 0] < width) & (lm[:, 1] < height)
    )
    if not ok.any():
        return np.zeros(4)
    lo, hi = lm[ok, :2].min(0), lm[ok, :2].max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def box_overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(IoU, intersection over the smaller area) of two [x, y, w, h] boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = a[2] * a[3], b[2] * b[3]
    union = area_a + area_b - inter
    return (inter / union if union > 0 else 0.0), (
        inter / min(area_a, area_b) if min(area_a, area_b) > 0 else 0.0
    )


def person_score(landmarks: np.ndarray) -> float:
    """Mean confidence of the 17 COCO keypoints (the ``score`` detect writes)."""
    return float(np.asarray(landmarks)[list(MEDIAPIPE_TO_COCO), 2].mean())


def suppress_duplicates(people: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """Keep the most confident of each group of overlapping people (and none smaller than MIN_PERSON_PX)."""
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for lm in sorted(people, key=person_score, reverse=True):
        box = person_box(lm, width, height)
        if box[3] < MIN_PERSON_PX:
            continue
        if all(
            iou < SAME_PERSON_IOU and contained < SAME_PERSON_CONTAINED
            for iou, contained in (box_overlap(box, other) for _, other in kept)
        ):
            kept.append((lm, box))
    return [lm for lm, _ in kept]


class MediaPipeMultiPose:
    """Up to ``max_people`` people per image with MediaPipe's PoseLandmarker; a context manager.

    Args:
        max_people: most people kept per image.
        grid: largest tile grid (1: the whole image only; 2: plus 2 x 2 half-overlapping tiles...).
        min_detection: the detector's least confidence (on the whole image and on tiles).
    """

    def __init__(self, max_people: int = 20, grid: int = 2, min_detection: float = 0.5) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        if max_people < 1 or grid < 1:
            raise ValueError(f"max_people {max_people}, grid {grid}: expected >= 1")
        bundle = str(landmarker_bundle())
        self.max_people, self.grid = int(max_people), int(grid)
        self.description = (
            f"mediapipe {getattr(mp, '__version__', '?')} PoseLandmarker (full), up to {max_people} people, "
            f"tile grid {grid}"
        )

        def make(num_poses: int, score: float) -> vision.PoseLandmarker:
            return vision.PoseLandmarker.create_from_options(
                vision.PoseLandmarkerOptions(
                    base_options=BaseOptions(model_asset_path=bundle),
                    running_mode=vision.RunningMode.IMAGE,
                    num_poses=num_poses,
                    min_pose_detection_confidence=score,
                    min_pose_presence_confidence=score,
                )
            )

        self._find = make(min(self.max_people, 10), min_detection)
        self._one = make(1, min_detection)

    def __enter__(self) -> MediaPipeMultiPose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release both graphs."""
        self._find.close()
        self._one.close()

    def _run(self, landmarker, rgb: np.ndarray, x0: int, y0: int) -> list[np.ndarray]:
        import mediapipe as mp

        h, w = rgb.shape[:2]
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        out = []
        for pose in result.pose_landmarks:
            lm = np.empty((MEDIAPIPE_NUM_LANDMARKS, 3))
            for i, p in enumerate(pose):
                presence = 1.0 if p.presence is None else p.presence
                lm[i] = (p.x * w + x0 - 0.5, p.y * h + y0 - 0.5, (p.visibility or 0.0) * presence)
            out.append(lm)
        return out

    def people(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Find every person.

        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            Per person, most confident first: (33, 3) float64 landmarks, x, y in px (pixel centres on integers)
            and confidence in [0, 1].
        """
        height, width = rgb.shape[:2]
        candidates, whole = [], set()
        for x0, y0, w, h in tiles(width, height, self.grid):
            found = self._run(self._find, rgb[y0 : y0 + h, x0 : x0 + w], x0, y0)
            if (w, h) == (width, height):
                whole.update(id(lm) for lm in found)
            candidates += found
        people = []
        for lm in suppress_duplicates(candidates, width, height):
            if id(lm) in whole:  # seen whole already: nothing was cut off
                people.append(lm)
                continue
            box = person_box(lm, width, height)
            side = max(box[2], box[3]) * CROP_SCALE
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
            again = self._run(self._one, rgb[y0:y1, x0:x1], x0, y0)
            people.append(again[0] if again else lm)
        return suppress_duplicates(people, width, height)[: self.max_people]
