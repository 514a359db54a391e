"""The body model layer: anny topologies, regressors, pose conventions, cache reuse, SMPL errors."""

from __future__ import annotations

import logging
import math
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from p2m.body import TOPOLOGIES, BodyOutput, anny_model, create, regress_joints, regressors, resolve_topology
from p2m.body.anny_model import anny_cache_file, load_anny, warp_available
from p2m.errors import BodyModelError
from p2m.joints import COCO_JOINTS, H36M_JOINTS

REPO = Path(__file__).resolve().parents[1]
H36M = {name: i for i, name in enumerate(H36M_JOINTS)}
COCO = {name: i for i, name in enumerate(COCO_JOINTS)}
EXPECTED_VERTICES = {
    "full": 13718,
    "notoes": 12272,
    "notoes_collapse10pc": 1229,
    "notoes_collapse5pc": 615,
    "notoes_collapse3pc": 369,
}


@pytest.fixture(scope="module")
def bodies():
    """One anny layer per topology (default rig cmu_mb, default skinning), shared by the module."""
    return {name: create("anny", topology=name) for name in TOPOLOGIES}


def _random_inputs(batch: int, seed: int = 0, scale: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(batch, 31, 3, generator=gen) * scale
    shape = torch.rand(batch, 6, generator=gen)
    return pose, shape


# ------------------------------------------------------------------------------------------------ no anny needed
def test_topology_names_and_aliases():
    assert {name: t.num_vertices for name, t in TOPOLOGIES.items()} == EXPECTED_VERTICES
    assert resolve_topology("1229").name == "notoes_collapse10pc"
    assert resolve_topology(369).name == "notoes_collapse3pc"
    assert resolve_topology("anny").name == "full"
    with pytest.raises(ValueError, match="notoes_collapse10pc"):
        resolve_topology("lowpoly")
    with pytest.raises(ValueError, match="anny, smpl"):
        create("mano")


def test_regress_joints_is_a_weighted_mean():
    vertices = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    regressor = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    joints = regress_joints(vertices, regressor)
    assert joints.shape == (1, 2, 3)
    assert torch.equal(joints[0, 0], (vertices[0, 0] + vertices[0, 1]) / 2)
    assert torch.equal(joints[0, 1], vertices[0, 3])
    with pytest.raises(ValueError, match="4 vertices"):
        regress_joints(vertices, torch.ones(2, 5))


def test_no_device_literals_under_p2m():
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "p2m").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ".cuda(" in line
    ]
    assert offenders == []


def test_prune_intermediates_keeps_compact_files(tmp_path):
    from p2m.body.prepare import prune_intermediates

    folder = tmp_path / "v14"
    folder.mkdir()
    names = [
        "load_data_a.safetensors",
        "build_model_data_b.safetensors",
        "build_compact_model_data_c.safetensors",
    ]
    for i, name in enumerate(names):
        (folder / name).write_bytes(b"x" * (10 + i))
    deleted, freed = prune_intermediates(tmp_path)
    assert sorted(p.name for p in deleted) == sorted(names[:2])
    assert freed == 10 + 11
    assert [p.name for p in folder.iterdir()] == [names[2]]


