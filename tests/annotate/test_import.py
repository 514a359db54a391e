"""Tests for `p2m annotate import h36m|coco`: real Human3.6M (Pose2Mesh format) and COCO files into the layout."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.annotate import validate
from p2m.annotate.import_coco import import_coco
from p2m.annotate.import_h36m import COCO_FROM_H36M, import_h36m
from p2m.cli import main
from p2m.errors import P2MError
from p2m.joints import coco_to_h36m
from p2m.layout import read_dataset, subject_file

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "external-fixtures"
H36M = SHARED / "mmpose-h36m"
H36M_P2M = H36M / "pose2mesh-format" / "Human36M"
COCO = SHARED / "mmpose-coco"

needs_h36m = pytest.mark.skipif(not H36M_P2M.is_dir(), reason=f"shared Human3.6M fixture absent: {H36M_P2M}")
needs_coco = pytest.mark.skipif(not COCO.is_dir(), reason=f"shared COCO fixture absent: {COCO}")


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _copy_h36m(tmp_path: Path) -> Path:
    src = tmp_path / "Human36M"
    shutil.copytree(H36M_P2M, src)
    shutil.copytree(H36M / "images", src / "images")
    for p in src.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return src


def _copy_coco(tmp_path: Path) -> Path:
    src = tmp_path / "coco_src"
    src.mkdir()
    for p in COCO.glob("*.jpg"):
        shutil.copy(p, src / p.name)
    shutil.copy(COCO / "test_coco.json", src / "test_coco.json")
    for p in src.iterdir():
        p.chmod(0o644)
    return src


# ------------------------------------------------------------------------------------------------ Human3.6M
@needs_h36m
def test_import_h36m_keeps_3d_cameras_smpl_and_projects_2d(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    stats = import_h36m(H36M_P2M, out, images=H36M / "images", progress=False)
    assert stats["subjects"] == 4 and stats["images"] == 4 and stats["annotations"] == 4
    assert stats["body_params"] == 4 and stats["joints_2d/projected"] == 4 and stats["images/copied"] == 4
    report = validate(out)
    assert report.ok, [str(p) for p in report.problems]
    assert report.counts["reprojected"] == 4 and report.counts["max_reprojection_px"] < 1e-6
    samples = list(read_dataset(out).iter_samples())
    assert len({s.image["id"] for s in samples}) == 4 and len({s.annotation["id"] for s in samples}) == 4
    # mmpose's h36m_coco.json has the same 4 frames' 2D ground truth (Human3.6M's distorted projection): our
    # pinhole projection of joint_3d lands within the 3.4 px the fixture's NOTES measured for that difference.
    mm = json.loads((H36M / "h36m_coco.json").read_text())
    names = {img["id"]: img["file_name"] for img in mm["images"]}
    truth = {
        names[a["image_id"]]: np.asarray(a["keypoints"], float).reshape(17, 3) for a in mm["annotations"]
    }
    for s in samples:
        src_j3d = json.loads(
            (H36M_P2M / "annotations" / f"Human36M_subject{s.subject}_joint_3d.json").read_text()
        )
        a, sa, f = (str(s.image[k]) for k in ("action_idx", "subaction_idx", "frame_idx"))
        assert np.array_equal(s.joints_3d_world, np.asarray(src_j3d[a][sa][f]))
        j2d = s.joints_2d_h36m
        err = np.linalg.norm(j2d[:, :2] - truth[s.image["file_name"]][:, :2], axis=1)
        assert err.max() < 3.5 and err.mean() < 1.5, (s.image["file_name"], err.round(2))
        assert (j2d[:, 2] == 2).all()
        kp = s.keypoints
        for c, h in COCO_FROM_H36M.items():
            assert np.allclose(kp[c], j2d[h])
        assert (kp[:5] == 0).all() and s.annotation["num_keypoints"] == 12
        assert s.body_param["model"] == "smpl" and len(s.body_param["pose"]) == 72
        assert len(s.body_param["shape"]) == 10 and len(s.body_param["trans"]) == 3
        assert "fitted_3d_pose" not in s.body_param
        assert s.annotation["source_id"] == s.image["source_id"]
        assert (out / "images" / s.image["file_name"]).read_bytes() == (
            H36M / "images" / s.image["file_name"]
        ).read_bytes()
    assert subject_file(out, "Human36M", 5, "body_param").is_file()


@needs_h36m
def test_import_h36m_without_images_is_pose_only_and_appends_with_new_ids(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    import_h36m(H36M_P2M / "annotations", out, name="h36m", progress=False)
    assert not (out / "images").exists()
    report = validate(out)
    assert report.ok and any("pose-only" in w.message for w in report.warnings)
    # A second import into the same name continues the ids (never reused, never 0).
    import_h36m(H36M_P2M, out, name="h36m", progress=False)
    assert validate(out).ok
    ids = sorted(s.annotation["id"] for s in read_dataset(out).iter_samples())
    assert ids == list(range(1, 9))


# ------------------------------------------------------------------------------------------------ COCO
@needs_coco
def test_import_coco_round_trips_keypoints_and_loads_in_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO as PyCOCO

    out = tmp_path / "ds"
    stats = import_coco(COCO / "test_coco.json", out, progress=False)
    src = json.loads((COCO / "test_coco.json").read_text())
    assert (
        stats["images"] == len(src["images"]) == 4 and stats["annotations"] == len(src["annotations"]) == 14
    )
    assert stats["images/copied"] == 4 and stats["camera/default_diagonal"] == 4
    report = validate(out)
    assert report.ok, [str(p) for p in report.problems]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = PyCOCO(str(subject_file(out, "coco", 1, "data")))
    assert len(coco.getAnnIds()) == 14 and len(coco.getImgIds()) == 4
    by_src = {a["source_id"]: a for a in coco.loadAnns(coco.getAnnIds())}
    images = {img["id"]: img for img in coco.loadImgs(coco.getImgIds())}
    src_images = {img["id"]: img for img in src["images"]}
    for ann in src["annotations"]:
        mine = by_src[ann["id"]]
        assert mine["keypoints"] == ann["keypoints"]  # exactly, number by number
        for key in ("bbox", "area", "iscrowd", "num_keypoints", "segmentation", "category_id"):
            assert mine[key] == ann[key], key
        img = images[mine["image_id"]]
        assert (
            img["source_id"] == ann["image_id"]
            and img["file_name"] == src_images[ann["image_id"]]["file_name"]
        )
        kp = np.asarray(ann["keypoints"], float).reshape(17, 3)
        assert np.allclose(mine["joints_2d_h36m"], coco_to_h36m(kp))
    for img in images.values():
        s = src_images[img["source_id"]]
        assert (img["width"], img["height"]) == (s["width"], s["height"])
        assert img["license_id"] == s["license"] and isinstance(img["license"], str) and img["license"]
        assert img["source_url"] == s["flickr_url"]
        assert (out / "images" / img["file_name"]).read_bytes() == (COCO / img["file_name"]).read_bytes()
    cams = json.loads(subject_file(out, "coco", 1, "camera").read_text())
    assert len(cams) == 4


@needs_coco
def test_import_coco_cli_and_no_images(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = CliRunner().invoke(
        main, ["annotate", "import", "coco", str(COCO / "test_coco.json"), "--out", str(out), "--no-images"]
    )
    assert result.exit_code == 0, result.output
    assert "4 images, 14 annotations" in result.output and not (out / "images").exists()
    assert validate(out).ok


# ------------------------------------------------------------------------------------------------ bad input
def _replace(path: Path, data: bytes) -> None:
    """A new file under the old name (not an in-place write: the dataset may hold a hard link to the old one)."""
    path.unlink()
    path.write_bytes(data)


def _edit_json(path: Path, fn: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


COCO_BREAKAGES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "malformed_json": (lambda d: (d / "test_coco.json").write_text('{"images": [1, 2,'), ["test_coco.json", "line 1"]),
    "keypoints_shape": (
        lambda d: _edit_json(d / "test_coco.json", lambda o: o["annotations"][3].update(keypoints=[0] * 50)),
        ["test_coco.json", "annotation id", "'keypoints'", "50 values", "51 numbers"],
    ),
    "keypoint_visibility": (
        lambda d: _edit_json(d / "test_coco.json", lambda o: o["annotations"][0]["keypoints"].__setitem__(2, 3)),
        ["test_coco.json", "annotation id", "'keypoints'", "visibilities"],
    ),
    "missing_image": (lambda d: (d / "000000196141.jpg").unlink(),
                      ["test_coco.json", "image id 196141", "'file_name'", "no such image file"]),
    "not_an_image": (lambda d: _replace(d / "000000040083.jpg", b"<html>not a photo</html>"),
                     ["test_coco.json", "image id 40083", "000000040083.jpg", "not an image"]),
    "wrong_size": (
        lambda d: _edit_json(d / "test_coco.json", lambda o: o["images"][1].update(width=641)),
        ["test_coco.json", "image id", "'width' = 641"],
    ),
    "dangling_image_id": (
        lambda d: _edit_json(d / "test_coco.json", lambda o: o["annotations"][0].update(image_id=999)),
        ["test_coco.json", "annotation id", "'image_id' = 999"],
    ),
}  # fmt: skip


@needs_coco
@pytest.mark.parametrize("case", sorted(COCO_BREAKAGES))
def test_bad_coco_input_names_the_place_and_leaves_the_dataset_intact(tmp_path: Path, case: str) -> None:
    src = _copy_coco(tmp_path)
    out = tmp_path / "ds"
    import_coco(src / "test_coco.json", out, progress=False)
    before = _digest(out)
    breakage, expected = COCO_BREAKAGES[case]
    breakage(src)
    with pytest.raises(P2MError) as err:
        import_coco(src / "test_coco.json", out, progress=False)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))
    assert _digest(out) == before
    assert validate(out).ok


def _h36m_edit(kind: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda d: _edit_json(d / "annotations" / f"Human36M_subject7_{kind}.json", fn)


def _first_frame(obj: dict) -> dict:
    a = next(iter(obj))
    s = next(iter(obj[a]))
    return obj[a][s]


H36M_BREAKAGES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "joint_3d_shape": (
        _h36m_edit("joint_3d", lambda o: _first_frame(o).update({k: v[:16] for k, v in _first_frame(o).items()})),
        ["Human36M_subject7_joint_3d.json", "frame 5/1/395", "'joint_3d'", "(16, 3)", "17x3"],
    ),
    "smpl_pose_length": (
        _h36m_edit("smpl_param", lambda o: next(iter(_first_frame(o).values())).update(pose=[0.0] * 71)),
        ["Human36M_subject7_smpl_param.json", "frame 5/1/395", "'pose'", "(71,)", "72"],
    ),
    "missing_camera": (
        _h36m_edit("data", lambda o: o["images"][0].update(cam_idx=4)),
        ["Human36M_subject7_data.json", "image id 3", "'cam_idx' = 4"],
    ),
    "bad_camera": (
        _h36m_edit("camera", lambda o: next(iter(o.values())).update(f=[1145.0])),
        ["Human36M_subject7_camera.json", "cam_idx 2", "'f'"],
    ),
    "frame_not_int": (
        _h36m_edit("data", lambda o: o["images"][0].update(frame_idx="395")),
        ["Human36M_subject7_data.json", "image id 3", "'frame_idx'"],
    ),
    "malformed_json": (lambda d: (d / "annotations" / "Human36M_subject7_camera.json").write_text("{"),
                       ["Human36M_subject7_camera.json", "invalid JSON"]),
    "missing_image": (lambda d: (d / "images" / "S7_Greeting.55011271_000396.jpg").unlink(),
                      ["Human36M_subject7_data.json", "image id 3", "'file_name'", "no such image file"]),
    "not_an_image": (lambda d: _replace(d / "images" / "S7_Greeting.55011271_000396.jpg", b"\x00" * 64),
                     ["Human36M_subject7_data.json", "image id 3", "not an image"]),
}  # fmt: skip


@needs_h36m
@pytest.mark.parametrize("case", sorted(H36M_BREAKAGES))
def test_bad_h36m_input_names_the_place_and_leaves_the_dataset_intact(tmp_path: Path, case: str) -> None:
    src = _copy_h36m(tmp_path)
    out = tmp_path / "ds"
    import_h36m(src, out, progress=False)
    before = _digest(out)
    breakage, expected = H36M_BREAKAGES[case]
    breakage(src)
    with pytest.raises(P2MError) as err:
        import_h36m(src, out, progress=False)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))
    assert _digest(out) == before


@needs_h36m
def test_import_h36m_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    src = _copy_h36m(tmp_path)
    H36M_BREAKAGES["smpl_pose_length"][0](src)
    result = CliRunner().invoke(main, ["annotate", "import", "h36m", str(src), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Human36M_subject7_smpl_param.json" in result.output and "'pose'" in result.output
    assert not (tmp_path / "ds" / "annotations").exists()
    ok = CliRunner().invoke(
        main, ["annotate", "import", "h36m", str(H36M_P2M), "--out", str(tmp_path / "ok")]
    )
    assert ok.exit_code == 0, ok.output
    assert "4 subjects, 4 images, 4 annotations, 4 SMPL parameter sets" in ok.output


def test_import_h36m_needs_subject_files(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    with pytest.raises(P2MError, match="no {prefix}_subject{S}_data.json"):
        import_h36m(tmp_path, tmp_path / "ds")
    obj = copy.deepcopy({"images": [], "annotations": []})
    (tmp_path / "annotations" / "X_subject1_data.json").write_text(json.dumps(obj))
    with pytest.raises(P2MError, match="subject 1 has no X_subject1_camera.json"):
        import_h36m(tmp_path, tmp_path / "ds")
