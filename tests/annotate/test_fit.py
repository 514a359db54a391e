"""Tests for `p2m annotate fit`: anny fitted to 2D keypoints of synthetic people whose 3D is known."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.annotate.fit import fit_bodies, resolve_device, target_2d
from p2m.annotate.validate import validate
from p2m.cli import main
from p2m.errors import P2MError
from p2m.joints import H36M_EVAL_14
from p2m.layout import subject_file
from p2m.pose2mesh.metrics import pa_mpjpe

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))
NAME = "synth"
FIT_FIELDS = ("fit_error_px", "fit_valid", "joints_2d_h36m", "joints_2d_h36m_input")


def _table_or_skip() -> None:
    from p2m.body.poses import table_path

    if not table_path("eval").is_file():
        pytest.skip("the shipped CMU pose tables (p2m/data/cmu_poses_*.npz) are not installed")


def _read(root: Path, kind: str, subject: int = 1):
    return json.loads(subject_file(root, NAME, subject, kind).read_text())


def _write(root: Path, kind: str, obj, subject: int = 1) -> None:
    subject_file(root, NAME, subject, kind).write_text(json.dumps(obj))


def _strip_3d(root: Path) -> tuple[dict, dict]:
    """Remove (and return) the joint_3d and body_param files: the fit has to find them again."""
    truth = _read(root, "joint_3d"), _read(root, "body_param")
    for kind in ("joint_3d", "body_param"):
        subject_file(root, NAME, 1, kind).unlink()
    return truth


def _synth(root: Path, num: int, cameras: str = "random", seed: int = 5) -> None:
    from p2m.annotate.synth import SynthOptions, synth

    synth(
        root,
        SynthOptions(num=num, poses="cmu-eval", cameras=cameras, seed=seed, topology="notoes_collapse10pc"),
        progress=False,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Six people from GT 2D, one with garbage keypoints, one with none; fitted once for the tests below."""
    _table_or_skip()
    root = tmp_path_factory.mktemp("fit") / "ds"
    _synth(root, 8)
    truth, _ = _strip_3d(root)
    data = _read(root, "data")
    rng = np.random.default_rng(0)
    garbage, empty = data["annotations"][6], data["annotations"][7]
    kp = np.column_stack([rng.uniform(0, 511, (17, 2)), np.full(17, 2)])
    garbage["keypoints"] = kp.round(2).ravel().tolist()
    empty["keypoints"] = [0] * 51
    empty["num_keypoints"] = 0
    empty["joints_2d_h36m"] = [[0.0, 0.0, 0] for _ in range(17)]
    h36m_only = data["annotations"][5]  # no COCO keypoints: fitted to its joints_2d_h36m
    h36m_only["keypoints"] = [0] * 51
    h36m_only["num_keypoints"] = 0
    data["annotations"][0]["note"] = {"kept": [1, 2]}  # fields fit does not know stay as they are
    data["images"][0]["source_url"] = "https://example.org/a.jpg"
    _write(root, "data", data)
    before = copy.deepcopy(data)
    cameras = subject_file(root, NAME, 1, "camera").read_bytes()
    stats = fit_bodies(root, device="cpu", iters=100, batch=16, progress=False)
    assert (
        subject_file(root, NAME, 1, "camera").read_bytes() == cameras
    )  # camera.json unchanged where present
    return root, truth, before, stats


def test_fit_recovers_3d_from_ground_truth_2d(fitted):
    root, truth, before, stats = fitted
    j3d = _read(root, "joint_3d")
    images = {img["id"]: img for img in before["images"]}
    pred, gt = [], []
    for ann in before["annotations"][:6]:
        img = images[ann["image_id"]]
        key = (str(img["action_idx"]), str(img["subaction_idx"]), str(img["frame_idx"]))
        pred.append(j3d[key[0]][key[1]][key[2]])
        gt.append(truth[key[0]][key[1]][key[2]])
    err = pa_mpjpe(np.array(pred), np.array(gt), joints=H36M_EVAL_14, reduce=False)
    assert err.mean() < 60.0, err
    assert stats["annotations/valid"] == 6 and stats["frames/fitted"] == 7
    anns = _read(root, "data")["annotations"]
    assert all(a["fit_valid"] is True and a["fit_error_px"] < 3.0 for a in anns[:6])


