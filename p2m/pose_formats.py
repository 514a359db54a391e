"""2D keypoint files other tools write (OpenPose, MMPose), read as COCO-17 people: shared by infer and import.

* **OpenPose** (``--write_json``): ``{"version": ..., "people": [{"pose_keypoints_2d": [x, y, c, ...], ...}]}``,
  one file per image. BODY_25 (25 x 3 numbers) and the older COCO-18 model (18 x 3) are mapped to COCO-17 by
  name (BODY_25's Neck, MidHip, heels and toes have no COCO joint). A missing OpenPose joint is ``0, 0, 0``.
* **MMPose** predictions: a list of instances ``{"keypoints": [[x, y], ...], "keypoint_scores": [...],
  "bbox": ..., "bbox_score": ...}`` (``MMPoseInferencer``'s ``pred_out_dir``), or the demos' ``{"meta_info":
  ..., "instance_info": [...]}`` whose list holds instances (an image) or ``{"frame_id", "instances"}`` (a video).
  17 keypoints are COCO-17; the COCO-WholeBody (133) and Halpe (26/136) layouts start with the same 17.

Scores become COCO visibility the way `p2m annotate detect` does it: ``v = 2`` at ``score >= VISIBLE_SCORE``,
``v = 1`` at ``LABELLED_SCORE <= score < VISIBLE_SCORE``, else ``v = 0`` (x = y = 0); the raw scores are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from p2m.errors import P2MError

#: Keypoint score at or above which a keypoint is visible (v = 2).
VISIBLE_SCORE = 0.5
#: Keypoint score at or above which a keypoint is labelled (v = 1); below it v = 0.
LABELLED_SCORE = 0.2

#: COCO-17 joint k = OpenPose BODY_25 joint BODY25_TO_COCO[k] (nose, eyes, ears, shoulders... ankles).
BODY25_TO_COCO: tuple[int, ...] = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
#: COCO-17 joint k = OpenPose COCO-18 joint OPENPOSE18_TO_COCO[k] (OpenPose's COCO model adds a Neck at 1).
OPENPOSE18_TO_COCO: tuple[int, ...] = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
#: MMPose keypoint counts whose first 17 keypoints are COCO-17: COCO, Halpe-26, COCO-WholeBody-133, Halpe-136.
MMPOSE_COCO_PREFIXED = (17, 26, 133, 136)
FORMATS = ("openpose", "mmpose")


@dataclass
class Person2D:
    """One person of a keypoint file.

    Attributes:
        keypoints: (17, 3) COCO-17 px + v in {0, 1, 2} (x = y = 0 where v = 0).
        scores: (17,) the tool's confidences.
        bbox: [x, y, w, h] px when the file gives one, else None.
        score: the person's score (MMPose's ``bbox_score``, else the mean keypoint score).
        where: the record, for messages (``file: people[2]``).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    bbox: list[float] | None
    score: float
    where: str


def sniff_format(data: Any) -> str | None:
    """ "openpose", "mmpose" or None for a parsed JSON value."""
    if isinstance(data, dict) and isinstance(data.get("people"), list):
        return "openpose"
    if isinstance(data, dict) and isinstance(data.get("instance_info"), list):
        return "mmpose"
    if (
        isinstance(data, list)
        and data
        and all(isinstance(d, dict) for d in data)
        and "keypoint_scores" in data[0]
        and "keypoints" in data[0]
    ):
        return "mmpose"
    return None


def read_people(data: Any, where: str, fmt: str | None = None) -> list[Person2D]:
    """All people of an OpenPose or MMPose JSON value.

    Args:
        data: the parsed JSON.
        where: the file, for messages.
        fmt: "openpose", "mmpose" or None to recognise it (:func:`sniff_format`).

    Raises:
        P2MError: not one of the formats, or a record with a wrong field (the message names file, record, field).
    """
    fmt = fmt or sniff_format(data)
    if fmt == "openpose":
        return _openpose(data, where)
    if fmt == "mmpose":
        return _mmpose(data, where)
    raise P2MError(
        f"{where}: neither OpenPose JSON (an object with 'people') nor MMPose predictions (a list of instances "
        f"with 'keypoints' and 'keypoint_scores', or an object with 'instance_info')"
    )


