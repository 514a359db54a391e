"""Texture from a photo: a render of a mesh with a KNOWN texture is turned back into that texture.

The photo is made per pixel: render_mesh's face_index + perspective-correct barycentrics give the UV under each
pixel centre and the known texture is sampled there bilinearly. Recovery samples that photo bilinearly at each
texel's projection. So every recovered texel went through two bilinear resamplings and two roundings to uint8.

PSNR bounds, asserted over the seen texels of the latitude band |lat| < 63 degrees of the spheres (towards a
pole a texel row of the latitude-longitude layout shrinks to a point, one photo pixel covers many texels, and no
photo can hold the texture there; over all seen texels only >= 28 dB is asserted, 37.5 / 32.7 dB measured for
pinhole / weak perspective):

- Smooth parts (texels over 2 texels from a checker edge): the sinusoids have periods L >= 85 texels, so linear
  interpolation errs by at most A (2 pi / L)^2 / 8 = 0.03 grey levels (A = 45) per resampling; what is left
  is the two roundings to uint8, |error| <= 1 level, i.e. MSE <= 1 and PSNR >= 48.1 dB. Asserted >= 48 dB;
  measured 72 dB (pinhole) and 64 dB (weak perspective): most texels come back exact. The photo magnifies
  the texture (>= 2 photo pixels per texel even at the grazing-angle cut-off, min_cos = 0.2), so it resolves
  every texel there.
- Checker edges: a 90-level step is smeared over +-1 texel by the first resampling and +-1 photo pixel by the
  second, so texels next to an edge are off by up to tens of levels: >= 33 dB asserted over the band,
  38.7 dB (pinhole) / 35.3 dB (weak) measured.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2m.export import (
    UVLayout,
    body_uv_layout,
    rasterize_uv,
    split_seams,
    texture_from_photo,
    write_textured_obj,
)

from .helpers import psnr, render_textured, uv_sphere

T = 256
W = H = 512
F, C = 700.0, (255.5, 255.5)
GREEN = (0, 255, 0)


def _known_texture(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, t, 3) uint8: smooth sinusoids (periodic in u) half-mixed with a 16 x 8 checker, and the edge mask."""
    v, u = np.meshgrid(1 - (np.arange(t) + 0.5) / t, (np.arange(t) + 0.5) / t, indexing="ij")
    smooth = np.stack(
        [
            128 + 90 * np.sin(2 * np.pi * 3 * u) * np.cos(2 * np.pi * v),
            128 + 90 * np.cos(2 * np.pi * 2 * u + 1),
            40 + 180 * v,
        ],
        axis=-1,
    )
    cell = (np.floor(u * 16) + np.floor(v * 8)) % 2
    tex = 0.5 * smooth + 0.5 * np.where(cell == 0, 220.0, 40.0)[..., None]
    # texels within 2 texels of a checker edge
    near_edge = np.zeros((t, t), bool)
    for d in range(-2, 3):
        near_edge |= np.roll(cell, d, axis=0) != cell
        near_edge |= np.roll(cell, d, axis=1) != cell
    return np.clip(np.rint(tex), 0, 255).astype(np.uint8), near_edge


def _two_spheres() -> tuple[np.ndarray, np.ndarray, UVLayout, np.ndarray]:
    """A big sphere with a small one in front of it (self-occlusion), one mesh, UVs side by side.

    Returns vertices (camera frame), faces, layout and (V,) True for the big sphere's vertices.
    """
    big_v, big_f, big_uv = uv_sphere(32, 64, 1.0)
    small_v, small_f, small_uv = uv_sphere(16, 32, 0.35)
    verts = np.concatenate([big_v + [0.0, 0.0, 3.2], small_v + [0.3, -0.2, 1.7]])
    faces = np.concatenate([big_f, small_f + len(big_v)])
    uv = np.concatenate([big_uv.uv * [0.5, 1.0], small_uv.uv * [0.5, 1.0] + [0.5, 0.0]])
    face_uv = np.concatenate([big_uv.face_uv, small_uv.face_uv + len(big_uv.uv)])
    is_big = np.arange(len(verts)) < len(big_v)
    return verts, faces, UVLayout(uv, face_uv), is_big


