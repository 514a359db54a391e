"""The BVH reader: CMU files parse with the documented convention, FK is rigid, bad files get precise errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from p2m.body.bvh import CMU_UNIT_M, BVHError, read_bvh
from p2m.errors import P2MError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CMU = SHARED / "data" / "cmu-mocap"
FIXTURE = SHARED / "external-fixtures" / "cmu-mocap-bvh"
WALK = CMU / "02" / "02_01.bvh.gz"

needs_cmu = pytest.mark.skipif(not WALK.exists(), reason=f"CMU mocap data not found at {CMU}")
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "scaled_131_01.bvh").exists(), reason=f"bvh11 CMU fixture not found at {FIXTURE}"
)

CMU_JOINTS = (
    "Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase", "RHipJoint", "RightUpLeg",
    "RightLeg", "RightFoot", "RightToeBase", "LowerBack", "Spine", "Spine1", "Neck", "Neck1", "Head",
    "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftFingerBase", "LeftHandIndex1", "LThumb",
    "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RightFingerBase", "RightHandIndex1", "RThumb",
)  # fmt: skip

TINY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Arm
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 2 0 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.5
0 0 0 0 0 0 0 0 0
1 2 3 90 0 0 30 40 50
"""


@pytest.fixture(scope="module")
def walk():
    return read_bvh(WALK)


def _write(tmp_path: Path, text: str, name: str = "clip.bvh") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@needs_cmu
def test_cmu_walk_header(walk) -> None:
    sk = walk.skeleton
    assert sk.names == CMU_JOINTS
    assert sk.num_joints == 31 and sk.num_channels == 96
    assert sk.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")
    assert all(c == ("Zrotation", "Yrotation", "Xrotation") for c in sk.channels[1:])
    # Frames: header of the file, counted independently from its text.
    text = gzip.decompress(WALK.read_bytes()).decode()
    header = int(text.split("Frames:")[1].split()[0])
    assert walk.num_frames == header == 344 and walk.values.shape == (344, 96)
    assert walk.frame_time == pytest.approx(0.0083333) and walk.fps == pytest.approx(120.0, abs=1e-3)
    # 7 End Sites: toes, head, index fingers, thumbs; zero-length joints as NOTES.md lists them.
    ends = sorted(sk.names[p] for p in sk.end_parents)
    assert ends == sorted(
        ["LeftToeBase", "RightToeBase", "Head", "LeftHandIndex1", "LThumb", "RightHandIndex1", "RThumb"]
    )
    zero = {n for n, o in zip(sk.names, sk.offsets) if not np.any(o)}
    assert zero == {
        "Hips",
        "LHipJoint",
        "RHipJoint",
        "LowerBack",
        "Neck",
        "LeftShoulder",
        "RightShoulder",
        "LeftFingerBase",
        "RightFingerBase",
        "LThumb",
        "RThumb",
    }
    np.testing.assert_allclose(sk.offsets[sk.index("LeftUpLeg")], [1.65674, -1.80282, 0.62477])
    assert [sk.names[p] for p in sk.parents[1:4]] == ["Hips", "LHipJoint", "LeftUpLeg"]
    # cgspeed's synthetic T-pose frame 0.
    assert walk.joint_values(sk.index("LeftUpLeg"))[0, 0] == -21
    assert walk.joint_values(sk.index("Neck1"))[0, 2] == 21


@needs_cmu
def test_plain_and_gzip_read_the_same(walk, tmp_path: Path) -> None:
    plain = tmp_path / "02_01.bvh"
    plain.write_bytes(gzip.decompress(WALK.read_bytes()))
    other = read_bvh(plain)
    assert other.skeleton.names == walk.skeleton.names
    np.testing.assert_array_equal(other.values, walk.values)


@needs_cmu
def test_fk_is_rigid_and_y_up(walk) -> None:
    pos, rot, ends = walk.forward_kinematics(scale=CMU_UNIT_M)
    sk = walk.skeleton
    lengths = np.linalg.norm(pos[:, 1:] - pos[:, sk.parents[1:]], axis=-1)
    assert lengths.std(0).max() < 1e-9
    np.testing.assert_allclose(lengths[0], np.linalg.norm(sk.offsets[1:], axis=1) * CMU_UNIT_M, atol=1e-12)
    np.testing.assert_allclose(
        rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-9
    )
    head_end = ends[:, list(sk.end_parents).index(sk.index("Head"))]
    toes = pos[:, [sk.index("LeftToeBase"), sk.index("RightToeBase")], 1].min(1)
    assert np.all(head_end[:, 1] - toes > 1.2)  # Y is up, metres
    assert 0.85 < pos[1:, 0, 1].mean() < 1.1  # the root stands about a metre high
    # frame 0 (T-pose): legs vertical, arms horizontal, the face (toes) towards +Z
    leg = pos[0, sk.index("LeftFoot")] - pos[0, sk.index("LeftUpLeg")]
    arm = pos[0, sk.index("LeftHand")] - pos[0, sk.index("LeftArm")]
    assert abs(leg[0]) / np.linalg.norm(leg) < 0.05 and arm[0] / np.linalg.norm(arm) > 0.98
    assert ends[0, list(sk.end_parents).index(sk.index("LeftToeBase")), 2] > pos[0, sk.index("LeftFoot"), 2]