# ------------------------------------------------------------------------------------------------ SMPL backend
def _write_fake_smpl(folder: Path, num_vertices: int = 6890) -> Path:
    """A structurally valid SMPL file with random numbers (NOT the SMPL model): exercises the code path only."""
    rng = np.random.default_rng(0)
    parents = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    weights = rng.random((num_vertices, 24))
    regressor = rng.random((24, num_vertices))
    data = {
        "v_template": rng.normal(size=(num_vertices, 3)) * 0.3,
        "shapedirs": rng.normal(size=(num_vertices, 3, 10)) * 1e-3,
        "posedirs": np.zeros((num_vertices, 3, 207), dtype=np.float32),
        "J_regressor": regressor / regressor.sum(1, keepdims=True),
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.array([[p % 2**32 for p in parents], list(range(24))], dtype=np.int64),
        "f": rng.integers(0, num_vertices, size=(100, 3)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(data))
    return path


def test_smpl_without_model_path_names_the_file_and_source(monkeypatch):
    monkeypatch.delenv("P2M_SMPL_DIR", raising=False)
    with pytest.raises(BodyModelError) as info:
        create("smpl")
    message = str(info.value)
    assert "SMPL_NEUTRAL.pkl" in message and "model_path" in message and "P2M_SMPL_DIR" in message
    assert "smpl.is.tue.mpg.de" in message


def test_smpl_missing_model_file_names_the_paths(tmp_path):
    with pytest.raises(BodyModelError) as info:
        create("smpl", model_path=tmp_path, gender="female")
    message = str(info.value)
    assert str(tmp_path / "SMPL_FEMALE.pkl") in message
    assert str(tmp_path / "smpl" / "SMPL_FEMALE.pkl") in message


def test_smpl_missing_h36m_regressor_names_it(tmp_path):
    model = _write_fake_smpl(tmp_path / "models")
    with pytest.raises(BodyModelError) as info:
        create("smpl", model_path=model)
    message = str(info.value)
    assert "J_regressor_h36m_correct.npy" in message
    assert str(tmp_path / "models" / "J_regressor_h36m_correct.npy") in message


def test_smpl_missing_smplx_says_how_to_install(tmp_path, monkeypatch):
    model = _write_fake_smpl(tmp_path)
    np.save(tmp_path / "J_regressor_h36m_correct.npy", np.full((17, 6890), 1 / 6890))
    monkeypatch.setitem(sys.modules, "smplx", None)
    with pytest.raises(BodyModelError, match=re.escape("pip install 'p2m[smpl]'")):
        create("smpl", model_path=model)


def test_smpl_layer_runs_with_user_files(tmp_path):
    _write_fake_smpl(tmp_path)
    rng = np.random.default_rng(1)
    h36m = rng.random((17, 6890))
    np.save(tmp_path / "J_regressor_h36m_correct.npy", h36m / h36m.sum(1, keepdims=True))
    body = create("smpl", model_path=tmp_path)
    assert (body.num_bones, body.num_shape, body.num_vertices) == (24, 10, 6890)
    assert body.coco_regressor is None and body.state_dict() == {}
    pose = torch.randn(3, 24, 3) * 0.2
    trans = torch.tensor([[1.0, 2.0, 3.0]])
    out = body(pose, torch.zeros(3, 10), trans)
    assert out.vertices.shape == (3, 6890, 3) and out.joints.shape == (3, 17, 3) and out.keypoints is None
    assert out.bone_heads.shape == (3, 24, 3)
    torch.testing.assert_close(out.joints, body.h36m_regressor @ out.vertices)
    moved = body(pose, None, None).vertices + trans
    torch.testing.assert_close(out.vertices, moved, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ anny
@pytest.mark.body
def test_topologies_vertices_faces_and_rig(bodies):
    for name, body in bodies.items():
        assert body.num_vertices == EXPECTED_VERTICES[name] == TOPOLOGIES[name].num_vertices
        assert body.topology == name and body.rig == "cmu_mb"
        faces = body.faces
        assert faces.dtype == torch.long and faces.shape == (TOPOLOGIES[name].num_faces, 3)
        assert int(faces.min()) == 0 and int(faces.max()) == body.num_vertices - 1
        assert (body.num_bones, body.num_shape) == (31, 6)
        assert body.bone_names[:3] == ["Hips", "LHipJoint", "LeftUpLeg"] and body.bone_parents[0] == -1
        assert body.rest_joints.shape == (31, 3) and torch.all(body.rest_joints[0] == 0)
        assert body.state_dict() == {}  # the body model never goes into checkpoints


@pytest.mark.body
def test_regressor_rows_are_convex_weights(bodies):
    for body in bodies.values():
        for regressor in (body.h36m_regressor, body.coco_regressor):
            assert regressor.shape == (17, body.num_vertices) and regressor.dtype == torch.float32
            assert float(regressor.min()) >= 0.0
            torch.testing.assert_close(regressor.sum(1), torch.ones(17), atol=1e-5, rtol=0)


@pytest.mark.body
def test_batched_forward_shapes_dtype_and_broadcast(bodies):
    body = bodies["notoes_collapse10pc"]
    pose, shape = _random_inputs(5)
    out = body(pose.double(), shape, torch.zeros(5, 3))
    assert isinstance(out, BodyOutput)
    assert (
        out.vertices.shape == (5, 1229, 3)
        and out.joints.shape == (5, 17, 3)
        and out.keypoints.shape == (5, 17, 3)
    )
    assert out.bone_heads.shape == (5, 31, 3)
    assert {t.dtype for t in (out.vertices, out.joints, out.keypoints)} == {torch.float32}
    torch.testing.assert_close(out.joints, regress_joints(out.vertices, body.h36m_regressor))
    # (B, J*3) pose, a (1, S) shape and trans broadcast over the batch
    flat = body(pose.reshape(5, -1), shape[:1].expand(1, 6), torch.zeros(1, 3))
    single = body(pose[3:4], shape[:1])
    torch.testing.assert_close(flat.vertices[3:4], single.vertices)
    with pytest.raises(ValueError, match=r"\(B, 31, 3\)"):
        body(torch.zeros(2, 24, 3))
    with pytest.raises(ValueError, match="shape"):
        body(pose, torch.rand(5, 10))


@pytest.mark.body
def test_gradients_reach_pose_and_shape(bodies):
    body = bodies["full"]
    pose, shape = _random_inputs(2)
    pose.requires_grad_(True)
    shape.requires_grad_(True)
    out = body(pose, shape)
    (out.vertices.square().sum() + out.joints.sum()).backward()
    for grad in (pose.grad, shape.grad):
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().max()) > 0


@pytest.mark.body
def test_trans_shifts_everything(bodies):
    body = bodies["notoes_collapse5pc"]
    pose, shape = _random_inputs(3)
    trans = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [-3.0, 0.25, 0.1]])
    a, b = body(pose, shape), body(pose, shape, trans)
    for field in ("vertices", "joints", "keypoints", "bone_heads"):
        torch.testing.assert_close(getattr(b, field), getattr(a, field) + trans[:, None], atol=1e-5, rtol=0)


