"""Tests for the z-buffered software rasteriser, backgrounds and overlays (p2m.render)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

import p2m.render as render_module
from p2m.render import (
    RenderResult,
    draw_skeleton,
    overlay_mesh,
    procedural_background,
    render_mesh,
    vertex_normals,
)

REPO = Path(__file__).resolve().parents[1]


def _cube(center: tuple[float, float, float], half: float) -> trimesh.Trimesh:
    box = trimesh.creation.box(extents=(2 * half,) * 3)
    box.apply_translation(center)
    return box


def _ray_plane_depth(
    px: np.ndarray, py: np.ndarray, f: float, c: tuple[float, float], p0: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """Camera z where the rays through pixel centres (px, py) meet the plane through p0 with normal n."""
    d = np.stack([(px - c[0]) / f, (py - c[1]) / f, np.ones_like(px, dtype=float)], axis=-1)
    return (n @ p0) / (d @ n)


def test_cube_silhouette_and_depth_are_exact() -> None:
    # Front face z = 2, half size 1, f = 100 -> a 100 x 100 px square centred on c (off-grid, no ties).
    cube = _cube((0.0, 0.0, 3.0), 1.0)
    c = (64.3, 60.7)
    r = render_mesh(cube.vertices, cube.faces, 100.0, c, image_size=(128, 120))
    assert isinstance(r, RenderResult)
    assert r.image.shape == (120, 128, 3) and r.image.dtype == np.uint8
    assert r.mask.sum() == 100 * 100
    rows, cols = np.nonzero(r.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (11, 110, 15, 114)
    np.testing.assert_allclose(r.depth[r.mask], 2.0, rtol=1e-6)
    assert np.isinf(r.depth[~r.mask]).all()
    assert (r.face_index[~r.mask] == -1).all()
    # The visible faces are the two whose normal is -z (facing the camera).
    normals = cube.face_normals[np.unique(r.face_index[r.mask])]
    np.testing.assert_allclose(normals, [[0, 0, -1]] * len(normals), atol=1e-12)
    np.testing.assert_allclose(r.bary[r.mask].sum(axis=1), 1.0, atol=1e-5)


def test_sphere_radius_and_centre_depth() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    dist, f, c = 5.0, 500.0, (127.6, 127.3)
    r = render_mesh(sphere.vertices + [0.0, 0.0, dist], sphere.faces, f, c, image_size=(256, 256))
    expected = f / np.sqrt(dist**2 - 1.0)  # projected radius of the sphere's silhouette cone
    assert abs(np.sqrt(r.mask.sum() / np.pi) - expected) < 1.0
    rows, cols = np.nonzero(r.mask)
    assert abs((cols.max() - cols.min()) / 2 - expected) < 1.5
    assert abs((rows.max() - rows.min()) / 2 - expected) < 1.5
    assert abs(r.depth[127, 127] - (dist - 1.0)) < 0.005  # inscribed facets sit slightly behind
    # The inscribed polyhedron is never in front of the sphere, and close to it away from the rim.
    px, py = np.meshgrid(np.arange(256.0), np.arange(256.0))
    d = np.stack([(px - c[0]) / f, (py - c[1]) / f, np.ones_like(px)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    b = d[..., 2] * dist
    disc = b**2 - (dist**2 - 1.0)
    t_hit = b - np.sqrt(np.clip(disc, 0, None))
    exact = (t_hit * d[..., 2])[r.mask]
    assert (r.depth[r.mask] >= exact - 1e-4).all()
    inner = (np.hypot(px - c[0], py - c[1]) < 0.8 * expected)[r.mask]  # away from grazing rays
    assert (r.depth[r.mask] - exact)[inner].max() < 0.01


def test_depth_is_perspective_correct_on_a_slanted_triangle() -> None:
    verts = np.array([[-2.0, -1.5, 3.0], [2.5, -1.0, 9.0], [0.0, 2.0, 5.0]])
    f, c = 80.0, (50.2, 40.9)
    r = render_mesh(verts, [[0, 1, 2]], f, c, image_size=(100, 80))
    assert r.mask.sum() > 500
    n = np.cross(verts[1] - verts[0], verts[2] - verts[0])
    py, px = np.nonzero(r.mask)
    expected = _ray_plane_depth(px.astype(float), py.astype(float), f, c, verts[0], n)
    np.testing.assert_allclose(r.depth[r.mask], expected, rtol=1e-5)
    # Barycentrics reproduce the 3D point on the face.
    point = r.bary[r.mask].astype(np.float64) @ verts
    np.testing.assert_allclose(point[:, 2], expected, rtol=1e-4)
    np.testing.assert_allclose(point[:, 0] / point[:, 2] * f + c[0], px, atol=0.05)


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_triangle_wins(near_first: bool) -> None:
    near = np.array([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    far = np.array([[-1.0, 1.0, 4.0], [0.0, -1.0, 4.0], [1.0, 1.0, 4.0]]) * [2, 2, 1]
    verts = np.concatenate([near, far] if near_first else [far, near])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    colors = np.repeat(
        [[255.0, 0, 0], [0, 255.0, 0]] if near_first else [[0, 255.0, 0], [255.0, 0, 0]], 3, axis=0
    )
    r = render_mesh(verts, faces, 50.0, (40.1, 40.2), image_size=(80, 80), color=colors, ambient=1.0)
    near_face = 0 if near_first else 1
    assert (r.face_index == near_face).sum() > 100 and (r.face_index == 1 - near_face).sum() > 100
    centre = r.image[40, 40]
    assert r.face_index[40, 40] == near_face and r.depth[40, 40] == pytest.approx(2.0)
    assert tuple(centre) == (255, 0, 0)
    np.testing.assert_allclose(r.depth[r.face_index == 1 - near_face], 4.0, rtol=1e-6)


def _quad(center: np.ndarray, normal: np.ndarray, size: float) -> np.ndarray:
    n = normal / np.linalg.norm(normal)
    a = np.cross(n, [0.0, 1.0, 0.0] if abs(n[1]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    return center + size * np.array([-a - b, a - b, a + b, -a + b])


def test_lit_face_is_brighter_than_grazing_face() -> None:
    light = np.array([0.0, 0.0, -1.0])
    facing = _quad(np.array([-1.2, 0.0, 6.0]), np.array([0.0, 0.0, -1.0]), 0.5)
    grazing = _quad(np.array([1.2, 0.0, 6.0]), np.array([0.97, 0.0, -0.25]), 0.5)
    verts = np.concatenate([facing, grazing])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    # Fix winding so both quads face the camera whatever _quad's orientation was.
    for k in (0, 2):
        tri = verts[faces[k]]
        if np.cross(tri[1] - tri[0], tri[2] - tri[0]) @ tri[0] > 0:
            faces[k : k + 2] = faces[k : k + 2][:, ::-1]
    r = render_mesh(
        verts, faces, 200.0, (100.3, 60.4), (200, 120), color=(200, 200, 200), light_dir=light, ambient=0.2
    )
    left = r.image[r.mask & (r.face_index <= 1)].astype(float).mean()
    right = r.image[r.mask & (r.face_index >= 2)].astype(float).mean()
    assert left > right + 50
    assert left == pytest.approx(200.0, abs=1.0)  # flat quad, normal on the light: full diffuse
    assert right == pytest.approx(200 * (0.2 + 0.8 * 0.25 / np.hypot(0.97, 0.25)), abs=1.5)


def test_backfaces_are_lit_two_sided_or_culled() -> None:
    tri = np.array([[-1.0, -1.0, 3.0], [0.0, 1.0, 3.0], [1.0, -1.0, 3.0]])
    faces = np.array([[0, 1, 2]])
    front_is = np.cross(tri[1] - tri[0], tri[2] - tri[0]) @ tri[0] < 0
    back = faces if not front_is else faces[:, ::-1]
    kw = dict(
        f=50.0, c=(32.2, 32.1), image_size=(64, 64), color=(100, 100, 100), light_dir=(0, 0, -1), ambient=0.0
    )
    two_sided = render_mesh(tri, back, **kw)
    assert two_sided.mask.sum() > 100
    assert (two_sided.image[two_sided.mask] == 100).all()  # flipped normal faces the light
    culled = render_mesh(tri, back, cull_backfaces=True, **kw)
    assert culled.mask.sum() == 0 and (culled.image == 0).all()
    kept = render_mesh(tri, back[:, ::-1], cull_backfaces=True, **kw)
    assert kept.mask.sum() == two_sided.mask.sum()


def test_closed_mesh_culling_changes_nothing() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    v = sphere.vertices + [0.3, -0.2, 4.0]
    a = render_mesh(v, sphere.faces, 300.0, (96.5, 96.5), (192, 192))
    b = render_mesh(v, sphere.faces, 300.0, (96.5, 96.5), (192, 192), cull_backfaces=True)
    assert (a.mask == b.mask).all() and (a.image == b.image).all() and (a.face_index == b.face_index).all()


def test_triangles_crossing_the_camera_plane_are_clipped() -> None:
    # A floor y = 1 from z = -5 (behind the camera) to z = 20; every visible pixel must lie on it.
    floor = np.array([[-10.0, 1.0, -5.0], [10.0, 1.0, -5.0], [10.0, 1.0, 20.0], [-10.0, 1.0, 20.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    f, c = 60.0, (40.3, 30.2)
    r = render_mesh(floor, faces, f, c, image_size=(80, 60), near=0.01)
    py, px = np.nonzero(r.mask)
    z = f * 1.0 / (py - c[1])
    np.testing.assert_allclose(r.depth[r.mask], z, rtol=1e-6)
    # Analytic coverage: below the horizon, hit in front of z = 20 and within |x| <= 10.
    gy, gx = np.mgrid[0:60, 0:80].astype(float)
    with np.errstate(divide="ignore"):
        gz = np.where(gy > c[1], f / (gy - c[1]), np.inf)
    expected = (gz <= 20.0) & (np.abs((gx - c[0]) / f * gz) <= 10.0)
    assert (expected != r.mask).sum() <= 2
    assert r.mask[-1].all()  # the bottom row sees the floor right under the camera
    # All vertices behind the camera: nothing drawn, no error.
    empty = render_mesh(floor * [1, 1, 0] - [0, 0, 1], faces, f, c, image_size=(80, 60))
    assert not empty.mask.any()


def test_background_untouched_and_inputs_not_modified() -> None:
    rng = np.random.default_rng(3)
    bg = rng.integers(0, 256, (90, 110, 3), dtype=np.uint8)
    bg_copy = bg.copy()
    sphere = trimesh.creation.icosphere(subdivisions=2)
    verts = sphere.vertices + [0.0, 0.0, 4.0]
    verts_copy = verts.copy()
    r = render_mesh(verts, sphere.faces, 100.0, (55.0, 45.0), (110, 90), background=bg)
    assert (bg == bg_copy).all() and (verts == verts_copy).all()
    assert (r.image[~r.mask] == bg[~r.mask]).all()
    assert (r.image[r.mask] != bg[r.mask]).any(axis=1).mean() > 0.95
    solid = render_mesh(verts, sphere.faces, 100.0, (55.0, 45.0), (110, 90), background=(10, 20, 30))
    assert (solid.image[~solid.mask] == [10, 20, 30]).all()
    with pytest.raises(ValueError, match="background has shape"):
        render_mesh(verts, sphere.faces, 100.0, (55.0, 45.0), (110, 90), background=bg[:10])


def test_per_vertex_colors_are_interpolated() -> None:
    tri = np.array([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]])
    cols = np.array([[255.0, 0, 0], [0, 255.0, 0], [0, 0, 255.0]])
    r = render_mesh(tri, [[0, 1, 2]], 40.0, (40.0, 40.0), (80, 80), color=cols, ambient=1.0)
    corner = r.image[int(40 - 20 + 2), int(40 - 20 + 3)].astype(int)  # near vertex 0
    assert corner[0] > 180 and corner[1] < 60 and corner[2] < 60
    cy = int(round(40 + 40 * (-1 / 3) / 2))
    mid = r.image[cy, 40].astype(int)
    assert np.ptp(mid) < 25 and 60 < mid.mean() < 110


def test_render_is_deterministic_and_accepts_torch() -> None:
    torch = pytest.importorskip("torch")
    sphere = trimesh.creation.icosphere(subdivisions=3)
    v = sphere.vertices + [0.1, 0.0, 3.0]
    bg = procedural_background(96, 64, np.random.default_rng(5))
    a = render_mesh(v, sphere.faces, 90.0, (48.0, 32.0), (96, 64), background=bg)
    b = render_mesh(v, sphere.faces, 90.0, (48.0, 32.0), (96, 64), background=bg)
    t = render_mesh(torch.tensor(v), torch.tensor(sphere.faces), 90.0, (48.0, 32.0), (96, 64), background=bg)
    assert a.image.tobytes() == b.image.tobytes() == t.image.tobytes()
    assert a.depth.tobytes() == b.depth.tobytes() and a.face_index.tobytes() == b.face_index.tobytes()


def test_random_mesh_matches_brute_force_ray_casting() -> None:
    rng = np.random.default_rng(0)
    n_tri, w, h, f, c = 300, 48, 40, 40.0, (23.7, 19.6)
    centers = rng.uniform([-1.5, -1.2, 2.0], [1.5, 1.2, 6.0], (n_tri, 1, 3))
    tris = centers + rng.normal(0.0, 0.35, (n_tri, 3, 3))
    verts, faces = tris.reshape(-1, 3), np.arange(3 * n_tri).reshape(-1, 3)
    r = render_mesh(verts, faces, f, c, (w, h))
    # Reference: Moller-Trumbore ray casting of every pixel against every triangle.
    gy, gx = np.mgrid[0:h, 0:w].astype(float)
    d = np.stack([(gx - c[0]) / f, (gy - c[1]) / f, np.ones_like(gx)], -1).reshape(-1, 1, 3)
    e1, e2 = tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]
    p = np.cross(d, e2[None])
    det = np.einsum("pti,ti->pt", p, e1)
    inv = 1.0 / det
    s = -tris[:, 0][None]
    u = np.einsum("pti,ti->pt", p, s[0]) * inv
    q = np.cross(s, e1[None])
    v = np.einsum("pti,pti->pt", d * np.ones_like(q), q) * inv
    t = np.einsum("ti,pti->pt", e2, q) * inv
    hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    z_ref = np.where(hit, t, np.inf).min(axis=1).reshape(h, w)  # t is camera z since d_z = 1
    covered = np.isfinite(z_ref)
    assert (covered != r.mask).sum() <= 3  # pixel centres within float noise of an edge may differ
    both = covered & r.mask
    np.testing.assert_allclose(r.depth[both], z_ref[both], rtol=1e-5)


def test_many_triangles_finish() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    centers = rng.uniform([-2, -2, 3], [2, 2, 8], (n, 1, 3))
    verts = (centers + rng.normal(0, 0.05, (n, 3, 3))).reshape(-1, 3)
    r = render_mesh(verts, np.arange(3 * n).reshape(-1, 3), 300.0, (128.0, 128.0), (256, 256))
    assert r.mask.mean() > 0.3
    assert r.face_index.max() < n and (r.face_index[r.mask] >= 0).all()


def test_empty_and_bad_inputs() -> None:
    r = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), int), 10.0, (5.0, 5.0), (10, 10))
    assert not r.mask.any() and r.image.shape == (10, 10, 3)
    with pytest.raises(ValueError, match="faces index vertices"):
        render_mesh(np.zeros((3, 3)), [[0, 1, 3]], 10.0, (5.0, 5.0), (10, 10))
    with pytest.raises(ValueError, match="vertices_cam has shape"):
        render_mesh(np.zeros((3, 2)), [[0, 1, 2]], 10.0, (5.0, 5.0), (10, 10))
    with pytest.raises(ValueError, match="color has shape"):
        render_mesh(np.ones((3, 3)), [[0, 1, 2]], 10.0, (5.0, 5.0), (10, 10), color=(1, 2))


def test_vertex_normals_of_sphere_point_outward() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2)
    n = vertex_normals(sphere.vertices, sphere.faces)
    np.testing.assert_allclose(np.einsum("vd,vd->v", n, sphere.vertices), 1.0, atol=0.02)


def test_procedural_background_is_deterministic_and_textured() -> None:
    a = procedural_background(160, 120, np.random.default_rng(7))
    b = procedural_background(160, 120, np.random.default_rng(7))
    c = procedural_background(160, 120, np.random.default_rng(8))
    assert a.shape == (120, 160, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert a.astype(float).std(axis=(0, 1)).mean() > 5  # not a flat colour
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 1000


def test_draw_skeleton_respects_visibility() -> None:
    img = np.zeros((50, 60, 3), np.uint8)
    joints = np.array([[10.0, 10.0, 2], [50.0, 10.0, 2], [30.0, 40.0, 0]])
    out = draw_skeleton(img, joints, [(0, 1), (1, 2)], color=(0, 255, 0), joint_color=(255, 0, 0), radius=2)
    assert (img == 0).all()  # input untouched
    assert tuple(out[10, 30]) == (0, 255, 0)  # the visible bone
    assert tuple(out[10, 10]) == (255, 0, 0)  # a visible joint
    assert (out[30:50, 20:40] == 0).all()  # invisible joint and its bone are not drawn
    plain = draw_skeleton(img, joints[:, :2], [(1, 2)], radius=0)
    assert tuple(plain[25, 40]) == (0, 255, 0)  # without a visibility column, all are drawn
    with pytest.raises(ValueError, match="outside the 3 joints"):
        draw_skeleton(img, joints, [(0, 3)])


def test_overlay_mesh_blends_inside_mask_only() -> None:
    photo = procedural_background(64, 48, np.random.default_rng(2))
    sphere = trimesh.creation.icosphere(subdivisions=2)
    r = render_mesh(sphere.vertices + [0, 0, 3.0], sphere.faces, 50.0, (32.0, 24.0), (64, 48))
    full = overlay_mesh(photo, r, alpha=1.0)
    assert (full[r.mask] == r.image[r.mask]).all() and (full[~r.mask] == photo[~r.mask]).all()
    half = overlay_mesh(photo, r, alpha=0.5).astype(int)
    mix = (photo[r.mask].astype(int) + r.image[r.mask].astype(int)) / 2
    assert np.abs(half[r.mask] - mix).max() <= 0.5
    with pytest.raises(ValueError, match="alpha"):
        overlay_mesh(photo, r, alpha=2.0)


@pytest.fixture(scope="module")
def anny_rest() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame vertices (m), faces and COCO-17 camera-frame keypoints of anny's rest pose, 4.5 m away."""
    os.environ.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))
    from p2m.paths import cache_dir, configure_third_party_caches

    if not any((cache_dir() / "anny").glob("**/build_compact_model_data_*.safetensors")):
        pytest.skip(f"no anny cache under {cache_dir() / 'anny'}; run `python -m p2m.body.prepare`")
    configure_third_party_caches()
    torch = pytest.importorskip("torch")
    anny = pytest.importorskip("anny")
    model = anny.Anny().float()
    with torch.no_grad():
        out = model(pose_parameters=torch.eye(4).expand(1, len(model.bone_labels), 4, 4))
        kp = anny.KeypointsRegressor.coco(model)(out)[0, :17].double().numpy()
    v = out["vertices"][0].double().numpy()

    def to_cam(a: np.ndarray) -> np.ndarray:  # anny (+X left, -Y forward, +Z up) -> camera (x right, y down)
        return np.stack([a[:, 0], -a[:, 2], a[:, 1] + 4.5], axis=1)

    return to_cam(v), np.asarray(model.faces, np.int64), to_cam(kp)


