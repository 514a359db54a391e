"""`p2m infer` input: read a 2D pose from JSON / .npy (COCO-17 or H36M-17), pick a person, convert joint sets.

Accepted files (``read_pose2d``):

* ``.npy``: (17, 2) pixels, (17, 3) pixels + visibility, or (P, 17, C) people (``person`` picks one);
* ``.json``: a plain list (17 x 2, 17 x 3, 34 or 51 numbers, or a list of people); a single annotation dict
  (``keypoints``: COCO-17, 51 numbers; ``joints_2d_h36m``: H36M-17 x 3; or ``joints`` / ``pose2d`` with an
  optional ``joint_set``); a COCO results list (dicts with ``keypoints``); or a whole Contract 1 ``data.json`` from
  ``p2m annotate detect`` / ``import`` / ``synth`` (``person`` = index in ``annotations``, or ``annotation_id``).
  A data.json also names the photo (``DATASET/images/<file_name>``) and its camera (``*_camera.json``).
  OpenPose JSON (``people[].pose_keypoints_2d``, BODY_25 or COCO-18) and MMPose predictions (instances with
  ``keypoints`` + ``keypoint_scores``, or ``instance_info``) are read as COCO-17 by :mod:`p2m.pose_formats`.

Visibility: a joint with v <= 0 or a non-finite coordinate is *missing*; (J, 2) input has every joint visible.

Joint sets are converted once, here, at the boundary (DESIGN.md): COCO-17 -> H36M-17 by
:func:`p2m.joints.coco_to_h36m` (Pelvis, Neck and Torso are means of hips/shoulders, exactly as the anny H36M
regressor defines them), plus the **Head** (top of head), which COCO does not have. We fill it from the face
keypoints with a linear rule fitted by least squares on 4,000 synthetic anny people (`p2m synth`, CMU poses,
H3.6M cameras; ``benchmarks/bench_infer_head.py`` re-measures it), in units of the neck -> ear-midpoint vector:

* ears and nose labelled: ``Head = Neck + 1.68 (Ears - Neck) + 0.28 (Nose - Ears)``: mean error 5.6 % of the
  torso length (Pelvis-Neck) on 2,000 held-out people (CMU eval poses), 6.3 % with keypoint noise of 5 % of the
  neck-ears distance; "Head = ear midpoint" is off by 24 %;
* ears only: ``Head = Neck + 1.62 (Ears - Neck)`` (6.2 % on the fitting set);
* otherwise Head stays missing and :mod:`p2m.infer.api` fills it like any other missing joint.

Rules that also use the eyes fit clean synthetic data better (1 %) but multiply keypoint noise by 4 (20 % error at
10 % noise), so they are not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p2m import joints as J
from p2m.errors import P2MError
from p2m.io import read_json
from p2m.pose_formats import read_people, sniff_format

logger = logging.getLogger(__name__)

#: Input joint sets ``--joint-set`` accepts (besides "auto").
INPUT_JOINT_SETS = ("coco", "h36m")
#: Head rule coefficients (see the module docstring).
HEAD_FROM_EARS_NOSE = (1.68, 0.28)
HEAD_FROM_EARS = 1.62

_GENERIC_KEYS = ("joints_2d", "pose2d", "joints", "keypoints_2d")


@dataclass
class Pose2DInput:
    """One person's 2D joints as read from a file.

    Attributes:
        joints: (17, 3) pixels + visibility (v <= 0: missing) in ``joint_set`` order.
        joint_set: "coco" or "h36m".
        source: where they came from, for messages (``file`` or ``file: annotation id 3``).
        path: the file read.
        person: index of the person in the file (None when the file holds one).
        annotation_id: the data.json annotation id, when there is one.
        image_path: the photo the file names (a data.json's ``images/<file_name>``), when it exists.
        image_size: (W, H) the file states for the photo, if any.
        focal: (fx, fy) px of the photo's camera (a data.json's camera file), if known.
        principal: (cx, cy) px of that camera.
        notes: how the joint set was decided and the like (for the summary).
    """

    joints: np.ndarray
    joint_set: str
    source: str
    path: Path
    person: int | None = None
    annotation_id: int | None = None
    image_path: Path | None = None
    image_size: tuple[int, int] | None = None
    focal: tuple[float, float] | None = None
    principal: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ reading


def read_pose2d(
    path: str | Path,
    joint_set: str = "auto",
    person: int | None = None,
    annotation_id: int | None = None,
    model_joint_set: str = "h36m",
) -> Pose2DInput:
    """Read one person's 2D pose from a JSON or .npy file (module docstring lists the forms).

    Args:
        path: the file.
        joint_set: "auto", "coco" or "h36m": how to read the joints (for an annotation dict, which field).
        person: 0-based index of the person (data.json annotations, a list of people, a (P, 17, C) array).
        annotation_id: a data.json annotation ``id`` (instead of ``person``).
        model_joint_set: the model's joint set ("h36m" or "coco19"); with "auto", an annotation dict is read from
            the field that suits it (``joints_2d_h36m`` when all its 17 joints are labelled and the model is H36M,
            else ``keypoints``).

    Raises:
        P2MError: missing or unreadable file, an unknown joint set, a wrong shape, no such person; the message
            names the file and the field.
    """
    p = Path(path)
    if joint_set not in ("auto", *INPUT_JOINT_SETS):
        raise P2MError(f"joint set {joint_set!r}: expected one of {['auto', *INPUT_JOINT_SETS]}")
    if not p.is_file():
        raise P2MError(f"{p}: no such 2D pose file (expected a .json or .npy file)")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            data: Any = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise P2MError(f"{p}: cannot read the .npy file: {exc}") from exc
    elif suffix == ".json":
        data = read_json(p)
    else:
        raise P2MError(f"{p}: unknown file type {p.suffix!r}; expected a .json or .npy 2D pose file")
    fmt = sniff_format(data) if suffix == ".json" else None
    if fmt is not None:  # OpenPose / MMPose output: COCO-17 people (p2m.pose_formats)
        people = read_people(data, str(p), fmt)
        idx = _pick_index(p, len(people), person, "people")
        return Pose2DInput(
            people[idx].keypoints, "coco", people[idx].where, p, person=idx, notes=[f"{fmt} JSON"]
        )
    if annotation_id is not None and not (isinstance(data, dict) and "annotations" in data):
        raise P2MError(f"{p}: an annotation id ({annotation_id}) needs a data.json with 'annotations'")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        return _from_data_json(p, data, joint_set, person, annotation_id, model_joint_set)
    if isinstance(data, dict):
        if person not in (None, 0):
            raise P2MError(f"{p}: holds one person (an annotation object); --person {person} does not exist")
        return _from_record(p, data, str(p), joint_set, model_joint_set)
    if (
        isinstance(data, list) and data and all(isinstance(d, dict) for d in data)
    ):  # COCO results / people list
        idx = _pick_index(p, len(data), person, "people")
        return _from_record(p, data[idx], f"{p}: person {idx}", joint_set, model_joint_set, person=idx)
    arr = _as_array(data, str(p), "the array" if suffix == ".npy" else "the list")
    arr, idx = _person_of_array(arr, p, person)
    joints = _shape_joints(arr, str(p), "the array" if suffix == ".npy" else "the list")
    name, note = _decide_joint_set(joints, joint_set, str(p))
    return Pose2DInput(joints, name, str(p), p, person=idx, notes=[note])


def _pick_index(p: Path, count: int, person: int | None, what: str) -> int:
    idx = 0 if person is None else int(person)
    if count == 0:
        raise P2MError(f"{p}: holds no {what}")
    if not 0 <= idx < count:
        raise P2MError(f"{p}: --person {idx} is out of range; the file holds {count} {what} (0..{count - 1})")
    if person is None and count > 1:
        logger.info("%s holds %d %s; using person 0 (choose with --person)", p, count, what)
    return idx


def _as_array(value: Any, where: str, field_name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise P2MError(f"{where}: {field_name} is not a numeric array ({exc})") from exc
    return arr


def _person_of_array(arr: np.ndarray, p: Path, person: int | None) -> tuple[np.ndarray, int | None]:
    if arr.ndim == 3 or (arr.ndim == 2 and arr.shape[1] in (34, 51)):
        idx = _pick_index(p, arr.shape[0], person, "people")
        return arr[idx], idx
    if person not in (None, 0):
        raise P2MError(f"{p}: holds one person (shape {arr.shape}); --person {person} does not exist")
    return arr, None


def _shape_joints(arr: np.ndarray, where: str, field_name: str) -> np.ndarray:
    """(17, 2) / (17, 3) / 34 / 51 numbers -> (17, 3) with visibility (1 where none was given)."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 1 and a.size in (34, 51):
        a = a.reshape(17, a.size // 17)
    if a.ndim != 2 or a.shape[0] != 17 or a.shape[1] not in (2, 3):
        raise P2MError(
            f"{where}: {field_name} has shape {a.shape}, expected (17, 2) pixels or (17, 3) pixels + visibility "
            "(or 34 / 51 numbers; several people as (P, 17, C) with --person)"
        )
    if a.shape[1] == 2:
        a = np.concatenate([a, np.ones((17, 1))], axis=1)
    return a


def _from_record(
    p: Path, rec: dict[str, Any], where: str, joint_set: str, model_joint_set: str, person: int | None = None
) -> Pose2DInput:
    """An annotation-like dict: ``keypoints`` (COCO), ``joints_2d_h36m`` (H36M) or a generic field."""
    ann_id = rec.get("id") if isinstance(rec.get("id"), int) else None
    has_coco, has_h36m = "keypoints" in rec, "joints_2d_h36m" in rec
    generic = next((k for k in _GENERIC_KEYS if k in rec), None)
    if not (has_coco or has_h36m or generic):
        raise P2MError(
            f"{where}: no 2D joints; expected a field 'keypoints' (COCO-17, 51 numbers), 'joints_2d_h36m' "
            f"(17 x 3) or one of {list(_GENERIC_KEYS)}; found {sorted(rec)[:12]}"
        )
    if generic and not (has_coco or has_h36m):
        joints = _shape_joints(
            _as_array(rec[generic], where, f"field {generic!r}"), where, f"field {generic!r}"
        )
        stated = rec.get("joint_set")
        if joint_set == "auto" and stated is not None:
            if stated not in INPUT_JOINT_SETS:
                raise P2MError(
                    f"{where}: field 'joint_set' = {stated!r}, expected one of {list(INPUT_JOINT_SETS)}"
                )
            joint_set = stated
        name, note = _decide_joint_set(joints, joint_set, where)
        return Pose2DInput(joints, name, where, p, person=person, annotation_id=ann_id, notes=[note])
    h36m = None
    if has_h36m:
        h36m = _shape_joints(
            _as_array(rec["joints_2d_h36m"], where, "field 'joints_2d_h36m'"), where, "field 'joints_2d_h36m'"
        )
    if joint_set == "h36m" or (joint_set == "auto" and not has_coco):
        if h36m is None:
            raise P2MError(f"{where}: --joint-set h36m but the record has no field 'joints_2d_h36m'")
        return Pose2DInput(
            h36m, "h36m", where, p, person=person, annotation_id=ann_id, notes=["field joints_2d_h36m"]
        )
    if joint_set == "auto" and h36m is not None and model_joint_set == "h36m" and (h36m[:, 2] > 0).all():
        return Pose2DInput(
            h36m,
            "h36m",
            where,
            p,
            person=person,
            annotation_id=ann_id,
            notes=["field joints_2d_h36m (all 17 labelled)"],
        )
    if not has_coco:
        raise P2MError(f"{where}: --joint-set coco but the record has no field 'keypoints'")
    kp = _shape_joints(_as_array(rec["keypoints"], where, "field 'keypoints'"), where, "field 'keypoints'")
    return Pose2DInput(kp, "coco", where, p, person=person, annotation_id=ann_id, notes=["field keypoints"])


def _from_data_json(
    p: Path,
    data: dict[str, Any],
    joint_set: str,
    person: int | None,
    annotation_id: int | None,
    model_joint_set: str,
) -> Pose2DInput:
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    if annotation_id is not None:
        found = [i for i, a in enumerate(anns) if a.get("id") == annotation_id]
        if not found:
            ids = [a.get("id") for a in anns][:20]
            raise P2MError(
                f"{p}: no annotation with id {annotation_id} (ids: {ids}{' ...' if len(anns) > 20 else ''})"
            )
        idx = found[0]
    else:
        idx = _pick_index(p, len(anns), person, "annotations")
    ann = anns[idx]
    where = f"{p}: annotation id {ann.get('id')}"
    out = _from_record(p, ann, where, joint_set, model_joint_set, person=idx)
    images = {im.get("id"): im for im in data.get("images", []) if isinstance(im, dict)}
    img = images.get(ann.get("image_id"))
    if img is not None:
        if isinstance(img.get("width"), int) and isinstance(img.get("height"), int):
            out.image_size = (img["width"], img["height"])
        fname = img.get("file_name")
        root = p.parent.parent if p.parent.name == "annotations" else p.parent
        if isinstance(fname, str):
            cand = root / "images" / fname
            if cand.is_file():
                out.image_path = cand
            out.notes.append(f"image {fname}")
        _attach_camera(out, p, img)
    return out


def _attach_camera(out: Pose2DInput, data_path: Path, img: dict[str, Any]) -> None:
    """Read ``f`` and ``c`` of the image's camera from the sibling ``*_camera.json`` (if there is one)."""
    name = data_path.name
    if not name.endswith("_data.json"):
        return
    cam_path = data_path.with_name(name[: -len("_data.json")] + "_camera.json")
    if not cam_path.is_file() or "cam_idx" not in img:
        return
    try:
        cam = read_json(cam_path).get(str(img["cam_idx"]))
        f = np.asarray(cam["f"], dtype=np.float64).reshape(2)
        c = np.asarray(cam["c"], dtype=np.float64).reshape(2)
    except (P2MError, AttributeError, KeyError, TypeError, ValueError) as exc:
        logger.warning(
            "%s: camera %s unusable (%s); no perspective root estimate", cam_path, img["cam_idx"], exc
        )
        return
    out.focal, out.principal = (float(f[0]), float(f[1])), (float(c[0]), float(c[1]))


# ------------------------------------------------------------------------------------------------ joint sets


def _decide_joint_set(joints: np.ndarray, joint_set: str, where: str) -> tuple[str, str]:
    """Return (joint set, note) for a plain (17, 3) array; "auto" looks at the geometry (see guess_joint_set)."""
    if joint_set != "auto":
        return joint_set, f"joint set {joint_set} (given)"
    guess = guess_joint_set(joints)
    if guess is None:
        raise P2MError(
            f"{where}: cannot tell whether the 17 joints are COCO-17 or H36M-17 from their layout; "
            "pass --joint-set coco or --joint-set h36m"
        )
    return guess, f"joint set {guess} (recognised from the joint layout)"


def guess_joint_set(joints: np.ndarray) -> str | None:
    """COCO-17 or H36M-17 from the layout of (17, 2+) pixel joints; None when unclear.

    COCO's joints 1-4 (eyes, ears) lie around joint 0 (nose), within a head's size ("spread" < 0.2 of the visible
    joints' bounding-box diagonal); H36M's joints 1-4 are a hip, knee, ankle and the other hip, and its joint 0
    (Pelvis) is the hips' midpoint (within 0.01 of the diagonal: 0.001 on real Human3.6M frames, 0 on p2m data).
    On 4,000 synthetic people (both sets of each) it names none wrongly and leaves 0.3 % of the COCO and 0.6 % of
    the H36M poses undecided (those need ``--joint-set``); it recognises the real COCO and Human3.6M fixtures.
    """
    a = np.asarray(joints, dtype=np.float64)
    vis = np.isfinite(a[:, :2]).all(axis=1) & ((a[:, 2] > 0) if a.shape[1] > 2 else True)
    near = [j for j in (1, 2, 3, 4) if vis[j]]
    if vis.sum() < 5 or not vis[0] or len(near) < 2:
        return None
    pts = a[vis, :2]
    diag = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
    if diag <= 0:
        return None
    spread = max(np.linalg.norm(a[j, :2] - a[0, :2]) for j in near) / diag
    if not (vis[1] and vis[4]):
        return "coco" if spread < 0.2 else "h36m" if spread > 0.3 else None
    pelvis_off = np.linalg.norm(a[0, :2] - (a[1, :2] + a[4, :2]) / 2) / diag
    coco_like, h36m_like = spread < 0.2, pelvis_off < 0.01
    if coco_like != h36m_like:
        return "coco" if coco_like else "h36m"
    return None


def head_top_from_coco(kp: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """H36M "Head" (top of head) (2,) from COCO-17 keypoints (17, 3), and the rule used (module docstring)."""
    k = np.asarray(kp, dtype=np.float64)
    ok = (k[:, 2] > 0) & np.isfinite(k[:, :2]).all(axis=1)
    if not (ok[5] and ok[6] and ok[3] and ok[4]):
        return None, None
    neck = (k[5, :2] + k[6, :2]) / 2
    ears = (k[3, :2] + k[4, :2]) / 2
    if ok[0]:
        a, b = HEAD_FROM_EARS_NOSE
        return neck + a * (ears - neck) + b * (k[0, :2] - ears), "ears+nose"
    return neck + HEAD_FROM_EARS * (ears - neck), "ears"


def to_model_joints(inp: Pose2DInput, model_joint_set: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Convert the input joints to the model's joint set.

    Args:
        inp: the input (COCO-17 or H36M-17).
        model_joint_set: "h36m" or "coco19".

    Returns:
        (J, 2) pixels (missing joints are NaN), (J,) bool which joints are known, and notes on the conversion.
    """
    src = np.asarray(inp.joints, dtype=np.float64).copy()
    bad = ~np.isfinite(src[:, :2]).all(axis=1) | ~np.isfinite(src[:, 2])
    src[bad, 2] = 0.0
    src[bad, :2] = 0.0
    notes: list[str] = []
    if model_joint_set == "h36m":
        if inp.joint_set == "h36m":
            out = src
        else:
            out = J.coco_to_h36m(src)
            head, rule = head_top_from_coco(src)
            if head is not None:
                out[10, :2], out[10, 2] = head, 1.0
                notes.append(f"Head from the {rule} rule")
            notes.append("COCO-17 -> H36M-17")
    elif model_joint_set == "coco19":
        if inp.joint_set == "coco":
            out = J.coco_to_coco19(src)
        else:
            coco = np.zeros((17, 3))
            for h36m_idx, parents in J.COCO_TO_H36M_PARENTS.items():
                if len(parents) == 1:
                    coco[parents[0]] = src[h36m_idx]
            out = J.coco_to_coco19(coco)
            notes.append("H36M-17 -> COCO-19 (eyes and ears missing)")
    else:
        raise P2MError(f"model joint set {model_joint_set!r}: expected 'h36m' or 'coco19'")
    known = out[:, 2] > 0
    xy = np.where(known[:, None], out[:, :2], np.nan)
    return xy, known, notes


__all__ = [
    "INPUT_JOINT_SETS",
    "Pose2DInput",
    "guess_joint_set",
    "head_top_from_coco",
    "read_pose2d",
    "to_model_joints",
]
