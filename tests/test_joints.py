"""Joint sets, skeletons, flip pairs and order conversions of p2m.joints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from p2m import joints as J

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MMPOSE_H36M = SHARED / "external-fixtures" / "mmpose-h36m"


def _swap_side(name: str) -> str:
    for a, b in (("L_", "R_"), ("R_", "L_"), ("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


def _connected_tree(edges, n: int) -> bool:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    return len({find(i) for i in range(n)}) == 1


@pytest.mark.parametrize(
    ("names", "skeleton", "flips", "n"),
    [
        (J.H36M_JOINTS, J.H36M_SKELETON, J.H36M_FLIP_PAIRS, 17),
        (J.COCO_JOINTS, J.COCO_SKELETON, J.COCO_FLIP_PAIRS, 17),
        (J.COCO19_JOINTS, J.COCO19_SKELETON, J.COCO19_FLIP_PAIRS, 19),
    ],
)
def test_joint_sets_are_consistent(names, skeleton, flips, n):
    assert len(names) == len(set(names)) == n
    assert all(0 <= a < n and 0 <= b < n and a != b for a, b in skeleton)
    assert len(set(map(frozenset, skeleton))) == len(skeleton)
    assert _connected_tree(skeleton, n)
    # every flip pair names a left/right pair, and every sided joint is in exactly one pair
    for a, b in flips:
        assert _swap_side(names[a]) == names[b], (names[a], names[b])
    sided = {i for i, nm in enumerate(names) if _swap_side(nm) != nm}
    assert sided == {i for pair in flips for i in pair}
    perm = J.flip_permutation(flips, n)
    assert np.array_equal(perm[perm], np.arange(n))
    assert [_swap_side(names[i]) for i in perm] == list(names)


def test_h36m_order_and_eval_subset():
    assert J.H36M_JOINTS[J.H36M_ROOT] == "Pelvis"
    assert J.H36M_JOINTS[:4] == ("Pelvis", "R_Hip", "R_Knee", "R_Ankle")
    assert len(J.H36M_SKELETON) == 16  # a tree over 17 joints
    excluded = set(range(17)) - set(J.H36M_EVAL_14)
    assert len(J.H36M_EVAL_14) == 14
    assert {J.H36M_JOINTS[i] for i in excluded} == {"Pelvis", "Torso", "Nose"}
    assert J.COCO19_JOINTS[J.COCO19_ROOT] == "Pelvis"


def test_index_from_names_handles_any_order():
    assert np.array_equal(J.MMPOSE_TO_H36M, np.arange(17))
    rng = np.random.default_rng(0)
    perm = rng.permutation(17)
    theirs_names = [J.MMPOSE_H36M_JOINTS[i] for i in perm]
    ours = rng.normal(size=(2, 17, 3))
    theirs = ours[:, perm]
    assert np.array_equal(J.mmpose_h36m_to_ours(theirs, theirs_names), ours)
    # the left-first listing puts the left leg at 1..3
    idx = J.h36m_index_from_names(J.MMPOSE_H36M_JOINTS_LEFT_FIRST)
    assert idx.tolist()[:7] == [0, 4, 5, 6, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown H36M joint name 'tail'"):
        J.h36m_index_from_names([*J.MMPOSE_H36M_JOINTS[:16], "tail"])
    with pytest.raises(ValueError, match="missing"):
        J.h36m_index_from_names([*J.MMPOSE_H36M_JOINTS[:16], "root"])


def test_mediapipe_map_matches_the_names():
    assert len(J.MEDIAPIPE_LANDMARKS) == 33
    mapped = [J.MEDIAPIPE_LANDMARKS[i] for i in J.MEDIAPIPE_TO_COCO]
    coco = [n.lower().replace("l_", "left_").replace("r_", "right_") for n in J.COCO_JOINTS]
    assert mapped == coco
    lm = np.arange(33 * 4, dtype=float).reshape(33, 4)
    out = J.mediapipe_to_coco(np.stack([lm, lm]))
    assert out.shape == (2, 17, 4)
    assert out[1, :, 0].tolist() == [4.0 * i for i in J.MEDIAPIPE_TO_COCO]
    with pytest.raises(ValueError, match="expected"):
        J.mediapipe_to_coco(np.zeros((17, 3)))


def test_mediapipe_names_match_mediapipe_itself():
    mp = pytest.importorskip("mediapipe", reason="mediapipe (extra 'detect') is not installed")
    assert tuple(lm.name.lower() for lm in mp.solutions.pose.PoseLandmark) == J.MEDIAPIPE_LANDMARKS


def _coco_example(rng) -> np.ndarray:
    kp = np.zeros((17, 3))
    kp[:, :2] = rng.uniform(0, 500, size=(17, 2))
    kp[:, 2] = 2
    return kp


def test_coco_to_h36m_values_and_visibility():
    rng = np.random.default_rng(1)
    kp = _coco_example(rng)
    h = J.coco_to_h36m(kp)
    name = {n: i for i, n in enumerate(J.H36M_JOINTS)}
    coco = {n: i for i, n in enumerate(J.COCO_JOINTS)}
    for n in ("R_Hip", "L_Knee", "R_Ankle", "L_Shoulder", "R_Elbow", "L_Wrist", "Nose"):
        assert np.array_equal(h[name[n]], kp[coco[n]])
    pelvis = (kp[coco["L_Hip"], :2] + kp[coco["R_Hip"], :2]) / 2
    neck = (kp[coco["L_Shoulder"], :2] + kp[coco["R_Shoulder"], :2]) / 2
    np.testing.assert_allclose(h[name["Pelvis"], :2], pelvis)
    np.testing.assert_allclose(h[name["Neck"], :2], neck)
    np.testing.assert_allclose(h[name["Torso"], :2], (pelvis + neck) / 2)
    assert h[name["Head"]].tolist() == [0.0, 0.0, 0.0]
    assert h[:, 2].tolist().count(0.0) == 1
    # an unlabelled left hip hides L_Hip, Pelvis and Torso, and nothing else
    kp[coco["L_Hip"]] = 0
    h2 = J.coco_to_h36m(kp)
    hidden = {J.H36M_JOINTS[i] for i in np.flatnonzero(h2[:, 2] == 0)}
    assert hidden == {"Head", "L_Hip", "Pelvis", "Torso"}
    assert h2[name["Pelvis"]].tolist() == [0.0, 0.0, 0.0]
    assert np.array_equal(h2[name["R_Hip"]], h[name["R_Hip"]])


def test_coco_conversions_are_batched():
    rng = np.random.default_rng(2)
    batch = np.stack([[_coco_example(rng) for _ in range(3)] for _ in range(2)])  # (2, 3, 17, 3)
    out = J.coco_to_h36m(batch)
    assert out.shape == (2, 3, 17, 3)
    np.testing.assert_array_equal(out[1, 2], J.coco_to_h36m(batch[1, 2]))
    c19 = J.coco_to_coco19(batch)
    assert c19.shape == (2, 3, 19, 3)
    np.testing.assert_allclose(c19[..., 17, :2], batch[..., 11:13, :2].mean(axis=-2))
    np.testing.assert_allclose(c19[..., 18, :2], batch[..., 5:7, :2].mean(axis=-2))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 17, 3\)"):
        J.coco_to_h36m(np.zeros((17, 2)))


@pytest.mark.skipif(not MMPOSE_H36M.is_dir(), reason=f"shared fixtures absent: {MMPOSE_H36M}")
def test_mmpose_fixture_data_is_right_first_despite_its_names():
    """h36m_coco.json lists 'left_hip' at index 1, but its numbers are in our (right-first) order.

    Evidence from the 3D joints of all 4 frames: with index 1 taken as the RIGHT hip (and 11 as the left
    shoulder), the nose lies in front of the thorax, and hip 1 is on the same side as shoulder 14.
    """
    ann = json.loads((MMPOSE_H36M / "h36m_coco.json").read_text())
    assert tuple(ann["categories"][0]["keypoints"]) == J.MMPOSE_H36M_JOINTS_LEFT_FIRST
    for a in ann["annotations"]:
        X = np.array(a["keypoints_3d"]).reshape(17, 4)[:, :3]
        up = X[J.H36M_JOINTS.index("Neck")] - X[0]
        for left, right in ((4, 1), (11, 14)):
            forward = np.cross(X[left] - X[right], up)
            nose_ahead = np.dot(X[9] - X[8], forward) / np.linalg.norm(forward)
            assert nose_ahead > 0.03  # metres
        assert np.linalg.norm(X[1] - X[14]) < np.linalg.norm(X[1] - X[11])
