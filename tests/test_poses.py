"""Pose sources: the shipped CMU pose tables, BVH folders, the joint-range sampler, and the table script."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from p2m.body.bvh import read_bvh
from p2m.body.poses import (
    CMU_CREDIT,
    PoseDataError,
    PoseSource,
    heading,
    load_pose_source,
    read_index,
    table_path,
)
from p2m.body.retarget import ANNY_CMU_MB_BONES, anny_rest, retarget
from p2m.body.sampler import DEFAULT_RANGES, JointRangeSampler
from p2m.errors import ConfigError
from p2m.joints import H36M_JOINTS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CMU = SHARED / "data" / "cmu-mocap"
FIXTURE = SHARED / "external-fixtures" / "cmu-mocap-bvh" / "scaled_131_01.bvh"
needs_cmu = pytest.mark.skipif(not (CMU / "index.csv").exists(), reason=f"CMU mocap data not found at {CMU}")
B = {name: i for i, name in enumerate(ANNY_CMU_MB_BONES)}
J = {name: i for i, name in enumerate(H36M_JOINTS)}
RIGID = ("LThumb", "LeftFingerBase", "LeftHandFinger1", "RThumb", "RightFingerBase", "RightHandFinger1")


@pytest.fixture(scope="module")
def train() -> PoseSource:
    return PoseSource.from_table(split="train")


@pytest.fixture(scope="module")
def evaluation() -> PoseSource:
    return PoseSource.from_table(split="eval")


def _script():
    spec = importlib.util.spec_from_file_location("make_pose_table", REPO / "scripts" / "make_pose_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ------------------------------------------------------------------------------------------ the shipped tables
def test_shipped_tables_are_small_and_credited(train, evaluation) -> None:
    sizes = [table_path(s).stat().st_size for s in ("train", "eval")]
    assert sum(sizes) < 5_000_000
    for table in (train, evaluation):
        assert table.poses.dtype == np.float32 and table.poses.shape[1:] == (31, 3)
        assert table.bone_names == ANNY_CMU_MB_BONES
        assert (
            table.credit == CMU_CREDIT
            and "mocap.cs.cmu.edu" in table.credit
            and "NSF EIA-0196217" in table.credit
        )
        assert CMU_CREDIT in table.description
        # every 4th frame of 120 fps, cgspeed's T-pose frame 0 dropped
        assert table.frame.min() >= 1 and np.all(table.frame % 4 == 1)
        assert np.isfinite(table.poses).all() and np.abs(table.poses).max() <= np.pi + 1e-3
        for bone in RIGID:
            assert not table.poses[:, B[bone]].any()
    with np.load(table_path("train")) as z:
        assert z["pose"].dtype == np.float16 and float(z["fps"]) == pytest.approx(30.0, abs=0.01)
        assert "local-ref" in str(z["source"])
    # whole subjects per split (cmu-mocap NOTES.md): eval = 2 and 3
    assert set(train.clip_subject.tolist()) == {1, 5, 6, 7, 8, 9}
    assert set(evaluation.clip_subject.tolist()) == {2, 3}
    assert len(train) > 20_000 and len(evaluation) > 5_000
    assert not set(train.clip_names) & set(evaluation.clip_names)
    info = evaluation.describe(0)
    assert info["clip"].startswith(("02/", "03/")) and info["subject"] in (2, 3) and info["frame"] == 1


@needs_cmu
def test_tables_follow_the_index_and_the_code(evaluation) -> None:
    rows = read_index(CMU)
    eval_clips = {r["file"].removesuffix(".bvh.gz") for r in rows if r["split"] == "eval"}
    assert set(evaluation.clip_names) == eval_clips
    counts = {r["file"].removesuffix(".bvh.gz"): int(r["frames"]) for r in rows}
    for c, name in enumerate(evaluation.clip_names):
        assert (evaluation.clip == c).sum() == len(range(1, counts[name], 4))
    # the shipped poses are what the retargeting code gives today (to float16 precision)
    clip = evaluation.clip_names.index("02/02_03")
    fresh = retarget(read_bvh(CMU / "02" / "02_03.bvh.gz"), slice(1, None, 4))
    shipped = evaluation.poses[evaluation.clip == clip]
    np.testing.assert_array_equal(evaluation.frame[evaluation.clip == clip], fresh.frames)
    np.testing.assert_allclose(shipped, fresh.pose, atol=2e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------------- drawing poses
def test_draw_is_seeded_and_yaw_options(train) -> None:
    a, ia = train.draw(64, np.random.default_rng(5), yaw="keep")
    b, ib = train.draw(64, np.random.default_rng(5), yaw="keep")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, train.poses[ia])
    assert not np.array_equal(ia, train.draw(64, np.random.default_rng(6), yaw="keep")[1])
    zero, iz = train.draw(64, np.random.default_rng(5), yaw="zero")
    np.testing.assert_array_equal(iz, ia)
    np.testing.assert_allclose(heading(zero[:, 0].astype(np.float64)), 0.0, atol=1e-4)
    np.testing.assert_array_equal(zero[:, 1:], a[:, 1:])  # only the root turns
    rand = train.sample(64, np.random.default_rng(5))
    assert rand.shape == (64, 31, 3) and rand.dtype == np.float32
    # a turn about the vertical keeps the body's tilt: the root's up axis has the same height
    up = [Rotation.from_rotvec(p[:, 0].astype(np.float64)).apply([0, 0, 1])[:, 2] for p in (a, zero, rand)]
    np.testing.assert_allclose(up[1], up[0], atol=1e-5)
    np.testing.assert_allclose(up[2], up[0], atol=1e-5)
    with pytest.raises(ConfigError, match="yaw"):
        train.sample(2, np.random.default_rng(0), yaw="north")


def test_sampler_is_seeded_and_within_its_ranges() -> None:
    source = PoseSource.sampler()
    assert source.is_sampler and len(source) == 0
    a = source.sample(500, np.random.default_rng(1), yaw="keep")
    np.testing.assert_array_equal(a, source.sample(500, np.random.default_rng(1), yaw="keep"))
    assert a.shape == (500, 31, 3) and a.dtype == np.float32
    for bone in (*RIGID, "LHipJoint", "RHipJoint"):
        assert not a[:, B[bone]].any()
    # single-axis knees: exactly about +X, inside the range, and both sides used across the range
    ((_, lo, hi),) = DEFAULT_RANGES["LeftLeg"]
    for knee in (a[:, B["LeftLeg"]], a[:, B["RightLeg"]]):
        np.testing.assert_allclose(knee[:, 1:], 0.0, atol=1e-6)
        assert lo - 1e-5 <= knee[:, 0].min() and knee[:, 0].max() <= hi + 1e-5
        assert knee[:, 0].max() - knee[:, 0].min() > 0.9 * (hi - lo)
    # the right side mirrors the left: same distribution of hip flexion (about +X), mirrored abduction
    left, right = a[:, B["LeftUpLeg"]], a[:, B["RightUpLeg"]]
    assert abs(left[:, 0].mean() - right[:, 0].mean()) < 0.1
    assert abs(left[:, 1].mean() + right[:, 1].mean()) < 0.1
    assert not np.array_equal(left[:, 0], right[:, 0])  # drawn independently
    rest = JointRangeSampler(scale=0.0).sample(10, np.random.default_rng(0))
    assert not rest[:, 1:].any() and rest[:, 0, 2].std() > 0.5  # only the root yaw is left
    with pytest.raises(ValueError, match="unknown bones"):
        JointRangeSampler(ranges={"Tail": (((1.0, 0.0, 0.0), 0.0, 1.0),)})


@pytest.mark.body
def test_sampler_axes_are_annys_rest_directions() -> None:
    from p2m.body import sampler

    rest = anny_rest()
    h = {name: rest.heads[i] for i, name in enumerate(rest.names)}
    np.testing.assert_allclose(sampler._L_UPPER_ARM, h["LeftForeArm"] - h["LeftArm"], atol=2e-4)
    np.testing.assert_allclose(sampler._L_FOREARM, h["LeftHand"] - h["LeftForeArm"], atol=2e-4)


@pytest.mark.body
@pytest.mark.parametrize("spec", ["sampler", "cmu-train"])
def test_poses_are_plausible_on_the_body(spec: str) -> None:
    from p2m.body import create

    body = create("anny", topology="notoes_collapse10pc")
    pose = load_pose_source(spec).sample(256, np.random.default_rng(0), yaw="zero")
    with torch.no_grad():
        joints = body(torch.as_tensor(pose)).joints.numpy()
    z = joints[..., 2]
    up = np.ones(len(pose), bool)
    if spec == "cmu-train":  # the playground clips hang, climb and go under bars: check the upright ones
        up = Rotation.from_rotvec(pose[:, 0].astype(np.float64)).apply([0, 0, 1])[:, 2] > 0.9
        assert up.mean() > 0.8
    head_above = z[up, J["Head"]] > z[up, J["Pelvis"]] + 0.3
    feet_below = np.maximum(z[up, J["L_Ankle"]], z[up, J["R_Ankle"]]) < z[up, J["Pelvis"]]
    assert head_above.mean() > 0.99 and feet_below.mean() > 0.95
    # limb lengths are the body's: nothing is torn apart
    thigh = np.linalg.norm(joints[:, J["L_Knee"]] - joints[:, J["L_Hip"]], axis=-1)
    assert thigh.std() < 0.02


# --------------------------------------------------------------------------------------- BVH folders and specs
@needs_cmu
def test_user_bvh_folder(tmp_path: Path) -> None:
    folder = tmp_path / "my_mocap"
    (folder / "a").mkdir(parents=True)
    shutil.copy(CMU / "09" / "09_01.bvh.gz", folder / "a" / "run.bvh.gz")
    if FIXTURE.exists():
        shutil.copy(FIXTURE, folder / "hop.bvh")
    source = PoseSource.from_bvh_dir(folder, every=8)
    assert source.clip_names[0] == "a/run" and len(source.clip_names) == (2 if FIXTURE.exists() else 1)
    run = source.frame[source.clip == 0]
    np.testing.assert_array_equal(run, np.arange(1, 149, 8))  # T-pose frame dropped (148 captured frames)
    if FIXTURE.exists():
        assert source.frame[source.clip == 1][0] == 0  # no T-pose frame in the 3dsMax fixture: keep frame 0
    assert source.credit == "" and source.clip_subject.tolist() == [-1] * len(source.clip_names)
    same = load_pose_source(str(folder / "a" / "run.bvh.gz"))
    np.testing.assert_allclose(same.poses[::2], source.poses[source.clip == 0], atol=1e-6)
    with pytest.raises(PoseDataError, match="split 'train' asked for but there is no index.csv"):
        PoseSource.from_bvh_dir(folder, split="train")
    with pytest.raises(ConfigError, match="every must be >= 1"):
        PoseSource.from_bvh_dir(folder, every=0)


def test_spec_errors_and_sources(tmp_path: Path, train, evaluation) -> None:
    assert len(load_pose_source("cmu")) == len(train) + len(evaluation)
    both = load_pose_source("cmu")
    assert both.describe(len(train))["clip"] == evaluation.clip_names[0]
    assert load_pose_source("cmu-eval").name.endswith("cmu_poses_eval.npz")
    assert load_pose_source("sampler").is_sampler
    with pytest.raises(ConfigError, match="expected cmu-train, cmu-eval, cmu, sampler"):
        load_pose_source("walking")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoseDataError, match="empty: no .bvh or .bvh.gz files"):
        load_pose_source(tmp_path / "empty")
    with pytest.raises(PoseDataError, match="nothing.npz: pose table not found"):
        load_pose_source(tmp_path / "nothing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, pose=np.zeros((2, 31, 3)))
    with pytest.raises(PoseDataError, match=r"bad\.npz: missing arrays format, bone_names"):
        PoseSource.from_table(bad)
    not_zip = tmp_path / "junk.npz"
    not_zip.write_bytes(gzip.compress(b"junk"))
    with pytest.raises(PoseDataError, match="junk.npz: not a readable .npz pose table"):
        PoseSource.from_table(not_zip)


# -------------------------------------------------------------------------------------------- the table script
def test_npz_bytes_are_reproducible(tmp_path: Path) -> None:
    mod = _script()
    arrays = {"a": np.arange(5, dtype=np.float16), "b": np.array("text")}
    assert mod.npz_bytes(arrays) == mod.npz_bytes(dict(arrays))
    path = tmp_path / "t.npz"
    path.write_bytes(mod.npz_bytes(arrays))
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], arrays["a"])


@needs_cmu
def test_make_pose_table_on_two_clips(tmp_path: Path) -> None:
    mod = _script()
    rows = [r for r in read_index(CMU) if r["file"] in ("09/09_01.bvh.gz", "02/02_03.bvh.gz")]
    arrays = mod.build_split(CMU, rows, every=4)
    path = tmp_path / "table.npz"
    path.write_bytes(mod.npz_bytes(arrays))
    table = PoseSource.from_table(path)
    assert table.clip_names == ("02/02_03", "09/09_01") and table.clip_subject.tolist() == [2, 9]
    assert len(table) == len(range(1, 174, 4)) + len(range(1, 149, 4))
    assert mod.npz_bytes(mod.build_split(CMU, rows, every=4)) == path.read_bytes()