def coco_from_scores(xy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(17, 2) px and (17,) scores -> (17, 3) COCO keypoints with v in {0, 1, 2} (module docstring)."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    ok = np.isfinite(xy).all(axis=1)
    v = np.where(s >= VISIBLE_SCORE, 2, np.where(s >= LABELLED_SCORE, 1, 0)) * ok
    kp = np.zeros((17, 3))
    kp[:, :2] = np.where((v > 0)[:, None], np.nan_to_num(xy), 0.0)
    kp[:, 2] = v
    return kp


def _openpose(data: dict[str, Any], where: str) -> list[Person2D]:
    out = []
    for i, person in enumerate(data["people"]):
        at = f"{where}: people[{i}]"
        values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        arr = _numbers(values, at, "pose_keypoints_2d")
        if arr.size == 75:
            table = BODY25_TO_COCO
        elif arr.size == 54:
            table = OPENPOSE18_TO_COCO
        else:
            raise P2MError(
                f"{at}: field 'pose_keypoints_2d' has {arr.size} numbers, expected 75 (BODY_25) "
                f"or 54 (COCO-18): x, y, confidence per joint"
            )
        joints = arr.reshape(-1, 3)[list(table)]
        scores = joints[:, 2].copy()
        out.append(Person2D(coco_from_scores(joints[:, :2], scores), scores, None, float(scores.mean()), at))
    return out


def _mmpose(data: Any, where: str) -> list[Person2D]:
    instances: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for i, item in enumerate(data["instance_info"]):
            if isinstance(item, dict) and isinstance(
                item.get("instances"), list
            ):  # a video: one entry per frame
                frame = item.get("frame_id", i)
                instances += [
                    (f"frame_id {frame} instances[{k}]", x) for k, x in enumerate(item["instances"])
                ]
            else:
                instances.append((f"instance_info[{i}]", item))
    else:
        instances = [(f"[{i}]", x) for i, x in enumerate(data)]
    out = []
    for name, inst in instances:
        at = f"{where}: {name}"
        if not isinstance(inst, dict):
            raise P2MError(f"{at}: is a {type(inst).__name__}, expected an instance object")
        kp = _numbers(inst.get("keypoints"), at, "keypoints")
        n = kp.size // 2 if kp.ndim != 2 else kp.shape[0]
        if kp.size != 2 * n or n not in MMPOSE_COCO_PREFIXED:
            raise P2MError(
                f"{at}: field 'keypoints' has shape {kp.shape}, expected (K, 2) with K in "
                f"{list(MMPOSE_COCO_PREFIXED)} (COCO-17 first)"
            )
        xy = kp.reshape(n, 2)[:17]
        scores = _numbers(inst.get("keypoint_scores"), at, "keypoint_scores").reshape(-1)
        if scores.size != n:
            raise P2MError(f"{at}: field 'keypoint_scores' has {scores.size} values for {n} keypoints")
        scores = scores[:17]
        bbox = _bbox(inst.get("bbox"), at)
        score = inst.get("bbox_score")
        score = (
            float(np.asarray(score, dtype=np.float64).reshape(-1)[0])
            if score is not None
            else float(scores.mean())
        )
        out.append(Person2D(coco_from_scores(xy, scores), scores, bbox, score, at))
    return out


def _bbox(value: Any, at: str) -> list[float] | None:
    """MMPose writes ``[x1, y1, x2, y2]`` (or ``[[x1, y1, x2, y2]]``); -> ``[x, y, w, h]``."""
    if value is None:
        return None
    b = _numbers(value, at, "bbox").reshape(-1)
    if b.size != 4:
        raise P2MError(f"{at}: field 'bbox' has {b.size} numbers, expected [x1, y1, x2, y2]")
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def _numbers(value: Any, at: str, field: str) -> np.ndarray:
    if not isinstance(value, list):
        raise P2MError(
            f"{at}: field {field!r} is {'missing' if value is None else type(value).__name__}, "
            f"expected a list of numbers"
        )
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise P2MError(f"{at}: field {field!r} is not a numeric array ({exc})") from exc
    return arr


__all__ = [
    "BODY25_TO_COCO",
    "FORMATS",
    "OPENPOSE18_TO_COCO",
    "Person2D",
    "coco_from_scores",
    "read_people",
    "sniff_format",
]
