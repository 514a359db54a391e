"""`p2m annotate validate`: every rule of Contract 1, every problem reported by file, id and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _layout_helpers import write_toy_dataset
from click.testing import CliRunner

from p2m.annotate import validate
from p2m.cli import main
from p2m.layout import subject_file

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
P2M_FORMAT = SHARED / "external-fixtures" / "mmpose-h36m" / "pose2mesh-format" / "Human36M"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_toy_dataset(tmp_path / "ds", subjects=(1, 2), frames=2)


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _where(report) -> set[tuple[str, object, object]]:
    return {(Path(p.file).name, p.id, p.field) for p in report.problems}


def test_valid_dataset_passes(dataset):
    report = validate(dataset)
    assert report.ok, [str(p) for p in report.problems]
    assert [(w.file, w.message) for w in report.warnings] == [
        ("images", "absent: a pose-only dataset (no image files are checked)")
    ]
    c = report.counts
    assert (c["names"], c["subject_files"], c["images"], c["annotations"]) == (1, 2, 8, 8)
    assert (c["cameras"], c["joint_3d_frames"], c["body_params"], c["reprojected"]) == (4, 4, 4, 8)
    assert c["max_reprojection_px"] < 1e-6
    assert report.summary().endswith("OK")


def test_each_corruption_is_reported_with_file_id_and_field(dataset):
    d1, d2 = subject_file(dataset, "toy", 1, "data"), subject_file(dataset, "toy", 2, "data")

    def corrupt_1(d):
        d["info"] = {"year": 2024}  # an object at top level
        d["images"][0]["id"] = 0  # id 0
        d["annotations"][1]["keypoints"] = d["annotations"][1]["keypoints"][:50]  # 50 numbers
        d["annotations"][2]["joints_2d_h36m"] = d["annotations"][2]["joints_2d_h36m"][:16]  # 16x3
        d["annotations"][3]["joints_2d_h36m"][4][0] += 2.0  # 2 px reprojection error at L_Hip
        d["annotations"][3]["keypoints"][2] = 3  # v = 3

    def corrupt_2(d):
        d["images"][1]["id"] = 2  # duplicates subject 1's image 2
        d["annotations"][0]["id"] = 3  # duplicates subject 1's annotation 3
        d["images"][2]["cam_idx"] = 9  # no such camera

    _edit(d1, corrupt_1)
    _edit(d2, corrupt_2)
    report = validate(dataset)
    where = _where(report)
    expected = {
        ("toy_subject1_data.json", None, "info"),
        ("toy_subject1_data.json", 0, "id"),
        ("toy_subject1_data.json", 2, "keypoints"),
        ("toy_subject1_data.json", 3, "joints_2d_h36m"),
        ("toy_subject1_data.json", 4, "joints_2d_h36m"),
        ("toy_subject1_data.json", 4, "keypoints"),
        ("toy_subject2_data.json", 2, "id"),
        ("toy_subject2_data.json", 3, "id"),
        ("toy_subject2_data.json", 7, "cam_idx"),
    }
    assert expected <= where, expected - where
    text = "\n".join(map(str, report.problems))
    assert "dataset facts go in {name}_info.json" in text
    assert "joint L_Hip is 2.000 px from the projection" in text
    assert "duplicate image id, also in annotations/toy_subject1_data.json" in text
    assert "value 9 has no camera in toy_subject2_camera.json" in text
    # annotations whose image, camera or 2D joints broke skip the reprojection check; the 4 others still run:
    # subject 1 loses ann 1 (its image's id became 0) and ann 3 (16x3); subject 2 loses the annotations of
    # image 6 (renamed 2) and image 7 (cam_idx 9)
    assert report.counts["reprojected"] == 4
    assert ("toy_subject2_data.json", 6, "image_id") in where  # annotation 6 lost its image 6
    assert ("toy_subject1_data.json", 1, "image_id") in where  # annotation 1 lost its image 1
    assert not report.ok


def test_malformed_json_missing_camera_and_stray_files(dataset):
    subject_file(dataset, "toy", 2, "data").write_text('{"images": [}')
    subject_file(dataset, "toy", 1, "camera").unlink()
    (dataset / "annotations" / "notes.txt").write_text("hello")
    _edit(subject_file(dataset, "toy", 1, "body_param"), lambda d: d["2"]["1"]["0"].pop("shape"))
    _edit(subject_file(dataset, "toy", 1, "joint_3d"), lambda d: d["2"]["1"]["5"].pop())
    report = validate(dataset)
    where = _where(report)
    assert ("toy_subject2_data.json", None, None) in where
    assert ("toy_subject1_data.json", None, "cam_idx") in where
    assert ("notes.txt", None, None) in where
    assert ("toy_subject1_body_param.json", "2/1/0", "body_param") in where
    assert ("toy_subject1_joint_3d.json", "2/1/5", "joint_3d") in where
    text = "\n".join(map(str, report.problems))
    assert "toy_subject2_data.json: invalid JSON at line 1 column 13" in text
    assert "no toy_subject1_camera.json, but images use cam_idx ['1', '2']" in text
    assert "field 'shape' = None" in text


def test_image_files_and_top_level_keys(dataset):
    for path in ("s1/c1/000000.jpg", "s1/c2/000000.jpg", "s1/c1/000001.jpg", "s2/c1/000000.jpg"):
        (dataset / "images" / path).parent.mkdir(parents=True, exist_ok=True)
        (dataset / "images" / path).write_bytes(b"\xff\xd8")
    _edit(subject_file(dataset, "toy", 2, "data"), lambda d: d.update(extra=[]))
    report = validate(dataset)
    missing = sorted(p.id for p in report.problems if p.field == "file_name")
    assert missing == [4, 6, 7, 8]  # s1/c2/000001 and 3 of subject 2's images
    assert any(
        "top-level keys" in p.message and p.file.endswith("toy_subject2_data.json") for p in report.problems
    )
    assert report.warnings == []


def test_pycocotools_failure_is_reported(dataset):
    _edit(subject_file(dataset, "toy", 1, "data"), lambda d: d["annotations"][0].pop("image_id"))
    problems = [str(p) for p in validate(dataset).problems]
    assert any("pycocotools COCO() cannot load it: KeyError" in p for p in problems), problems
    assert any("id 1: image_id: missing field" in p for p in problems)
    assert not any("pycocotools" in str(p) for p in validate(dataset, pycocotools=False).problems)


def test_cli_lists_every_problem_and_exits_1(dataset):
    runner = CliRunner()
    ok = runner.invoke(main, ["annotate", "validate", str(dataset)])
    assert ok.exit_code == 0, ok.output
    assert "8 images, 8 annotations" in ok.output and ok.output.strip().endswith("OK")
    _edit(subject_file(dataset, "toy", 1, "data"), lambda d: d["images"][0].update(id=0))
    _edit(subject_file(dataset, "toy", 2, "data"), lambda d: d["annotations"][0].update(id=1))
    bad = runner.invoke(main, ["annotate", "validate", str(dataset)])
    assert bad.exit_code == 1
    errors = [line for line in bad.output.splitlines() if line.startswith("ERROR")]
    assert "ERROR annotations/toy_subject1_data.json: id 0: id: image id 0" in errors[0]
    assert any(
        line.startswith("ERROR annotations/toy_subject2_data.json: id 1: id: duplicate annotation id")
        for line in errors
    )
    assert "problem(s)" in bad.output.splitlines()[-1]
    missing = runner.invoke(main, ["annotate", "validate", str(dataset / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cli_help_explains_the_rules():
    out = CliRunner().invoke(main, ["annotate", "validate", "--help"])
    assert out.exit_code == 0
    for phrase in ("joints_2d_h36m", "unique across ALL subject files", "pycocotools", "--tolerance-px"):
        assert phrase in out.output
    group = CliRunner().invoke(main, ["annotate", "--help"])
    assert group.exit_code == 0 and "validate" in group.output


@pytest.mark.skipif(not P2M_FORMAT.is_dir(), reason=f"shared Pose2Mesh-format fixture absent: {P2M_FORMAT}")
def test_pose2mesh_human36m_files_lack_only_the_p2m_fields():
    """Pose2Mesh's original Human3.6M layout is read, but it is not a complete p2m dataset: validate lists the
    p2m-only fields it lacks (keypoints, num_keypoints, joints_2d_h36m, licenses) and nothing else; ids,
    cameras, 3D joints and the SMPL parameters pass."""
    report = validate(P2M_FORMAT)
    assert {p.field for p in report.problems} == {"keypoints", "num_keypoints", "joints_2d_h36m", "licenses"}
    assert len(report.problems) == 4 * 4
    assert report.counts["images"] == 4 and report.counts["body_params"] == 4
    assert any("smpl_param" in w.file for w in report.warnings)