def test_euler_order_and_fk_on_a_tiny_file(tmp_path: Path) -> None:
    m = read_bvh(_write(tmp_path, TINY))
    assert m.skeleton.names == ("Hips", "Arm") and m.num_frames == 2 and m.frame_time == 0.5
    rot = m.local_rotations()
    expected = Rotation.from_euler("ZYX", [30, 40, 50], degrees=True).as_matrix()  # Rz @ Ry @ Rx
    np.testing.assert_allclose(rot[1, 1], expected, atol=1e-12)
    np.testing.assert_allclose(rot[0], np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    pos, _, ends = m.forward_kinematics(scale=2.0)
    np.testing.assert_allclose(pos[1, 0], [2, 4, 6])  # root position channels, scaled
    np.testing.assert_allclose(pos[1, 1], [2, 6, 6], atol=1e-12)  # root Z 90 deg turns OFFSET +X into +Y
    np.testing.assert_allclose(ends[0, 0], [6, 0, 0])
    np.testing.assert_allclose(
        ends[1, 0],
        pos[1, 1] + 2.0 * (Rotation.from_euler("Z", 90, degrees=True).as_matrix() @ expected @ [2, 0, 0]),
    )


@needs_fixture
def test_fixture_in_metres() -> None:
    m = read_bvh(FIXTURE / "scaled_131_01.bvh")
    assert m.skeleton.num_joints == 31 and m.num_frames == 995
    pos, _, _ = m.forward_kinematics()
    sk = m.skeleton
    shin = np.linalg.norm(pos[:, sk.index("LeftAnkle")] - pos[:, sk.index("LeftKnee")], axis=-1)
    assert shin.std() < 1e-9 and shin.mean() == pytest.approx(0.3907, abs=1e-4)  # its NOTES.md


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        # a truncated motion line
        (
            lambda t: t.replace("1 2 3 90 0 0 30 40 50", "1 2 3 90 0 0 30 40"),
            r"line 20: motion frame 1 has 8 values, expected 9",
        ),
        # a CHANNELS line that lists fewer names than it declares
        (
            lambda t: t.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 3 Zrotation Yrotation"),
            r"line 9: joint 'Arm': CHANNELS declares 3 channels but lists 2",
        ),
        (
            lambda t: t.replace("Frames: 2", "Frames: 3"),
            r"line 20: the file has 2 motion lines but its header \(line 17\) says Frames: 3",
        ),
        (lambda t: t.replace("30 40 50", "30 x 50"), r"line 20: value 8 \('x'\) is not a number"),
        (
            lambda t: t.replace(
                "Zrotation Yrotation Xrotation\n    End", "Zrotation Yrotation Wrotation\n    End"
            ),
            r"line 9: joint 'Arm': unknown channel 'Wrotation'",
        ),
        (lambda t: t.split("MOTION")[0], r"no 'MOTION' section"),
        (
            lambda t: t.replace("OFFSET 1 0 0", "OFFSET 1 zero 0"),
            r"line 8: expected a number \(OFFSET y of Arm\), found 'zero'",
        ),
        (
            lambda t: t.replace("Frame Time: 0.5", "Frame Time: soon"),
            r"line 18: expected a number of seconds",
        ),
        (
            lambda t: t.replace("  }\n}\nMOTION", "  }\nMOTION"),
            r"line 14: unexpected end of HIERARCHY, expected 'JOINT', 'End Site' or '}'",
        ),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, edit, pattern: str) -> None:
    path = _write(tmp_path, edit(TINY), "bad.bvh")
    with pytest.raises(BVHError, match=pattern) as info:
        read_bvh(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, P2MError)


def test_missing_and_broken_gzip(tmp_path: Path) -> None:
    with pytest.raises(BVHError, match="file not found"):
        read_bvh(tmp_path / "nope.bvh")
    broken = tmp_path / "broken.bvh.gz"
    broken.write_bytes(gzip.compress(TINY.encode())[:40])
    with pytest.raises(BVHError, match=r"broken\.bvh\.gz: broken gzip stream"):
        read_bvh(broken)
    # a gzip stream is recognised by its bytes, whatever the file is called
    named_plain = tmp_path / "clip.bvh"
    named_plain.write_bytes(gzip.compress(TINY.encode()))
    assert read_bvh(named_plain).num_frames == 2


@needs_cmu
def test_truncated_real_file(tmp_path: Path) -> None:
    lines = gzip.decompress(WALK.read_bytes()).decode().splitlines()
    lines[-1] = " ".join(lines[-1].split()[:95])
    path = tmp_path / "02_01_cut.bvh.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(
        BVHError, match=rf"02_01_cut\.bvh\.gz: line {len(lines)}: motion frame 343 has 95 values, expected 96"
    ):
        read_bvh(path)
