"""OpenPose and MMPose keypoint files: read as COCO-17 by infer's input and by `p2m annotate import`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.cli import main
from p2m.errors import P2MError
from p2m.joints import COCO_JOINTS
from p2m.pose_formats import read_people, sniff_format

REPO = Path(__file__).resolve().parents[1]
COCO = REPO.parent / "shared" / "external-fixtures" / "mmpose-coco"
PHOTO = "000000197388.jpg"  # 5 annotated people

# OpenPose's documented BODY_25 output order (doc/02_output.md), written out by name.
BODY_25 = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
           "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe",
           "LHeel", "RBigToe", "RSmallToe", "RHeel")  # fmt: skip


def _op_name(coco_name: str) -> str:
    """COCO's "L_Shoulder" is OpenPose's "LShoulder"."""
    return coco_name.replace("_", "")


def _gt_people() -> list[np.ndarray]:
    if not COCO.is_dir():
        pytest.skip(f"shared COCO fixture absent: {COCO}")
    gt = json.loads((COCO / "test_coco.json").read_text())
    img = next(i for i in gt["images"] if i["file_name"] == PHOTO)
    anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] > 0]
    return [np.asarray(a["keypoints"], float).reshape(17, 3) for a in anns]


def _openpose_json(people: list[np.ndarray], conf: float = 0.8) -> dict:
    """What OpenPose --write_json writes for these COCO people: BODY_25 x, y, c (0, 0, 0 when not found)."""
    out = []
    for kp in people:
        body = np.zeros((25, 3))
        for k, name in enumerate(COCO_JOINTS):
            if kp[k, 2] > 0:
                body[BODY_25.index(_op_name(name))] = (kp[k, 0], kp[k, 1], conf)
        for joint, (a, b) in (("Neck", (5, 6)), ("MidHip", (11, 12))):
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                body[BODY_25.index(joint)] = (*(kp[a, :2] + kp[b, :2]) / 2, conf)
        out.append(
            {
                "person_id": [-1],
                "pose_keypoints_2d": body.reshape(-1).round(3).tolist(),
                "face_keypoints_2d": [],
                "hand_left_keypoints_2d": [],
                "hand_right_keypoints_2d": [],
            }
        )
    return {"version": 1.3, "people": out}


def _mmpose_instances(people: list[np.ndarray], k: int = 17) -> list[dict]:
    """MMPoseInferencer predictions: keypoints (K, 2), keypoint_scores (K,), bbox [[x1, y1, x2, y2]], bbox_score."""
    out = []
    for kp in people:
        xy = np.zeros((k, 2))
        xy[:17] = kp[:, :2]
        scores = np.full(k, 0.9)
        scores[:17] = np.where(kp[:, 2] > 0, 0.9, 0.05)
        lo, hi = kp[kp[:, 2] > 0, :2].min(0), kp[kp[:, 2] > 0, :2].max(0)
        out.append(
            {
                "keypoints": xy.tolist(),
                "keypoint_scores": scores.tolist(),
                "bbox": [[*lo.tolist(), *hi.tolist()]],
                "bbox_score": 0.97,
            }
        )
    return out


def _same_visible(found: np.ndarray, truth: np.ndarray) -> bool:
    vis = truth[:, 2] > 0
    return bool(
        (found[vis, 2] == 2).all()
        and (found[~vis, 2] == 0).all()
        and np.allclose(found[vis, :2], truth[vis, :2], atol=1e-3)
    )


def test_openpose_body25_maps_to_coco17_by_joint_name() -> None:
    truth = _gt_people()
    data = _openpose_json(truth)
    assert sniff_format(data) == "openpose"
    people = read_people(data, "op.json")
    assert len(people) == len(truth) == 5
    for found, want in zip(people, truth, strict=True):
        assert _same_visible(found.keypoints, want)
        assert found.bbox is None and 0 <= found.score <= 1


def test_openpose_coco18_and_low_confidence_joints() -> None:
    kp = _gt_people()[0]
    names18 = (
        "Nose",
        "Neck",
        "RShoulder",
        "RElbow",
        "RWrist",
        "LShoulder",
        "LElbow",
        "LWrist",
        "RHip",
        "RKnee",
        "RAnkle",
        "LHip",
        "LKnee",
        "LAnkle",
        "REye",
        "LEye",
        "REar",
        "LEar",
    )
    body = np.zeros((18, 3))
    for k, name in enumerate(COCO_JOINTS):
        body[names18.index(_op_name(name))] = (kp[k, 0], kp[k, 1], 0.3 if k == 9 else 0.1 if k == 10 else 0.9)
    (person,) = read_people({"people": [{"pose_keypoints_2d": body.reshape(-1).tolist()}]}, "op18.json")
    assert person.keypoints[9, 2] == 1 and person.keypoints[10].tolist() == [
        0,
        0,
        0,
    ]  # 0.3: labelled; 0.1: no
    assert person.scores[10] == pytest.approx(0.1) and person.keypoints[0, 2] == 2


def test_mmpose_list_instance_info_and_video_forms() -> None:
    truth = _gt_people()
    plain = _mmpose_instances(truth)
    wholebody = _mmpose_instances(truth, k=133)
    image = {"meta_info": {"dataset_name": "coco"}, "instance_info": plain}
    video = {
        "meta_info": {},
        "instance_info": [{"frame_id": 1, "instances": plain[:2]}, {"frame_id": 2, "instances": plain[2:]}],
    }
    for data in (plain, wholebody, image, video):
        assert sniff_format(data) == "mmpose"
        people = read_people(data, "mm.json")
        assert len(people) == 5 and all(
            _same_visible(p.keypoints, t) for p, t in zip(people, truth, strict=True)
        )
        box = people[0].bbox
        lo = truth[0][truth[0][:, 2] > 0, :2].min(0)
        assert box is not None and np.allclose(box[:2], lo) and box[2] > 0 and people[0].score == 0.97
    assert "frame_id 2 instances[0]" in read_people(video, "v.json")[2].where


def test_bad_records_name_file_record_and_field() -> None:
    with pytest.raises(P2MError, match=r"op\.json: people\[1\]: field 'pose_keypoints_2d' has 30 numbers"):
        read_people(
            {"people": [{"pose_keypoints_2d": [0.0] * 75}, {"pose_keypoints_2d": [1.0] * 30}]}, "op.json"
        )
    with pytest.raises(P2MError, match=r"op\.json: people\[0\]: field 'pose_keypoints_2d' is missing"):
        read_people({"people": [{"face_keypoints_2d": []}]}, "op.json")
    bad = _mmpose_instances(_gt_people()[:1])
    bad[0]["keypoint_scores"] = bad[0]["keypoint_scores"][:16]
    with pytest.raises(P2MError, match=r"mm\.json: \[0\]: field 'keypoint_scores' has 16 values for 17"):
        read_people(bad, "mm.json")
    with pytest.raises(P2MError, match=r"x\.json: neither OpenPose JSON"):
        read_people({"images": []}, "x.json")


def test_infer_input_reads_openpose_and_mmpose_people(tmp_path: Path) -> None:
    from p2m.infer.pose_input import read_pose2d

    truth = _gt_people()
    (tmp_path / "photo_keypoints.json").write_text(json.dumps(_openpose_json(truth)))
    (tmp_path / "mm.json").write_text(json.dumps(_mmpose_instances(truth)))
    op = read_pose2d(tmp_path / "photo_keypoints.json", person=3)
    mm = read_pose2d(tmp_path / "mm.json", person=4)
    assert op.joint_set == mm.joint_set == "coco" and op.person == 3 and "openpose JSON" in op.notes
    assert _same_visible(op.joints, truth[3]) and _same_visible(mm.joints, truth[4])
    with pytest.raises(P2MError, match=r"--person 5 is out of range; the file holds 5 people"):
        read_pose2d(tmp_path / "photo_keypoints.json", person=5)


@pytest.mark.parametrize("fmt", ["openpose", "mmpose"])
def test_annotate_import_makes_a_valid_dataset_one_frame_per_person(tmp_path: Path, fmt: str) -> None:
    from pycocotools.coco import COCO as CocoApi

    from p2m.annotate.validate import validate
    from p2m.layout import subject_file

    truth = _gt_people()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(COCO / PHOTO, src / PHOTO)
    stem = Path(PHOTO).stem
    if fmt == "openpose":
        (src / f"{stem}_keypoints.json").write_text(json.dumps(_openpose_json(truth)))
    else:
        (src / f"{stem}.json").write_text(json.dumps(_mmpose_instances(truth)))
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["annotate", "import", fmt, str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 images, 5 people" in result.output
    report = validate(out)
    assert report.ok, [str(p) for p in report.problems]
    path = subject_file(out, fmt, 1, "data")
    api = CocoApi(str(path))
    assert len(api.getAnnIds()) == 5
    data = json.loads(path.read_text())
    assert [img["person_idx"] for img in data["images"]] == [0, 1, 2, 3, 4]
    assert len({img["cam_idx"] for img in data["images"]}) == 1
    for ann, want in zip(data["annotations"], truth, strict=True):
        assert _same_visible(np.asarray(ann["keypoints"], float).reshape(17, 3), want)
    # A file of the other format is refused with its name.
    other = "mmpose" if fmt == "openpose" else "openpose"
    bad = CliRunner().invoke(main, ["annotate", "import", other, str(src), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and f"not {other} JSON" in bad.output