def test_fit_writes_body_params_that_reproduce_the_joints(fitted):
    import torch

    from p2m.body import create

    root, _, before, _ = fitted
    img = before["images"][0]
    key = (str(img["action_idx"]), str(img["subaction_idx"]), str(img["frame_idx"]))
    rec = _read(root, "body_param")[key[0]][key[1]][key[2]]
    assert rec["model"] == "anny" and rec["rig"] == "cmu_mb" and rec["topology"] == "full"
    assert len(rec["pose"]) == 31 * 3 and len(rec["shape"]) == 6 and len(rec["trans"]) == 3
    assert all(0.0 <= s <= 1.0 for s in rec["shape"])
    body = create("anny", topology=rec["topology"])
    with torch.no_grad():
        out = body(
            torch.tensor(rec["pose"]).reshape(1, 31, 3),
            torch.tensor([rec["shape"]]),
            torch.tensor([rec["trans"]]),
        )
    joints = np.asarray(_read(root, "joint_3d")[key[0]][key[1]][key[2]])
    assert np.abs(out.joints[0].double().numpy() * 1000.0 - joints).max() < 0.5  # mm


def test_garbage_keypoints_are_marked_invalid_and_kept(fitted):
    root, _, before, stats = fitted
    anns = {a["id"]: a for a in _read(root, "data")["annotations"]}
    garbage, empty = before["annotations"][6], before["annotations"][7]
    assert garbage["id"] in anns and empty["id"] in anns  # marked, not deleted
    assert anns[garbage["id"]]["fit_valid"] is False and anns[garbage["id"]]["fit_error_px"] > 15.0
    assert anns[garbage["id"]]["keypoints"] == garbage["keypoints"]
    assert anns[garbage["id"]]["joints_2d_h36m"] == garbage["joints_2d_h36m"]  # no 3D: 2D left as it was
    assert anns[empty["id"]]["fit_valid"] is False and anns[empty["id"]]["fit_error_px"] is None
    j3d = _read(root, "joint_3d")
    images = {img["id"]: img for img in before["images"]}
    for ann in (garbage, empty):
        img = images[ann["image_id"]]
        assert str(img["frame_idx"]) not in j3d.get(str(img["action_idx"]), {}).get(
            str(img["subaction_idx"]), {}
        )
    assert stats["annotations/invalid"] == 1 and stats["annotations/too_few_keypoints"] == 1
    problem = [p for p in stats["problems"] if f"annotation id {empty['id']}" in p]
    assert problem and "too few labelled keypoints" in problem[0] and "synth_subject1_data.json" in problem[0]


def test_fitted_dataset_validates_and_keeps_other_fields(fitted):
    root, _, before, _ = fitted
    report = validate(root)
    assert report.ok, [str(p) for p in report.problems]
    assert report.counts["reprojected"] == 6 and report.counts["max_reprojection_px"] < 0.01
    after = _read(root, "data")
    for key in ("images", "categories", "licenses"):
        assert after[key] == before[key]
    for old, new in zip(before["annotations"], after["annotations"]):
        assert {k: v for k, v in new.items() if k not in FIT_FIELDS} == {
            k: v for k, v in old.items() if k not in FIT_FIELDS
        }
    assert after["annotations"][0]["note"] == {"kept": [1, 2]}
    h36m_only = after["annotations"][5]  # fitted from its H36M joints, whose original is kept
    assert (
        h36m_only["fit_valid"] is True
        and h36m_only["joints_2d_h36m_input"] == before["annotations"][5]["joints_2d_h36m"]
    )


