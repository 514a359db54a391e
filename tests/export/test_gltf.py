"""The rigged .glb: read back with pygltflib and trimesh, skinned by hand from what was read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from p2m.export import (
    camera_to_gltf,
    h36m_parents,
    limit_influences,
    skin_from_body,
    triangle_atlas,
    write_rigged_glb,
)
from p2m.joints import H36M_JOINTS

from .helpers import accessor, lbs, load_glb, skin_data, world_matrices

L_ELBOW, L_WRIST, R_KNEE = (
    H36M_JOINTS.index("L_Elbow"),
    H36M_JOINTS.index("L_Wrist"),
    H36M_JOINTS.index("R_Knee"),
)


def _posed(body, bone: str | None = None, rotvec=(0.0, 0.0, 0.0)):
    """anny vertices, H36M joints and bone heads (float64 numpy, metres, anny frame), one bone rotated."""
    pose = torch.zeros((1, body.num_bones, 3))
    if bone is not None:
        pose[0, body.bone_names.index(bone)] = torch.tensor(rotvec)
    with torch.no_grad():
        out = body(pose)
    return (
        out.vertices[0].double().numpy(),
        out.joints[0].double().numpy(),
        out.bone_heads[0].double().numpy(),
    )


@pytest.fixture(scope="module")
def rigged(body_1229, tmp_path_factory):
    """The 1,229-vertex anny mesh in a mild pose, rigged with the H36M skeleton and written to a .glb."""
    verts, joints, _ = _posed(body_1229, "RightLeg", (0.4, 0.0, 0.0))
    skin = skin_from_body(body_1229, verts, joints)
    path = tmp_path_factory.mktemp("glb") / "body.glb"
    write_rigged_glb(path, verts, body_1229.faces, skin.joints, skin.parents, skin.weights, skin.names)
    return path, verts, skin


def test_skeleton_hierarchy_and_inverse_bind_matrices(rigged, body_1229):
    path, verts, skin = rigged
    gltf = load_glb(path)
    skin_def = gltf.skins[0]
    assert len(skin_def.joints) == 17
    names = [gltf.nodes[n].name for n in skin_def.joints]
    assert names == list(H36M_JOINTS)
    parent_of = {c: p for p, node in enumerate(gltf.nodes) for c in (node.children or [])}
    parents = [skin_def.joints.index(parent_of[n]) if n in parent_of else -1 for n in skin_def.joints]
    assert parents == h36m_parents().tolist()
    assert parents[H36M_JOINTS.index("L_Wrist")] == H36M_JOINTS.index("L_Elbow")
    assert skin_def.skeleton == skin_def.joints[0] and gltf.nodes[skin_def.skeleton].name == "Pelvis"

    world = world_matrices(gltf)
    data = skin_data(gltf)
    for k, node in enumerate(skin_def.joints):
        np.testing.assert_allclose(
            world[node][:3, 3], skin.joints[k], atol=1e-6
        )  # joints where they were given
        np.testing.assert_allclose(world[node] @ data["ibm"][k], np.eye(4), atol=1e-6)
    # The mesh node is in the scene and carries the skin; positions are the input vertices.
    mesh_node = next(n for n in gltf.scenes[0].nodes if gltf.nodes[n].mesh is not None)
    assert gltf.nodes[mesh_node].skin == 0
    np.testing.assert_allclose(data["positions"], verts, atol=1e-6)
    np.testing.assert_array_equal(data["indices"], body_1229.faces.numpy())


def test_weights_normalised_with_at_most_four_influences(rigged):
    path, _, skin = rigged
    data = skin_data(load_glb(path))
    w, j = data["weights"], data["joints"]
    assert w.shape == j.shape == (len(skin.weights), 4)
    assert (w >= 0).all() and (j >= 0).all() and (j < 17).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=2e-7 * 4)
    assert (w > 0).sum(axis=1).max() <= 4
    # The kept influences are each vertex's largest ones: the glb's heaviest joint is the skin's heaviest.
    heaviest = j[np.arange(len(j)), w.argmax(axis=1)]
    np.testing.assert_array_equal(heaviest, skin.weights.argmax(axis=1))
    # Every joint but the end effectors weighs some vertices (the H36M Head is the skull top: a leaf).
    used = set(j[w > 0].tolist())
    assert set(range(17)) - used <= {H36M_JOINTS.index("Head")}


def test_bind_pose_reproduces_the_mesh(rigged):
    path, verts, _ = rigged
    np.testing.assert_allclose(lbs(load_glb(path)), verts, atol=2e-6)


@pytest.mark.parametrize("joint", [L_ELBOW, L_WRIST, R_KNEE])
def test_rotating_one_joint_moves_only_the_vertices_it_weighs(rigged, joint):
    path, _, _ = rigged
    gltf = load_glb(path)
    data = skin_data(gltf)
    node = int(data["skin_joints"][joint])
    before = lbs(gltf)
    after = lbs(gltf, {node: Rotation.from_rotvec([0.0, 0.7, 0.4]).as_matrix()})

    subtree = {joint}
    parents = h36m_parents()
    for _ in range(17):
        subtree |= {k for k in range(17) if parents[k] in subtree}
    weighs = ((data["weights"] > 0) & np.isin(data["joints"], list(subtree))).any(axis=1)
    moved = (after != before).any(axis=1)
    assert weighs.any()
    np.testing.assert_array_equal(moved, weighs)  # unweighted vertices are bit-identical
    assert np.array_equal(after[~weighs], before[~weighs])
    # A vertex moves by at most the rotation of its farthest point, and heavily weighted ones move visibly.
    heavy = (data["weights"] * np.isin(data["joints"], list(subtree))).sum(axis=1) > 0.9
    assert np.linalg.norm(after[heavy] - before[heavy], axis=1).min() > 1e-4


@pytest.mark.parametrize(
    ("bone", "joint", "rotvec"),
    [("LeftForeArm", L_ELBOW, (0.0, -0.9, 0.5)), ("RightLeg", R_KNEE, (0.8, 0.0, 0.0))],
)
def test_rig_follows_the_body_model(body_1229, tmp_path, bone, joint, rotvec):
    """Rotating a glb joint like the anny bone it took over reproduces anny's own posed mesh.

    Exactly (1e-7 m) when the joint sits at the bone's pivot: the weights went over unchanged. At the H36M
    joint (regressed from the surface, 1-2 cm from anny's pivot) the two rigid rotations differ by at most
    |R - I| * gap = 2 sin(angle / 2) * gap.
    """
    verts, joints, heads = _posed(body_1229)
    skin = skin_from_body(body_1229, verts, joints)
    target, _, _ = _posed(body_1229, bone, rotvec)
    moved = np.linalg.norm(target - verts, axis=1) > 1e-3
    assert moved.sum() > 50 and np.linalg.norm(target - verts, axis=1)[moved].mean() > 0.1
    rot = Rotation.from_rotvec(rotvec)
    pivot = heads[body_1229.bone_names.index(bone)]
    gap = float(np.linalg.norm(joints[joint] - pivot))
    for name, place in (("pivot", pivot), ("h36m", joints[joint])):
        jpos = skin.joints.copy()
        jpos[joint] = place
        path = tmp_path / f"{name}.glb"
        write_rigged_glb(path, verts, body_1229.faces, jpos, skin.parents, skin.weights, skin.names)
        gltf = load_glb(path)
        ours = lbs(gltf, {int(gltf.skins[0].joints[joint]): rot.as_matrix()})
        err = np.linalg.norm(ours - target, axis=1).max()
        bound = 1e-5 if name == "pivot" else 2 * np.sin(rot.magnitude() / 2) * gap + 1e-5
        assert err < bound, (name, err, bound)


def test_pose_and_texture_read_back_by_pygltflib_and_trimesh(body_1229, tmp_path):
    import io

    import trimesh
    from PIL import Image

    verts, joints, _ = _posed(body_1229)
    skin = skin_from_body(body_1229, verts, joints)
    layout = triangle_atlas(len(body_1229.faces), 512)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    pose = np.zeros((17, 3))
    pose[L_ELBOW] = [0.0, 0.0, 1.2]
    path = tmp_path / "textured.glb"
    write_rigged_glb(
        path,
        verts,
        body_1229.faces,
        skin.joints,
        skin.parents,
        skin.weights,
        skin.names,
        pose=pose,
        texture=(image, layout),
    )
    gltf = load_glb(path)
    node = gltf.nodes[gltf.skins[0].joints[L_ELBOW]]
    np.testing.assert_allclose(node.rotation, Rotation.from_rotvec(pose[L_ELBOW]).as_quat(), atol=1e-7)
    assert all(gltf.nodes[n].rotation is None for i, n in enumerate(gltf.skins[0].joints) if i != L_ELBOW)
    # The PNG in the buffer is the image; TEXCOORD_0 is the layout with v flipped (glTF counts v downwards).
    view = gltf.bufferViews[gltf.images[0].bufferView]
    png = gltf.binary_blob()[view.byteOffset : view.byteOffset + view.byteLength]
    assert gltf.images[0].mimeType == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), image)
    prim = gltf.meshes[0].primitives[0]
    uv = accessor(gltf, prim.attributes.TEXCOORD_0).astype(np.float64)
    tris = accessor(gltf, prim.indices).reshape(-1, 3)
    np.testing.assert_allclose(
        uv[tris], np.stack([layout.corners()[..., 0], 1 - layout.corners()[..., 1]], -1), atol=1e-6
    )
    pos = accessor(gltf, prim.attributes.POSITION)
    np.testing.assert_allclose(
        pos[tris], verts[body_1229.faces.numpy()], atol=1e-6
    )  # seams split, same surface

    scene = trimesh.load(str(path), force="scene", process=False)
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) == len(body_1229.faces)
    assert mesh.visual.uv.shape == (len(pos), 2)
    assert mesh.visual.material.baseColorTexture.size == (512, 512)


def test_trimesh_reads_an_untextured_glb_in_gltf_axes(body_1229, tmp_path):
    import trimesh

    verts_cam = np.array([[0.1, -0.2, 3.0], [0.2, 0.1, 3.1], [-0.1, 0.3, 2.9]])
    out = camera_to_gltf(verts_cam * 1000.0, unit=1e-3)
    np.testing.assert_allclose(out, verts_cam * [1, -1, -1])
    verts, joints, _ = _posed(body_1229)
    skin = skin_from_body(body_1229, verts, joints)
    path = tmp_path / "plain.glb"
    write_rigged_glb(path, verts, body_1229.faces, skin.joints, skin.parents, skin.weights, skin.names)
    mesh = trimesh.load(str(path), force="mesh", process=False)
    np.testing.assert_allclose(np.asarray(mesh.vertices), verts, atol=1e-6)
    assert len(mesh.faces) == len(body_1229.faces)


def test_bone_mapping_is_by_pivot(body_1229):
    skin = skin_from_body(body_1229, _posed(body_1229)[0])
    mapping = dict(zip(body_1229.bone_names, (H36M_JOINTS[k] for k in skin.bone_to_joint)))
    assert mapping["LeftUpLeg"] == "L_Hip" and mapping["RightLeg"] == "R_Knee"
    assert mapping["LeftForeArm"] == "L_Elbow" and mapping["RightArm"] == "R_Shoulder"
    assert mapping["LeftHand"] == mapping["LeftHandFinger1"] == "L_Wrist"
    assert mapping["RightFoot"] == mapping["RightToeBase"] == "R_Ankle"
    assert mapping["Hips"] == "Pelvis" and mapping["Head"] == "Nose"
    np.testing.assert_allclose(skin.weights.sum(axis=1), 1.0, atol=1e-9)


def test_weights_carried_to_another_topology(body_1229, body_369):
    """The 369-vertex mesh rigged from the 1,229-vertex body agrees with its own anny weights."""
    coarse, coarse_joints, _ = _posed(body_369)
    fine = _posed(body_1229)[0]
    carried = skin_from_body(body_1229, coarse, coarse_joints, body_vertices=fine)
    own = skin_from_body(body_369, coarse, coarse_joints)
    np.testing.assert_allclose(carried.weights.sum(axis=1), 1.0, atol=1e-9)
    agree = (carried.weights.argmax(axis=1) == own.weights.argmax(axis=1)).mean()
    assert agree > 0.9, agree
    assert np.abs(carried.weights - own.weights).sum(axis=1).mean() < 0.3
    with pytest.raises(ValueError, match="body_vertices"):
        skin_from_body(body_1229, coarse, coarse_joints)


def test_limit_influences_keeps_the_largest_four():
    rng = np.random.default_rng(1)
    w = rng.random((50, 9)) * (rng.random((50, 9)) < 0.6)
    w[:, 0] += 0.01
    w[3] = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # one influence
    idx, top = limit_influences(w)
    assert idx.shape == top.shape == (50, 4) and top.dtype == np.float32
    assert (np.abs(top.sum(axis=1, dtype=np.float32) - 1) <= 2e-7 * 4).all()
    for v in range(50):
        keep = np.argsort(-w[v], kind="stable")[:4]
        keep = keep[w[v, keep] > 0]
        assert set(idx[v][top[v] > 0]) == set(keep)
        np.testing.assert_allclose(top[v][: len(keep)], w[v, keep] / w[v, keep].sum(), rtol=1e-6)
    assert idx[3].tolist() == [0, 0, 0, 0] and top[3].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_bad_input_is_named(tmp_path):
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = np.array([[0, 1, 2]])
    joints = np.zeros((2, 3))
    good = np.array([[1.0, 0.0]] * 3)
    with pytest.raises(ValueError, match="own ancestor"):
        write_rigged_glb(tmp_path / "a.glb", verts, faces, joints, [1, 0], good)
    with pytest.raises(ValueError, match="vertex 1 has no positive weight"):
        write_rigged_glb(
            tmp_path / "a.glb", verts, faces, joints, [-1, 0], np.array([[1.0, 0], [0, 0], [0, 1]])
        )
    with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
        write_rigged_glb(tmp_path / "a.glb", verts, faces, joints, [-1, 0], np.ones((3, 3)))
    with pytest.raises(ValueError, match="pose has shape"):
        write_rigged_glb(tmp_path / "a.glb", verts, faces, joints, [-1, 0], good, pose=np.zeros(5))
    assert not list(tmp_path.iterdir())  # nothing half-written
    # (indices, weights) pairs are accepted too, and the file is a valid binary glTF.
    write_rigged_glb(
        tmp_path / "b.glb", verts, faces, joints, [-1, 0], (np.zeros((3, 1), int), np.ones((3, 1)))
    )
    assert (tmp_path / "b.glb").read_bytes()[:4] == b"glTF"


def test_closest_point_on_triangles_matches_dense_sampling():
    from p2m.export.geometry import closest_point_on_triangles

    rng = np.random.default_rng(3)
    n = 400
    a, b, c = (rng.normal(size=(n, 3)) for _ in range(3))
    p = rng.normal(size=(n, 3)) * 2
    bary = closest_point_on_triangles(p, a, b, c)
    assert (bary >= 0).all()
    np.testing.assert_allclose(bary.sum(axis=1), 1.0, atol=1e-12)
    q = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    ours = np.linalg.norm(q - p, axis=1)
    s, t = np.meshgrid(np.linspace(0, 1, 121), np.linspace(0, 1, 121))
    keep = s + t <= 1
    s, t = s[keep], t[keep]
    grid = (
        (1 - s - t)[None, :, None] * a[:, None]
        + s[None, :, None] * b[:, None]
        + t[None, :, None] * c[:, None]
    )
    dense = np.linalg.norm(grid - p[:, None], axis=2).min(axis=1)
    assert (ours <= dense + 1e-12).all()  # never worse than any sampled point
    assert (dense - ours).max() < 0.05  # and the grid (spacing 1/120 of an edge) gets close to it