@pytest.mark.parametrize("camera", ["pinhole", "weak_perspective"])
def test_known_texture_is_recovered(camera):
    verts, faces, layout, is_big = _two_spheres()
    known, near_edge = _known_texture(T)
    if camera == "pinhole":
        photo = render_textured(verts, faces, layout, known, F, C, (W, H), GREEN)
        res = texture_from_photo(photo, verts, faces, layout, f=F, c=C, tex_size=T)
    else:  # a near-orthographic photo: the scene 10 km away through a matching long lens
        far = verts + [0.0, 0.0, 1e4 - 3.0]
        photo = render_textured(far, faces, layout, known, F * 1e4 / 3.0, C, (W, H), GREEN)
        res = texture_from_photo(photo, verts, faces, layout, weak_perspective=(F / 3.0, *C), tex_size=T)

    seen = res.seen
    assert res.texture.shape == (T, T, 3) and res.texture.dtype == np.uint8
    assert 0.1 < res.seen_fraction < 0.5
    band = np.zeros((T, T), bool)
    band[np.abs((np.arange(T) + 0.5) / T - 0.5) < 0.35] = True
    assert psnr(res.texture[seen], known[seen]) >= 28.0
    in_band = seen & band
    smooth = in_band & ~near_edge
    assert in_band.sum() > 0.8 * seen.sum() and smooth.sum() > 5000
    assert psnr(res.texture[in_band], known[in_band]) >= 33.0
    assert psnr(res.texture[smooth], known[smooth]) >= 48.0

    # Unseen texels (the far sides) got the mean seen colour: no mirror data was given.
    unseen = res.covered & ~seen
    assert unseen.sum() > 0.5 * res.covered.sum()
    assert not res.mirrored.any()
    np.testing.assert_array_equal(
        res.texture[unseen], np.broadcast_to(np.rint(res.mean_color), (unseen.sum(), 3))
    )
    np.testing.assert_allclose(res.mean_color, res.texture[seen].mean(axis=0), atol=0.5)


def test_hidden_surface_is_not_textured():
    """The big sphere's texels behind the small one face the camera but are occluded: never 'seen'."""
    verts, faces, layout, is_big = _two_spheres()
    known, _ = _known_texture(T)
    photo = render_textured(verts, faces, layout, known, F, C, (W, H), GREEN)
    res = texture_from_photo(photo, verts, faces, layout, f=F, c=C, tex_size=T)
    face_of, bary = rasterize_uv(layout, T)
    covered = face_of >= 0
    point = np.einsum("nk,nkd->nd", bary[covered].astype(np.float64), verts[faces[face_of[covered]]])
    u, v = F * point[:, 0] / point[:, 2] + C[0], F * point[:, 1] / point[:, 2] + C[1]
    # the small sphere's silhouette: its centre (0.3, -0.2, 1.7) and radius 0.35 seen from the origin
    centre = np.array([F * 0.3 / 1.7 + C[0], F * -0.2 / 1.7 + C[1]])
    dist = np.hypot(u - centre[0], v - centre[1]) / (F * 0.35 / 1.7)
    behind = (dist < 0.9) & is_big[faces[face_of[covered], 0]]
    normal = point - [0.0, 0.0, 3.2]
    facing = np.einsum("nd,nd->n", normal, -point) > 0.3 * np.linalg.norm(point, axis=1)
    hidden = behind & facing
    assert hidden.sum() > 200
    assert not res.seen[covered][hidden].any()
    clear = (dist > 1.3) & facing & is_big[faces[face_of[covered], 0]] & (np.abs(v - C[1]) < 0.8 * F / 3.2)
    assert res.seen[covered][clear].mean() > 0.95


@pytest.fixture(scope="module")
def body_case(body_1229):
    """anny (1,229 v, triangle atlas) in its rest pose with a left/right symmetric painted texture, seen from its left."""
    from scipy.ndimage import distance_transform_edt

    with torch.no_grad():
        rest = body_1229(torch.zeros((1, body_1229.num_bones, 3))).vertices[0].double().numpy()
    faces = body_1229.faces.numpy()
    t = 512
    layout = body_uv_layout(body_1229, t)
    assert layout.kind == "atlas"
    face_of, bary = rasterize_uv(layout, t)
    covered = face_of >= 0
    p = np.einsum("nk,nkd->nd", bary[covered].astype(np.float64), rest[faces[face_of[covered]]])
    x = np.abs(p[:, 0])  # symmetric in anny's x (the subject's left)
    paint = np.stack(
        [
            128 + 90 * np.sin(2 * np.pi * x / 0.5),
            128 + 90 * np.cos(2 * np.pi * p[:, 2] / 0.8),
            128 + 90 * np.sin(2 * np.pi * p[:, 1] / 0.6),
        ],
        axis=-1,
    )
    known = np.zeros((t, t, 3))
    known[covered] = paint
    _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)  # gutters: as a viewer-ready texture
    known = np.clip(np.rint(known[iy, ix]), 0, 255).astype(np.uint8)
    # camera on the subject's left (+x), looking towards -x, image up = +z: x_cam = y, y_cam = -z, z_cam = -x
    rot = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
    assert np.isclose(np.linalg.det(rot), 1.0)
    cam = rest @ rot.T + [0.0, -0.05, 2.6]
    photo = render_textured(cam, faces, layout, known, 600.0, (255.5, 255.5), (W, H), GREEN)
    res = texture_from_photo(
        photo, cam, faces, layout, f=600.0, c=(255.5, 255.5), tex_size=t, mirror_vertices=rest, mirror_axis=0
    )
    return res, known, rest, layout