@pytest.mark.body
def test_root_rotation_rotates_rigidly_about_the_root_head(bodies):
    import roma

    body = bodies["notoes_collapse10pc"]
    pose, shape = _random_inputs(4)
    pose[:, 0] = 0.0
    root = torch.tensor([[0.0, 0.0, 1.2], [0.7, 0.0, 0.0], [0.3, -0.5, 0.9], [0.0, 2.5, 0.0]])
    rotated_pose = pose.clone()
    rotated_pose[:, 0] = root
    rot = roma.rotvec_to_rotmat(root)
    a, b = body(pose, shape), body(rotated_pose, shape)
    for field in ("vertices", "joints", "bone_heads"):
        expected = getattr(a, field) @ rot.transpose(1, 2)
        torch.testing.assert_close(getattr(b, field), expected, atol=2e-5, rtol=0)
    assert torch.allclose(b.bone_heads[:, 0], torch.zeros(4, 3), atol=1e-6)


@pytest.mark.body
def test_zero_pose_is_the_rest_a_pose_facing_minus_y(bodies):
    for body in bodies.values():
        out = body(torch.zeros(1, 31, 3))
        j, k = out.joints[0], out.keypoints[0]
        # the subject's left is +X, the face looks to -Y, +Z is up
        assert j[H36M["L_Hip"], 0] > j[H36M["R_Hip"], 0] + 0.1
        assert j[H36M["L_Shoulder"], 0] > j[H36M["R_Shoulder"], 0] + 0.2
        assert k[COCO["L_Eye"], 0] > k[COCO["R_Eye"], 0]
        assert k[COCO["Nose"], 1] < j[H36M["Head"], 1] - 0.05
        assert j[H36M["Head"], 2] > j[H36M["Neck"], 2] > j[H36M["Torso"], 2] > j[H36M["Pelvis"], 2]
        assert j[H36M["Pelvis"], 2] > j[H36M["L_Knee"], 2] > j[H36M["L_Ankle"], 2]
        # A-pose: each upper arm hangs 25-65 degrees from the vertical (T-pose: 90)
        for side in ("L", "R"):
            arm = j[H36M[f"{side}_Elbow"]] - j[H36M[f"{side}_Shoulder"]]
            angle = math.degrees(math.acos(float(-arm[2] / arm.norm())))
            assert 25.0 < angle < 65.0, (body.topology, side, angle)
        # zero pose = anny's rest mesh moved so that the root head is at the origin
        assert torch.allclose(out.bone_heads[0], body.rest_joints, atol=1e-6)
        height = float(out.vertices[0, :, 2].max() - out.vertices[0, :, 2].min())
        assert 1.55 < height < 1.70  # the default phenotype stands 1.63 m


@pytest.mark.body
def test_shape_changes_height(bodies):
    body = bodies["notoes_collapse3pc"]
    shape = torch.full((2, 6), 0.5)
    shape[0, 4], shape[1, 4] = 0.0, 1.0  # height slider
    v = body(torch.zeros(2, 31, 3), shape).vertices
    heights = v[..., 2].amax(1) - v[..., 2].amin(1)
    assert float(heights[0]) < 1.3 and float(heights[1]) > 1.9
    # rest_bone_heads(shape) is what a zero pose gives, for retargeting onto a given body shape
    torch.testing.assert_close(
        body.rest_bone_heads(shape), body(torch.zeros(2, 31, 3), shape).bone_heads, atol=1e-6, rtol=0
    )


