"""p2m.camera against real Human3.6M frames (mmpose's fixtures) and on its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2m.camera import Camera, bbox_from_joints, expand_bbox_to_aspect
from p2m.errors import LayoutError
from p2m.joints import MMPOSE_H36M_JOINTS, h36m_index_from_names

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MMPOSE_H36M = SHARED / "external-fixtures" / "mmpose-h36m"
needs_fixture = pytest.mark.skipif(
    not (MMPOSE_H36M / "h36m_coco.json").is_file(), reason=f"shared Human3.6M fixtures absent: {MMPOSE_H36M}"
)


# The fixture lists its joints left-first, but its numbers are right-first like ours (tests/test_joints.py proves
# it geometrically), so the boundary conversion goes by mmpose's dataset_info names.
FIXTURE_TO_OURS = h36m_index_from_names(MMPOSE_H36M_JOINTS)


def _h36m_frames():
    """(file_name, Camera, joints world mm (17, 3), keypoints px (17, 2)) for the 4 fixture frames, our order."""
    ann = json.loads((MMPOSE_H36M / "h36m_coco.json").read_text())
    cams = json.loads((MMPOSE_H36M / "cameras.json").read_text())
    idx = FIXTURE_TO_OURS
    images = {im["id"]: im for im in ann["images"]}
    out = []
    for a in ann["annotations"]:
        fn = images[a["image_id"]]["file_name"]  # S1_Directions_1.54138969_000001.jpg
        subject, cam_id = fn.split("_")[0], fn.split(".")[1].split("_")[0]
        c = cams[f"{subject}_{cam_id}"]
        cam = Camera.from_mmpose(c["R"], c["T"], c["f"], c["c"], c["k"], c["p"])
        X = np.array(a["keypoints_3d"]).reshape(17, 4)[idx, :3] * 1000.0
        uv = np.array(a["keypoints"]).reshape(17, 3)[idx, :2]
        out.append((fn, cam, X, uv))
    return out


@needs_fixture
def test_reproduces_human36m_keypoints_with_distortion():
    errors = []
    pinhole = []
    swapped = []
    for _fn, cam, X, uv in _h36m_frames():
        assert cam.has_distortion
        errors.append(np.linalg.norm(cam.project(X) - uv, axis=1))
        pinhole.append(np.linalg.norm(cam.project(X, distort=False) - uv, axis=1))
        trap = Camera(cam.R, cam.t, cam.f, cam.c, cam.k, cam.p[::-1])  # VideoPose3D's [p2, p1] order
        swapped.append(np.linalg.norm(trap.project(X) - uv, axis=1))
    assert np.max(errors) < 0.01
    assert np.max(pinhole) > 0.1  # so the distortion really matters here
    assert np.max(swapped) > 0.1  # and so does the p1/p2 order


@needs_fixture
def test_extrinsics_match_camera_space_joints_and_pose2mesh_cameras():
    body = np.load(MMPOSE_H36M / "test_h36m_body3d.npz", allow_pickle=True)
    names = [str(n).split("/")[-1] for n in body["imgname"]]
    for fn, cam, X, _uv in _h36m_frames():
        S = body["S"][names.index(fn)][FIXTURE_TO_OURS, :3] * 1000.0
        np.testing.assert_allclose(cam.world_to_camera(X), S, atol=0.01)  # mm
    # make_derived.py's independent conversion to Pose2Mesh's camera files agrees with from_mmpose
    ann_dir = MMPOSE_H36M / "pose2mesh-format" / "Human36M" / "annotations"
    cams = json.loads((MMPOSE_H36M / "cameras.json").read_text())
    c = cams["S1_54138969"]
    ours = Camera.from_mmpose(c["R"], c["T"], c["f"], c["c"])
    theirs = Camera.from_dict(json.loads((ann_dir / "Human36M_subject1_camera.json").read_text())["1"])
    np.testing.assert_allclose(ours.R, theirs.R, atol=1e-12)
    np.testing.assert_allclose(ours.t, theirs.t, atol=1e-9)


def _random_camera(rng, distort: bool = False) -> Camera:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    kw = {"k": [-0.2, 0.24, -0.003], "p": [-0.0014, -0.001]} if distort else {}
    return Camera(R=R, t=rng.normal(0, 1000, 3), f=[1145.0, 1143.0], c=[512.0, 515.0], **kw)


def test_world_camera_round_trip_and_projection_paths():
    rng = np.random.default_rng(0)
    cam = _random_camera(rng, distort=True)
    X = rng.normal(0, 2000, size=(4, 5, 17, 3))
    Xc = cam.world_to_camera(X)
    assert Xc.shape == X.shape
    np.testing.assert_allclose(Xc[2, 3, 4], cam.R @ X[2, 3, 4] + cam.t)
    np.testing.assert_allclose(cam.camera_to_world(Xc), X, atol=1e-9)
    np.testing.assert_allclose(cam.centre, cam.camera_to_world(np.zeros(3)), atol=1e-9)
    np.testing.assert_allclose(cam.project(X), cam.project_camera(Xc))
    Xc[..., 2] = np.abs(Xc[..., 2]) + 1000.0
    uv = cam.project_camera(Xc, distort=False)
    np.testing.assert_allclose(uv, Xc[..., :2] / Xc[..., 2:] * cam.f + cam.c)
    assert not np.allclose(cam.project_camera(Xc), uv)
    zero = Camera(cam.R, cam.t, cam.f, cam.c, k=[0, 0, 0], p=[0, 0])
    assert not zero.has_distortion
    np.testing.assert_allclose(zero.project_camera(Xc), uv)


def test_look_at_and_identity():
    cam = Camera.look_at(
        eye=[3000.0, -4000.0, 1500.0], target=[0.0, 0.0, 900.0], f=[1000, 1000], c=[500, 400]
    )
    np.testing.assert_allclose(cam.centre, [3000.0, -4000.0, 1500.0], atol=1e-9)
    np.testing.assert_allclose(cam.project([0.0, 0.0, 900.0]), [500, 400], atol=1e-9)
    head, foot = cam.project([[0.0, 0.0, 1700.0], [0.0, 0.0, 0.0]])
    assert head[1] < 400 < foot[1]  # world up (z) is image up
    ident = Camera.identity(f=[800, 800], c=[320, 240])
    np.testing.assert_array_equal(ident.world_to_camera([[1.0, 2.0, 3.0]]), [[1.0, 2.0, 3.0]])


def test_dict_round_trip_and_errors():
    rng = np.random.default_rng(3)
    cam = _random_camera(rng, distort=True)
    record = json.loads(json.dumps(cam.to_dict()))
    assert set(record) == {"R", "t", "f", "c", "k", "p"}
    back = Camera.from_dict(record)
    for key in ("R", "t", "f", "c", "k", "p"):
        np.testing.assert_array_equal(getattr(back, key), getattr(cam, key))
    assert set(_random_camera(rng).to_dict()) == {"R", "t", "f", "c"}
    with pytest.raises(LayoutError, match=r"S1_camera.json: cam_idx 2: missing field\(s\) \['t'\]"):
        Camera.from_dict({k: v for k, v in record.items() if k != "t"}, where="S1_camera.json: cam_idx 2")
    with pytest.raises(LayoutError, match="'R': not a rotation"):
        Camera.from_dict({**record, "R": [[2, 0, 0], [0, 1, 0], [0, 0, 1]]})
    with pytest.raises(LayoutError, match="'f'.*positive"):
        Camera.from_dict({**record, "f": [-1, 1000]})
    with pytest.raises(LayoutError, match="'c'.*is not 2 numbers"):
        Camera.from_dict({**record, "c": [1, 2, 3]})
    with pytest.raises(LayoutError, match="expected an object"):
        Camera.from_dict([1, 2, 3])
    with pytest.raises(AttributeError):
        cam.t = np.zeros(3)  # frozen
    with pytest.raises(ValueError):
        cam.t[0] = 1.0  # read-only arrays


def test_bbox_from_joints():
    j = np.array([[100.0, 200.0, 2], [300.0, 600.0, 1], [50.0, 900.0, 0], [np.nan, 0.0, 2]])
    assert bbox_from_joints(j, margin=0.0) == [100.0, 200.0, 200.0, 400.0]
    assert bbox_from_joints(j) == pytest.approx([80.0, 160.0, 240.0, 480.0])  # default margin 0.1 each side
    assert bbox_from_joints(j[:, :2], vis=[1, 1, 1, 0], margin=0.0) == [50.0, 200.0, 250.0, 700.0]
    assert bbox_from_joints(j, margin=0.5, image_size=(350, 640)) == [0.0, 0.0, 350.0, 640.0]
    with pytest.raises(ValueError, match="no visible joint"):
        bbox_from_joints(j, vis=[0, 0, 0, 0])
    box = expand_bbox_to_aspect([100.0, 200.0, 200.0, 400.0])
    assert box[2] / box[3] == pytest.approx(0.75)
    assert (box[0] + box[2] / 2, box[1] + box[3] / 2) == pytest.approx((200.0, 400.0))
    assert box[3] == pytest.approx(400.0)  # only the short side grows