def test_rerun_skips_what_is_done_and_refits_what_review_flags(fitted, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(fitted[0], root)
    files = {
        k: subject_file(root, NAME, 1, k).read_bytes() for k in ("data", "joint_3d", "body_param", "camera")
    }
    stats = fit_bodies(root, device="cpu", iters=20, progress=False)
    assert stats.get("annotations/fitted", 0) == 0 and stats["annotations/skipped/already_fitted"] == 8
    assert {k: subject_file(root, NAME, 1, k).read_bytes() for k in files} == files
    data = _read(root, "data")
    data["annotations"][1]["review"] = {"status": "accepted", "needs_refit": True}
    _write(root, "data", data)
    stats = fit_bodies(root, device="cpu", iters=20, progress=False)
    assert stats["annotations/fitted"] == 1
    ann = _read(root, "data")["annotations"][1]
    assert ann["review"] == {"status": "accepted"} and ann["fit_valid"] is True
    assert validate(root).ok


def test_photos_without_camera_file_and_multi_person_frames(fitted, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(fitted[0], root)
    subject_file(root, NAME, 1, "camera").unlink()
    for kind in ("joint_3d", "body_param"):
        subject_file(root, NAME, 1, kind).unlink()
    data = _read(root, "data")
    first, second = data["images"][:2]
    solo = {k: v for k, v in data["annotations"][1].items() if k not in ("fit_valid", "fit_error_px")}
    crowd = [{**data["annotations"][0], "id": 100}, {**data["annotations"][0], "id": 101}]
    data["images"] = [first, second]
    data["annotations"] = crowd + [solo]
    _write(root, "data", data)
    stats = fit_bodies(root, device="cpu", iters=60, progress=False)
    assert stats["annotations/skipped/multi_person"] == 2 and stats["annotations/fitted"] == 1
    assert stats["cameras/default"] == 2
    cams = _read(root, "camera")  # single-photo cameras: R = I, t = 0, f = image diagonal, c = centre
    assert cams[str(second["cam_idx"])]["R"] == np.eye(3).tolist() and cams[str(second["cam_idx"])]["t"] == [
        0,
        0,
        0,
    ]
    assert np.allclose(cams[str(second["cam_idx"])]["f"], [np.hypot(512, 512)] * 2)
    assert np.allclose(cams[str(second["cam_idx"])]["c"], [255.5, 255.5])
    j3d = _read(root, "joint_3d")
    assert list(j3d["1"]["1"]) == [str(second["frame_idx"])]  # none for the frame with two people
    report = validate(root)
    assert report.ok and report.counts["reprojected"] == 1


def test_missing_camera_is_reported_and_nothing_written(fitted, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(fitted[0], root)
    cams = _read(root, "camera")
    data = _read(root, "data")
    img = data["images"][2]
    del cams[str(img["cam_idx"])]
    _write(root, "camera", cams)
    before = {p.name: p.read_bytes() for p in (root / "annotations").iterdir()}
    with pytest.raises(
        P2MError, match=rf"image id {img['id']}: field 'cam_idx' = {img['cam_idx']} has no camera"
    ):
        fit_bodies(
            root, device="cpu", iters=5, overwrite=True, progress=False
        )  # overwrite: every person is due
    assert {p.name: p.read_bytes() for p in (root / "annotations").iterdir()} == before
    result = CliRunner().invoke(main, ["annotate", "fit", str(root), "--device", "cpu", "--overwrite"])
    assert result.exit_code == 1 and "has no camera" in result.output


def test_target_2d_choice_and_bad_input():
    kp = np.zeros((17, 3))
    kp[:6] = [[10, 20, 2]] * 6
    ann = {
        "keypoints": kp.ravel().tolist(),
        "keypoint_scores": [0.5] * 17,
        "joints_2d_h36m": np.ones((17, 3)).tolist(),
    }
    kind, points, weights, labelled = target_2d(ann, "f.json: annotation id 1")
    assert kind == "coco" and labelled.sum() == 6 and np.allclose(weights[:6], 0.5) and weights[6:].sum() == 0
    ann["keypoints"] = [0] * 51  # no COCO keypoints: the H36M joints are used
    assert target_2d(ann, "w")[0] == "h36m"
    ann["joints_2d_h36m"] = np.zeros((17, 3)).tolist()
    assert "too few labelled keypoints" in target_2d(ann, "w")
    with pytest.raises(P2MError, match="f.json: annotation id 1: field 'keypoints'"):
        target_2d({"keypoints": [1, 2, 3]}, "f.json: annotation id 1")
    assert str(resolve_device("cpu")) == "cpu"
    with pytest.raises(P2MError, match="--device"):
        resolve_device("warp-drive")


@pytest.mark.slow
def test_multi_view_frames_are_fitted_jointly(tmp_path):
    _table_or_skip()
    root = tmp_path / "ds"
    _synth(root, 8, cameras="h36m", seed=2)  # 2 frames seen by 4 cameras each
    truth, _ = _strip_3d(root)
    data = _read(root, "data")
    partial = data["annotations"][
        0
    ]  # a view with 3 labelled joints: not fitted, but its 2D must match the 3D
    kp = np.asarray(partial["keypoints"], dtype=float).reshape(17, 3)
    kp[3:] = 0
    partial["keypoints"], partial["num_keypoints"] = kp.ravel().tolist(), 3
    partial["joints_2d_h36m"] = [
        j if i < 3 else [0.0, 0.0, 0] for i, j in enumerate(partial["joints_2d_h36m"])
    ]
    _write(root, "data", data)
    stats = fit_bodies(root, device="cpu", iters=80, progress=False)
    assert stats["frames/fitted"] == 2 and stats["frames/multi_view"] == 2 and stats["annotations/valid"] == 7
    assert stats["annotations/too_few_keypoints"] == 1
    j3d = _read(root, "joint_3d")
    pred = np.array([j3d["1"]["1"][f] for f in ("0", "1")])
    gt = np.array([truth["1"]["1"][f] for f in ("0", "1")])
    assert pa_mpjpe(pred, gt, joints=H36M_EVAL_14) < 60.0
    report = validate(root)
    assert report.ok and report.counts["reprojected"] == 8, [str(p) for p in report.problems]
