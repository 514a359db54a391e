"""Reading and writing the dataset layout (DESIGN.md Contract 1) with p2m.layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _layout_helpers import H36M_CAMS, annotation_for, toy_pose, write_toy_dataset

from p2m.errors import LayoutError
from p2m.layout import DatasetWriter, read_dataset, subject_file, validate_body_param

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
P2M_FORMAT = SHARED / "external-fixtures" / "mmpose-h36m" / "pose2mesh-format" / "Human36M"


def test_round_trip(tmp_path):
    write_toy_dataset(tmp_path, subjects=(1, 5), frames=3)
    names = sorted(p.name for p in (tmp_path / "annotations").iterdir())
    assert names == ["toy_info.json"] + [
        f"toy_subject{s}_{k}.json" for s in (1, 5) for k in ("body_param", "camera", "data", "joint_3d")
    ]
    data = json.loads(subject_file(tmp_path, "toy", 5, "data").read_text())
    assert set(data) == {"images", "annotations", "categories", "licenses"}
    assert all(isinstance(v, list) for v in data.values())
    assert json.loads((tmp_path / "annotations" / "toy_info.json").read_text())["name"] == "toy"

    ds = read_dataset(tmp_path)
    assert ds.names == ["toy"] and [f.subject for f in ds.subject_files] == [1, 5]
    samples = list(ds.iter_samples())
    assert len(samples) == 2 * 3 * 2
    image_ids = [s.image["id"] for s in samples]
    ann_ids = [s.annotation["id"] for s in samples]
    assert image_ids == ann_ids == list(range(1, 13))  # unique across subject files, never 0
    for s in samples:
        assert s.dataset == "toy" and s.image["subject"] == s.subject
        assert s.image_path == tmp_path / "images" / s.image["file_name"]
        np.testing.assert_allclose(s.joints_3d_cam, s.camera.world_to_camera(s.joints_3d_world))
        np.testing.assert_allclose(s.camera.project(s.joints_3d_world), s.joints_2d_h36m[:, :2], atol=1e-6)
        assert s.keypoints.shape == (17, 3) and s.annotation["num_keypoints"] == 13
        assert s.body_param["model"] == "anny" and len(s.body_param["trans"]) == 3
        assert s.annotation["area"] == pytest.approx(s.annotation["bbox"][2] * s.annotation["bbox"][3])
    # both cameras of a frame share its 3D joints and parameters
    a, b = samples[0], samples[1]
    assert a.image["frame_idx"] == b.image["frame_idx"] and a.image["cam_idx"] != b.image["cam_idx"]
    np.testing.assert_array_equal(a.joints_3d_world, b.joints_3d_world)
    assert not np.allclose(a.joints_3d_cam, b.joints_3d_cam)
    joint_3d = json.loads(subject_file(tmp_path, "toy", 1, "joint_3d").read_text())
    assert sorted(joint_3d["2"]["1"]) == ["0", "10", "5"]


def test_same_input_same_bytes(tmp_path):
    write_toy_dataset(tmp_path / "a", seed=4)
    write_toy_dataset(tmp_path / "b", seed=4)
    for path in (tmp_path / "a" / "annotations").iterdir():
        assert path.read_bytes() == (tmp_path / "b" / "annotations" / path.name).read_bytes()


def test_append_keeps_data_and_continues_ids(tmp_path):
    write_toy_dataset(tmp_path, subjects=(1, 2), frames=2)  # ids 1..8
    rng = np.random.default_rng(9)
    X = toy_pose(rng)
    image = {
        "file_name": "new.jpg",
        "width": 1000,
        "height": 1000,
        "action_idx": 3,
        "subaction_idx": 1,
        "cam_idx": 1,
        "frame_idx": 0,
    }
    with DatasetWriter(tmp_path, "toy") as w:
        img_id, ann_ids = w.add_frame(1, image, [annotation_for(H36M_CAMS[1], X)] * 2)
        img_id2, _ = w.add_frame(7, {**image, "file_name": "s7.jpg"}, [annotation_for(H36M_CAMS[1], X)])
    assert (img_id, ann_ids, img_id2) == (9, [9, 10], 10)
    with pytest.raises(LayoutError, match="one person per frame, but the frame has 2 annotations"):
        DatasetWriter(tmp_path, "toy").add_frame(
            1, image, [annotation_for(H36M_CAMS[1], X)] * 2, joints_3d_world=X
        )
    ds = read_dataset(tmp_path)
    assert [f.subject for f in ds.subject_files] == [1, 2, 7]
    samples = list(ds.iter_samples())
    assert len(samples) == 8 + 3
    assert len({s.annotation["id"] for s in samples}) == 11
    new = [s for s in samples if s.image["file_name"] == "new.jpg"]
    assert new[0].camera is not None and new[0].joints_3d_world is None  # camera kept, no 3D for action 3
    assert [s.person for s in new] == [0, 1]
    assert [s.camera for s in samples if s.subject == 7] == [None]  # subject 7 has no camera file
    info = json.loads((tmp_path / "annotations" / "toy_info.json").read_text())
    assert info["version"] == "test"  # the first writer's info survives


def test_writer_rejects_bad_input_and_writes_nothing_on_error(tmp_path):
    rng = np.random.default_rng(1)
    X = toy_pose(rng)
    ann = annotation_for(H36M_CAMS[1], X)
    image = {
        "file_name": "a.jpg",
        "width": 1000,
        "height": 1000,
        "action_idx": 2,
        "subaction_idx": 1,
        "cam_idx": 1,
        "frame_idx": 0,
    }
    with pytest.raises(LayoutError, match=r"missing field\(s\) \['frame_idx'\]"):
        with DatasetWriter(tmp_path, "toy") as w:
            w.add_frame(1, {k: v for k, v in image.items() if k != "frame_idx"}, [ann])
    assert not (tmp_path / "annotations").exists()
    w = DatasetWriter(tmp_path, "toy")
    with pytest.raises(LayoutError, match="'id' is assigned by DatasetWriter"):
        w.add_frame(1, {**image, "id": 5}, [ann])
    with pytest.raises(LayoutError, match="annotation 0: missing field 'joints_2d_h36m'"):
        w.add_frame(1, image, [{k: v for k, v in ann.items() if k != "joints_2d_h36m"}])
    bad_kp = np.array(ann["keypoints"])
    bad_kp[0, 2] = 3
    with pytest.raises(LayoutError, match=r"visibility .* expected values in \{0, 1, 2\}"):
        w.add_frame(1, image, [{**ann, "keypoints": bad_kp}])
    with pytest.raises(LayoutError, match="joints_3d_world shape"):
        w.add_frame(1, image, [ann], joints_3d_world=X[:16])
    w.add_frame(1, image, [ann], joints_3d_world=X)
    with pytest.raises(LayoutError, match="joint_3d of frame 2/1/0 differs"):
        w.add_frame(1, {**image, "cam_idx": 2}, [ann], joints_3d_world=X + 1.0)
    with pytest.raises(LayoutError, match="dataset name"):
        DatasetWriter(tmp_path, "bad name")
    with pytest.raises(LayoutError, match="cam_idx 1 already has a different camera"):
        w.add_camera(1, 1, H36M_CAMS[1])
        w.add_camera(1, 1, H36M_CAMS[2])


def test_body_param_validation():
    ok = validate_body_param(
        {"model": "anny", "pose": np.zeros(93), "shape": [1] * 6, "trans": [0, 0, 1], "x": 1}
    )
    assert ok["pose"] == [0.0] * 93 and ok["x"] == 1
    for bad, msg in [
        ({"pose": [0], "shape": [0], "trans": [0, 0, 0]}, "'model'"),
        ({"model": "anny", "pose": ["a"], "shape": [0], "trans": [0, 0, 0]}, "'pose'"),
        ({"model": "anny", "pose": [0], "shape": [[0, 1]], "trans": [0, 0, 0]}, "'shape'"),
        ({"model": "anny", "pose": [0], "shape": [0], "trans": [0, 0]}, "'trans' has 2 numbers"),
        ({"model": "anny", "pose": [float("nan")], "shape": [0], "trans": [0, 0, 0]}, "'pose'"),
    ]:
        with pytest.raises(LayoutError, match=msg):
            validate_body_param(bad, "f.json: frame 2/1/0")


def test_reader_errors_name_file_id_and_field(tmp_path):
    write_toy_dataset(tmp_path, subjects=(1,), frames=1)
    path = subject_file(tmp_path, "toy", 1, "data")
    data = json.loads(path.read_text())
    data["annotations"][1]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(LayoutError, match=r"toy_subject1_data.json: annotation id 2: field 'image_id' = 99"):
        list(read_dataset(tmp_path).iter_samples())
    data["annotations"][1]["image_id"] = 2
    data["images"][1]["cam_idx"] = 4
    path.write_text(json.dumps(data))
    with pytest.raises(
        LayoutError, match=r"image id 2: field 'cam_idx' = 4 is not in toy_subject1_camera.json"
    ):
        list(read_dataset(tmp_path).iter_samples())
    path.write_text(json.dumps(data)[:-5])
    with pytest.raises(LayoutError, match=r"toy_subject1_data.json: invalid JSON at line 1"):
        list(read_dataset(tmp_path).iter_samples())
    with pytest.raises(LayoutError, match="no annotations/ folder"):
        read_dataset(tmp_path / "nowhere")


@pytest.mark.skipif(not P2M_FORMAT.is_dir(), reason=f"shared Pose2Mesh-format fixture absent: {P2M_FORMAT}")
def test_reads_pose2mesh_human36m_layout():
    """Pose2Mesh's own Human3.6M files: smpl_param instead of body_param, no 2D joints in the annotations."""
    ds = read_dataset(P2M_FORMAT)
    assert ds.names == ["Human36M"] and [f.subject for f in ds.subject_files] == [1, 5, 7, 8]
    samples = list(ds.iter_samples())
    assert [s.image["id"] for s in samples] == [1, 2, 3, 4]
    for s in samples:
        assert s.body_param["model"] == "smpl" and len(s.body_param["pose"]) == 72
        assert s.joints_2d_h36m is None and s.joints_3d_world.shape == (17, 3)
        assert 3000 < s.joints_3d_cam[0, 2] < 7000  # pelvis 3 to 7 m in front of the camera
        uv = s.camera.project(s.joints_3d_world)  # no k, p in these files: pinhole
        x, y, w, h = s.annotation["bbox"]
        assert np.all((uv >= [x, y]) & (uv <= [x + w, y + h]))


def test_cameras_of_a_frame_share_its_3d_data(tmp_path):
    write_toy_dataset(tmp_path, subjects=(1,), frames=2)
    a, b = list(read_dataset(tmp_path).iter_samples())[:2]  # frame 0 seen by two cameras
    assert a.image["frame_idx"] == b.image["frame_idx"] and a.image["cam_idx"] != b.image["cam_idx"]
    assert a.joints_3d_world is b.joints_3d_world and not a.joints_3d_world.flags.writeable
    assert a.body_param is b.body_param
    assert a.image_path == tmp_path / "images" / a.image["file_name"] and "images_dir" not in repr(a)
