"""A CVAT / Label Studio round trip: `p2m annotate export coco`, corrections, `import coco --merge-into`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.annotate.validate import validate
from p2m.cli import main
from p2m.layout import subject_file

REPO = Path(__file__).resolve().parents[2]
COCO = REPO.parent / "shared" / "external-fixtures" / "mmpose-coco"


def _coco_dataset(tmp_path: Path) -> Path:
    if not COCO.is_dir():
        pytest.skip(f"shared COCO fixture absent: {COCO}")
    from p2m.annotate.import_coco import import_coco

    import_coco(COCO / "test_coco.json", tmp_path / "ds", progress=False)
    return tmp_path / "ds"


def _correct(
    path: Path, out: Path, moves: dict[int, tuple[int, float]], hide: dict[int, int], id_shift: int = 0
):
    """What a reviewer does in CVAT: move keypoint k of some people by dx px, mark others not visible."""
    coco = json.loads(path.read_text())
    for ann in coco["annotations"]:
        kp = ann["keypoints"]
        if ann["id"] in moves:
            k, dx = moves[ann["id"]]
            kp[3 * k] = round(kp[3 * k] + dx, 2)
        if ann["id"] in hide:
            kp[3 * hide[ann["id"]] : 3 * hide[ann["id"]] + 3] = [0, 0, 0]
        ann["id"] += id_shift
    out.write_text(json.dumps(coco))


def test_export_opens_in_pycocotools_and_merge_changes_only_corrected_people(tmp_path: Path) -> None:
    from pycocotools.coco import COCO as CocoApi

    ds = _coco_dataset(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["annotate", "export", "coco", str(ds), "--out", str(tmp_path / "review.json")])
    assert res.exit_code == 0, res.output
    api = CocoApi(str(tmp_path / "review.json"))
    data_path = subject_file(ds, "coco", 1, "data")
    before = json.loads(data_path.read_text())
    assert (
        sorted(api.getAnnIds()) == sorted(a["id"] for a in before["annotations"])
        and len(api.getImgIds()) == 4
    )
    assert api.loadCats(1)[0]["keypoints"][0] == "nose"
    labelled = [a for a in before["annotations"] if a["num_keypoints"] >= 10]
    moved, hidden = labelled[0], labelled[1]
    k_moved = next(k for k in range(17) if moved["keypoints"][3 * k + 2] > 0)
    k_hidden = next(k for k in range(17) if hidden["keypoints"][3 * k + 2] > 0)
    _correct(
        tmp_path / "review.json",
        tmp_path / "fixed.json",
        {moved["id"]: (k_moved, 6.0)},
        {hidden["id"]: k_hidden},
    )

    res = runner.invoke(
        main, ["annotate", "import", "coco", str(tmp_path / "fixed.json"), "--merge-into", str(ds)]
    )
    assert res.exit_code == 0, res.output
    assert "2 people changed, 12 unchanged, 0 not matched" in res.output
    after = json.loads(data_path.read_text())
    by_id = {a["id"]: a for a in after["annotations"]}
    for ann in before["annotations"]:
        if ann["id"] not in (moved["id"], hidden["id"]):
            assert by_id[ann["id"]] == ann  # untouched people stay exactly as they were
    new = by_id[moved["id"]]
    assert new["keypoints"][3 * k_moved] == pytest.approx(moved["keypoints"][3 * k_moved] + 6.0)
    assert new["review"]["edited_keypoints"] == [k_moved] and "needs_refit" not in new["review"]  # no 3D yet
    assert by_id[hidden["id"]]["num_keypoints"] == hidden["num_keypoints"] - 1
    assert validate(ds).ok
    # Merging the same file again changes nothing.
    again = runner.invoke(
        main, ["annotate", "import", "coco", str(tmp_path / "fixed.json"), "--merge-into", str(ds)]
    )
    assert again.exit_code == 0 and "0 people changed, 14 unchanged" in again.output


def test_merge_matches_by_box_when_the_tool_renumbered_ids(tmp_path: Path) -> None:
    from p2m.annotate.coco_roundtrip import export_coco, merge_coco

    ds = _coco_dataset(tmp_path)
    export_coco(ds, tmp_path / "review.json")
    target = json.loads((tmp_path / "review.json").read_text())["annotations"][4]
    k = next(k for k in range(17) if target["keypoints"][3 * k + 2] > 0)
    _correct(tmp_path / "review.json", tmp_path / "fixed.json", {target["id"]: (k, -4.0)}, {}, id_shift=1000)
    stats = merge_coco(tmp_path / "fixed.json", ds)
    assert stats["changed"] == [target["id"]] and stats["annotations/matched_by_box"] == 14
    bad = json.loads((tmp_path / "fixed.json").read_text())
    bad["annotations"][0]["keypoints"][2] = 7
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    res = CliRunner().invoke(
        main, ["annotate", "import", "coco", str(tmp_path / "bad.json"), "--merge-into", str(ds)]
    )
    assert (
        res.exit_code == 1 and "bad.json: annotation id" in res.output and "field 'keypoints'" in res.output
    )
    for img in bad["images"]:
        img["file_name"] = "elsewhere/" + img["file_name"]
    bad["annotations"][0]["keypoints"][2] = 2
    (tmp_path / "other.json").write_text(json.dumps(bad))
    res = CliRunner().invoke(
        main, ["annotate", "import", "coco", str(tmp_path / "other.json"), "--merge-into", str(ds)]
    )
    assert res.exit_code == 1 and "none of its 14 people matches a person of" in res.output


@pytest.mark.slow
@pytest.mark.body
def test_merge_keeps_other_fits_and_refits_only_changed_people(tmp_path: Path) -> None:
    """One frame per person (an OpenPose import of a 5-person photo), fitted; one person corrected and refitted."""
    from p2m.annotate.fit import fit_bodies
    from p2m.pose_formats import BODY25_TO_COCO

    if not COCO.is_dir():
        pytest.skip(f"shared COCO fixture absent: {COCO}")
    gt = json.loads((COCO / "test_coco.json").read_text())
    people = []
    for ann in gt["annotations"]:
        if ann["image_id"] == 197388 and ann["num_keypoints"] > 0:
            kp = np.asarray(ann["keypoints"], float).reshape(17, 3)
            body = np.zeros((25, 3))
            body[list(BODY25_TO_COCO)] = np.where(kp[:, 2:] > 0, np.c_[kp[:, :2], np.full(17, 0.9)], 0.0)
            people.append({"pose_keypoints_2d": body.reshape(-1).tolist()})
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(COCO / "000000197388.jpg", src / "000000197388.jpg")
    (src / "000000197388_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    ds = tmp_path / "ds"
    assert (
        CliRunner().invoke(main, ["annotate", "import", "openpose", str(src), "--out", str(ds)]).exit_code
        == 0
    )
    first = fit_bodies(ds, device="cpu", iters=20, topology="notoes_collapse10pc", progress=False)
    assert first["annotations/fitted"] == 5
    j3d_path, bp_path = (
        subject_file(ds, "openpose", 1, "joint_3d"),
        subject_file(ds, "openpose", 1, "body_param"),
    )
    j3d_before, bp_before = json.loads(j3d_path.read_text()), json.loads(bp_path.read_text())
    res = CliRunner().invoke(main, ["annotate", "export", "coco", str(ds), "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0 and "1 images, 5 people" in res.output
    exported = json.loads((tmp_path / "r.json").read_text())
    target = exported["annotations"][2]
    _correct(tmp_path / "r.json", tmp_path / "fixed.json", {target["id"]: (10, 8.0)}, {})  # right wrist
    res = CliRunner().invoke(
        main,
        [
            "annotate",
            "import",
            "coco",
            str(tmp_path / "fixed.json"),
            "--merge-into",
            str(ds),
            "--refit",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "1 people changed, 4 unchanged, 0 not matched; 1 need a refit, 1 refitted" in res.output
    data = json.loads(subject_file(ds, "openpose", 1, "data").read_text())
    frame_of = {img["id"]: str(img["frame_idx"]) for img in data["images"]}
    j3d_after, bp_after = json.loads(j3d_path.read_text()), json.loads(bp_path.read_text())
    ann = next(a for a in data["annotations"] if a["id"] == target["id"])
    changed_frame = frame_of[ann["image_id"]]
    for frame, joints in j3d_before["1"]["1"].items():
        if frame == changed_frame:
            assert not np.allclose(j3d_after["1"]["1"][frame], joints)
            assert bp_after["1"]["1"][frame]["topology"] == bp_before["1"]["1"][frame]["topology"]  # kept
        else:
            assert (
                j3d_after["1"]["1"][frame] == joints
                and bp_after["1"]["1"][frame] == bp_before["1"]["1"][frame]
            )
    assert "needs_refit" not in ann["review"] and ann["fit_valid"] is True
    assert validate(ds).ok