@pytest.mark.slow
@pytest.mark.body
def test_anny_mesh_renders_as_a_person(anny_rest: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    cam, faces, _ = anny_rest
    bg = procedural_background(512, 512, np.random.default_rng(0))
    r = render_mesh(cam, faces, 1000.0, (256.0, 256.0), (512, 512), background=bg)
    rows, cols = np.nonzero(r.mask)
    expected = 1000.0 * (cam[:, 1].max() - cam[:, 1].min()) / 4.5
    assert abs((rows.max() - rows.min()) - expected) < 0.03 * expected
    assert r.mask[rows.min() + 20, 240:272].any()  # the head is at the top centre
    assert set(np.unique(r.face_index[r.mask])) <= set(range(len(faces)))
    shades = r.image[r.mask].astype(float).mean(axis=1)
    assert shades.std() > 8  # shaded, not a flat silhouette


@pytest.mark.slow
@pytest.mark.body
def test_mediapipe_finds_the_rendered_person(anny_rest: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
    mp = pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    if not hasattr(mp, "solutions"):
        pytest.skip("this mediapipe has no mp.solutions (need mediapipe==0.10.21)")
    cam, faces, kp = anny_rest
    bg = procedural_background(512, 512, np.random.default_rng(11))
    r = render_mesh(cam, faces, 1000.0, (256.0, 256.0), (512, 512), background=bg)
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        res = pose.process(r.image)
    assert res.pose_landmarks is not None, "mediapipe found no person on the render"
    mp_to_coco = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    lm = res.pose_landmarks.landmark
    found = np.array([[lm[i].x * 512, lm[i].y * 512] for i in mp_to_coco])
    truth = 1000.0 * kp[:, :2] / kp[:, 2:] + 256.0
    err = np.linalg.norm(found - truth, axis=1).mean()
    assert err < 15.0


def test_small_chunks_give_identical_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # Big triangles get split into row strips and groups into chunks; the image must not change.
    rng = np.random.default_rng(4)
    tris = rng.uniform([-3, -3, 2], [3, 3, 7], (40, 3, 3))
    args = (tris.reshape(-1, 3), np.arange(120).reshape(-1, 3), 60.0, (64.2, 48.7), (128, 96))
    ref = render_mesh(*args)
    monkeypatch.setattr(render_module, "_CHUNK", 50)
    small = render_mesh(*args)
    assert ref.mask.sum() > 2000
    assert (
        ref.image.tobytes() == small.image.tobytes()
        and ref.face_index.tobytes() == small.face_index.tobytes()
    )