@pytest.mark.body
def test_coarse_topology_joints_follow_the_full_mesh(bodies):
    """Bound: the coarse meshes lie on the full surface (nearest full vertex <= 20 mm away at rest) and their
    regressors are the full ones with each weight moved to the nearest coarse vertex, so a joint may move by at
    most about half a coarse edge; averaging over many vertices makes it much less. Measured over 64 random
    poses (0.3 rad) and shapes: 1,229 v 3.6 mm mean / 17 mm max, 615 v 3.8 / 18, 369 v 6.6 / 31 (bodymodel.md:
    3.7 mm at 1,229). The bounds leave about 1.5x margin."""
    pose, shape = _random_inputs(16, seed=1)
    with torch.no_grad():
        full = bodies["full"](pose, shape)
        bounds = {
            "notoes": (1.0, 5.0),
            "notoes_collapse10pc": (6.0, 30.0),
            "notoes_collapse5pc": (6.0, 30.0),
            "notoes_collapse3pc": (10.0, 45.0),
        }
        for name, (mean_mm, max_mm) in bounds.items():
            out = bodies[name](pose, shape)
            for field in ("joints", "keypoints"):
                err = (getattr(out, field) - getattr(full, field)).norm(dim=-1) * 1000
                assert float(err.mean()) < mean_mm and float(err.max()) < max_mm, (
                    name,
                    field,
                    err.mean(),
                    err.max(),
                )
            torch.testing.assert_close(out.bone_heads, full.bone_heads, atol=1e-5, rtol=0)


@pytest.mark.body
def test_torch_and_warp_skinning_agree(bodies):
    if not warp_available():
        pytest.skip("NVIDIA warp is not importable here")
    pose, shape = _random_inputs(3)
    warp_body = create("anny", topology="notoes_collapse10pc", skinning="warp")
    torch_body = create("anny", topology="notoes_collapse10pc", skinning="torch")
    a, b = warp_body(pose, shape), torch_body(pose, shape)
    assert (warp_body._active_skinning, torch_body._active_skinning) == ("warp_lbs", "lbs")
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------ caches
@pytest.mark.body
def test_caches_exist_and_are_reused(bodies, monkeypatch):
    import anny.models.model_data as model_data

    for name in TOPOLOGIES:
        assert anny_cache_file("cmu_mb", name).is_file()
        assert regressors.regressor_cache_path("cmu_mb", name).is_file()
    loaded: list[Path] = []
    real_load = model_data.ModelData.load_safetensors.__func__

    def spy_load(cls, path):
        loaded.append(Path(path))
        return real_load(cls, path)

    def no_build(*args, **kwargs):
        raise AssertionError("a cache was rebuilt")

    monkeypatch.setattr(model_data.ModelData, "load_safetensors", classmethod(spy_load))
    monkeypatch.setattr(model_data.ModelData, "save_safetensors", no_build)
    monkeypatch.setattr(regressors, "build_anny_regressors", no_build)
    body = create("anny", topology="615")
    assert loaded == [anny_cache_file("cmu_mb", "notoes_collapse5pc")]
    torch.testing.assert_close(body.h36m_regressor, bodies["notoes_collapse5pc"].h36m_regressor)


@pytest.mark.body
def test_regressor_cache_round_trip_is_deterministic(tmp_path, monkeypatch):
    full, coarse = load_anny("cmu_mb", "full"), load_anny("cmu_mb", "369")
    calls = []

    def build():
        calls.append(1)
        return regressors.build_anny_regressors(full, coarse)

    first = regressors.load_or_build_regressors(
        "cmu_mb", "notoes_collapse3pc", build, 369, root=tmp_path / "a"
    )
    again = regressors.load_or_build_regressors(
        "cmu_mb", "notoes_collapse3pc", build, 369, root=tmp_path / "a"
    )
    other = regressors.load_or_build_regressors(
        "cmu_mb", "notoes_collapse3pc", build, 369, root=tmp_path / "b"
    )
    assert len(calls) == 2  # built for "a" and "b", read back the second time
    files = [regressors.regressor_cache_path("cmu_mb", "notoes_collapse3pc", tmp_path / d) for d in "ab"]
    assert files[0].read_bytes() == files[1].read_bytes()
    for key in ("h36m", "coco"):
        assert torch.equal(first[key], again[key]) and torch.equal(first[key], other[key])
    # a file for another vertex count is not trusted: it is rebuilt, and a builder of the wrong shape is an error
    with pytest.raises(BodyModelError, match=r"\(17, 370\)"):
        regressors.load_or_build_regressors("cmu_mb", "notoes_collapse3pc", build, 370, root=tmp_path / "a")


@pytest.mark.body
def test_missing_cache_announces_the_build(monkeypatch, caplog):
    monkeypatch.setattr(
        anny_model, "anny_cache_file", lambda rig, topology: Path("/nonexistent/cache.safetensors")
    )
    with caplog.at_level(logging.WARNING, logger="p2m.body.anny_model"):
        anny_model.load_anny("cmu_mb", "369")  # anny itself still finds its real cache
    assert anny_model.BUILD_MESSAGE in caplog.text


@pytest.mark.body
def test_prepare_is_quick_when_everything_is_built():
    from p2m.body.prepare import prepare

    result = prepare(prune=False)
    assert result.built == []
    assert sorted(topo for _, topo in result.ready) == sorted(TOPOLOGIES)
    assert all(path.is_file() for path in result.ready.values())