def test_unseen_side_is_filled_from_the_mirror_side(body_case):
    res, known, _, _ = body_case
    cov = res.covered.sum()
    assert 0.15 < res.seen_fraction < 0.6, res.seen_fraction
    assert res.mirrored.sum() > 0.15 * cov
    assert not (res.mirrored & res.seen).any()
    seen_psnr = psnr(res.texture[res.seen], known[res.seen])
    mirror_psnr = psnr(res.texture[res.mirrored], known[res.mirrored])
    # Seen: the painted texture is smooth (periods >= 0.5 m), but the atlas cuts it at every triangle edge and a
    # bilinear tap near one reads the gutter: measured 50.4 dB. Mirrored: each copies the seen texel nearest to its
    # mirror point, up to mirror_tol = 3 texel spacings (~1 cm) away, along gradients up to ~11 levels/cm:
    # measured 42.4 dB.
    assert seen_psnr >= 40.0, seen_psnr
    assert mirror_psnr >= 35.0, mirror_psnr
    # What neither side saw got the mean colour; gutters copy a covered neighbour (no black seams).
    rest = res.covered & ~res.seen & ~res.mirrored
    np.testing.assert_array_equal(
        res.texture[rest], np.broadcast_to(np.rint(res.mean_color), (rest.sum(), 3))
    )
    assert (res.texture[~res.covered].astype(int).sum(axis=1) > 100).all()


def test_textured_obj_opens_in_trimesh(body_case, body_1229, tmp_path):
    import trimesh

    res, _, rest, layout = body_case
    obj, mtl, png = write_textured_obj(tmp_path / "body.obj", rest, body_1229.faces, layout, res.texture)
    assert (obj.name, mtl.name, png.name) == ("body.obj", "body.mtl", "body.png")
    assert "map_Kd body.png" in mtl.read_text()
    mesh = trimesh.load(str(obj), process=False)
    assert len(mesh.faces) == len(body_1229.faces)
    assert mesh.visual.uv.shape == (len(mesh.vertices), 2)
    np.testing.assert_allclose(mesh.visual.uv[mesh.faces], layout.corners(), atol=1e-5)
    np.testing.assert_allclose(mesh.vertices[mesh.faces], rest[body_1229.faces.numpy()], atol=1e-5)
    image = np.asarray(mesh.visual.material.image.convert("RGB"))
    np.testing.assert_array_equal(image, res.texture)


def test_bad_camera_is_named():
    verts, faces, layout, _ = _two_spheres()
    photo = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="a camera is needed"):
        texture_from_photo(photo, verts, faces, layout, tex_size=16)
    with pytest.raises(ValueError, match="not both"):
        texture_from_photo(
            photo, verts, faces, layout, f=1.0, c=(0, 0), weak_perspective=(1, 0, 0), tex_size=16
        )
    with pytest.raises(ValueError, match="behind the camera"):
        texture_from_photo(photo, verts - [0, 0, 10], faces, layout, f=1.0, c=(0, 0), tex_size=16)


@pytest.mark.slow
def test_notoes_carries_annys_uvs(body_notoes):
    """The production mesh (anny notoes, 12,272 v) gets MakeHuman's UVs: in [0, 1], one texel per face at most."""
    body = body_notoes
    layout = body_uv_layout(body, 1024)
    assert layout.kind == "anny" and layout.num_faces == len(body.faces)
    assert (layout.uv >= 0).all() and (layout.uv <= 1).all()
    corners = layout.corners()
    area = 0.5 * np.abs(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])).sum()
    face_of, _ = rasterize_uv(layout, 1024)
    coverage = (face_of >= 0).mean()
    assert 0.55 < coverage < 0.7
    assert abs(area - coverage) < 0.002  # no overlaps beyond the re-meshed toes (0.03 % measured)
    # UV seams split vertices only where the MakeHuman layout has seams.
    source, _, new_faces = split_seams(body.faces, layout)
    assert len(body.faces) == len(new_faces) and len(source) < 1.3 * body.num_vertices
    np.testing.assert_array_equal(source[new_faces], body.faces.numpy())
