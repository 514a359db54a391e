"""export_mesh, as `p2m infer` calls it: root-relative camera-frame millimetres and a weak-perspective photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2m.export import export_mesh, rasterize_uv
from p2m.render import render_mesh

from .helpers import load_glb, skin_data


@pytest.fixture(scope="module")
def prediction(body_1229):
    """A posed body as Pose2Mesh gives it (camera frame, mm, pelvis at 0), a weak-perspective camera and a photo."""
    pose = torch.zeros((1, body_1229.num_bones, 3))
    pose[0, body_1229.bone_names.index("LeftForeArm"), 1] = -0.7
    with torch.no_grad():
        out = body_1229(pose)
        rest = body_1229(torch.zeros_like(pose)).vertices[0].double().numpy()
    to_cam = np.array(
        [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    )  # anny -> a camera facing the body
    joints = out.joints[0].double().numpy() @ to_cam.T * 1000.0
    verts = out.vertices[0].double().numpy() @ to_cam.T * 1000.0
    verts, joints = verts - joints[0], joints - joints[0]
    scale, tx, ty = 0.2, 200.0, 210.0  # px per mm, px
    colors = np.where((rest[:, 2] > 0.0)[:, None], [200.0, 30.0, 30.0], [30.0, 30.0, 200.0])
    # A near-orthographic photo: the body 10 km away through a matching long lens.
    far = verts + [0.0, 0.0, 1e7]
    photo = render_mesh(
        far, body_1229.faces, scale * 1e7, (tx, ty), (400, 420), color=colors, ambient=1.0
    ).image
    return verts, joints, (scale, tx, ty), photo, rest


def test_export_mesh_writes_a_textured_rigged_glb_and_obj(body_1229, prediction, tmp_path):
    import trimesh

    verts, joints, camera, photo, rest = prediction
    res = export_mesh(
        tmp_path,
        body_1229,
        verts,
        joints,
        formats=("glb", "obj"),
        image=photo,
        weak_perspective=camera,
        tex_size=512,
    )
    assert set(res.files) == {"glb", "obj", "mtl", "texture"}
    assert all(p.exists() and p.parent == tmp_path for p in res.files.values())

    gltf = load_glb(res.files["glb"])
    data = skin_data(gltf)
    assert len(gltf.skins[0].joints) == 17 and gltf.images
    # metres, y up, pelvis at the origin: the head is ~0.6 m above it and the body faces +z
    tris = data["indices"]
    np.testing.assert_allclose(
        data["positions"][tris], verts[body_1229.faces.numpy()] * [1e-3, -1e-3, -1e-3], atol=1e-6
    )
    head = data["positions"][:, 1].max()
    assert 0.5 < head < 1.0

    # The texture holds the photo's colours: red above the waist, blue below (seen texels only).
    tex = res.texture
    face_of, _ = rasterize_uv(tex.layout, 512)
    upper = np.zeros_like(tex.seen)
    upper[face_of >= 0] = rest[body_1229.faces.numpy()[face_of[face_of >= 0]], 2].mean(axis=1) > 0.05
    lower = np.zeros_like(tex.seen)
    lower[face_of >= 0] = rest[body_1229.faces.numpy()[face_of[face_of >= 0]], 2].mean(axis=1) < -0.05
    red = tex.texture[tex.seen & upper].mean(axis=0)
    blue = tex.texture[tex.seen & lower].mean(axis=0)
    assert red[0] > 150 and red[2] < 80, red
    assert blue[2] > 150 and blue[0] < 80, blue
    assert 0.2 < tex.seen_fraction < 0.6 and tex.mirrored.any()

    scene = trimesh.load(str(res.files["glb"]), force="scene", process=False)
    (mesh,) = scene.geometry.values()
    assert mesh.visual.material.baseColorTexture.size == (512, 512)
    obj = trimesh.load(str(res.files["obj"]), process=False)
    assert len(obj.faces) == len(body_1229.faces)
    np.testing.assert_array_equal(np.asarray(obj.visual.material.image.convert("RGB")), tex.texture)


def test_export_mesh_without_photo(body_1229, prediction, tmp_path):
    import trimesh

    verts, joints, _, _, _ = prediction
    res = export_mesh(tmp_path, body_1229, verts, None, formats=("obj",), axes="camera", name="plain")
    assert set(res.files) == {"obj"} and res.texture is None and res.skin is None
    mesh = trimesh.load(str(res.files["obj"]), process=False)
    np.testing.assert_allclose(mesh.vertices, verts * 1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="export formats"):
        export_mesh(tmp_path, body_1229, verts, formats=("fbx",))
    res = export_mesh(tmp_path, body_1229, verts, formats=("glb",))  # joints regressed from the mesh
    np.testing.assert_allclose(
        res.skin.joints[0], body_1229.h36m_regressor[0].double().numpy() @ verts, atol=1e-9
    )
