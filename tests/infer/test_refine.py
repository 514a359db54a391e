"""Rigid hands and feet (p2m.infer.refine): seam, improvement on blurred ground truth, frames, batches, topologies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2m.infer import refine as R
from p2m.infer.refine_view import refine_figure, write_png


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def ground_truth(body, num: int, seed: int = 0) -> np.ndarray:
    """(num, V, 3) held-out people (CMU eval poses, random shapes), root-relative, randomly rotated, mm."""
    from p2m.annotate.synth import sample_shapes
    from p2m.body.poses import load_pose_source

    rng = np.random.default_rng(seed)
    pose = load_pose_source("cmu-eval").sample(num, rng)
    shape = sample_shapes(num, rng)
    with torch.no_grad():
        out = body(torch.as_tensor(pose, dtype=torch.float32), torch.as_tensor(shape, dtype=torch.float32))
    v = (out.vertices - out.joints[:, :1]).double().numpy() * 1000.0
    return np.stack([v[i] @ _random_rotation(rng).T for i in range(num)])


def blurred(body, gt: np.ndarray, noise_mm: float = 2.0, seed: int = 1) -> np.ndarray:
    """Ground truth with Laplacian-smoothed hands and feet plus noise everywhere: a graph-CNN-like blur."""
    regions = R.extremity_regions(body)
    member = np.clip(sum(e.membership for e in regions.values()), 0, 1)
    smooth = R.blur_extremities(torch.from_numpy(gt), body.faces.numpy(), member, radius=60.0).numpy()
    return smooth + np.random.default_rng(seed).normal(0.0, noise_mm, gt.shape)


def extremity_error(pred: np.ndarray, gt: np.ndarray, body) -> float:
    core = np.concatenate([e.core for e in R.extremity_regions(body).values()])
    return float(np.linalg.norm(pred[..., core, :] - gt[..., core, :], axis=-1).mean())


# ------------------------------------------------------------------------------------------------ regions
def test_regions_are_the_hands_and_feet(body_1229):
    regions = R.extremity_regions(body_1229)
    assert list(regions) == ["left_hand", "right_hand", "left_foot", "right_foot"]
    names = body_1229.bone_names
    assert [names[regions[k].bone] for k in regions] == ["LeftHand", "RightHand", "LeftFoot", "RightFoot"]
    assert {names[b] for b in regions["left_hand"].bones} == {
        "LeftHand",
        "LThumb",
        "LeftFingerBase",
        "LeftHandFinger1",
    }
    assert {names[b] for b in regions["right_foot"].bones} == {"RightFoot", "RightToeBase"}
    lo, hi = R.SEAM
    for ext in regions.values():
        assert len(ext.core) > 20
        assert ((ext.weight >= 0) & (ext.weight <= 1)).all()
        assert (ext.weight[ext.membership <= lo] == 0).all()
        assert (ext.weight[ext.membership >= hi] == 1).all()
        seam = (ext.membership > lo) & (ext.membership < hi)
        assert seam.any() and ((ext.weight[seam] > 0) & (ext.weight[seam] < 1)).all()
    # no vertex belongs to two extremities, and the left hand lies on the subject's left (+x in anny's frame)
    assert (sum((e.weight > 0).astype(int) for e in regions.values()) <= 1).all()
    with torch.no_grad():
        rest = body_1229(torch.zeros(1, body_1229.num_bones, 3)).vertices[0].numpy()
    assert rest[regions["left_hand"].core, 0].mean() > 0.4 > -0.4 > rest[regions["right_hand"].core, 0].mean()
    assert rest[regions["left_foot"].core, 2].mean() < -0.8


def test_bad_arguments(body_1229):
    with pytest.raises(ValueError, match="method"):
        R.ExtremityRefiner(body_1229, "magic")
    with pytest.raises(ValueError, match="blend"):
        R.ExtremityRefiner(body_1229, "paste", "whole")
    with pytest.raises(ValueError, match="seam"):
        R.extremity_regions(body_1229, seam=(0.6, 0.2))
    with pytest.raises(ValueError, match=r"expected \(B, 1229, 3\)"):
        R.refine_extremities(np.zeros((2, 1000, 3)), body_1229, "paste")


# ------------------------------------------------------------------------------------------------ paste (b)
def test_paste_improves_blurred_extremities_and_keeps_the_rest(body_1229):
    gt = ground_truth(body_1229, 4)
    inp = blurred(body_1229, gt)
    res = R.refine_extremities(inp, body_1229, method="paste")
    assert isinstance(res.vertices, np.ndarray) and res.vertices.shape == inp.shape and res.fitted is None
    before, after = extremity_error(inp, gt, body_1229), extremity_error(res.vertices, gt, body_1229)
    assert before > 15.0  # the blur is real
    assert after / before < 0.65
    far = res.weight == 0
    assert far.sum() > 0.6 * len(far)
    np.testing.assert_array_equal(res.vertices[:, far], inp[:, far])  # bit for bit, not approximately
    assert (np.linalg.norm(res.vertices - inp, axis=-1)[:, res.weight > 0.5] > 0.1).all()


def test_paste_is_batched_frame_free_and_keeps_torch_types(body_1229):
    gt = blurred(body_1229, ground_truth(body_1229, 3, seed=3))
    refiner = R.ExtremityRefiner(body_1229, "paste")
    batch = refiner(torch.from_numpy(gt).float())
    assert isinstance(batch.vertices, torch.Tensor) and batch.vertices.dtype == torch.float32
    single = refiner(torch.from_numpy(gt[1]).float())
    assert single.vertices.shape == (body_1229.num_vertices, 3)
    torch.testing.assert_close(single.vertices, batch.vertices[1], atol=1e-3, rtol=0)
    far = torch.from_numpy(batch.weight == 0)
    assert torch.equal(
        batch.vertices[:, far], torch.from_numpy(gt).float()[:, far]
    )  # float32 kept bit for bit
    # a rigid motion of the input moves the output with it (the paste aligns to the mesh, in any frame)
    rot = _random_rotation(np.random.default_rng(7))
    moved = refiner(gt[1] @ rot.T + np.array([10.0, -20.0, 30.0])).vertices
    np.testing.assert_allclose(
        moved, single.vertices.double().numpy() @ rot.T + [10.0, -20.0, 30.0], atol=1e-2
    )


def test_paste_on_the_fine_topologies(body_notoes, body_full):
    for body in (body_notoes, body_full):
        gt = ground_truth(body, 2, seed=5)
        inp = blurred(body, gt)
        res = R.refine_extremities(inp, body, method="paste")
        assert res.vertices.shape == (2, body.num_vertices, 3)
        assert extremity_error(res.vertices, gt, body) / extremity_error(inp, gt, body) < 0.7
        np.testing.assert_array_equal(res.vertices[:, res.weight == 0], inp[:, res.weight == 0])


# ------------------------------------------------------------------------------------------------ fit (a)
def test_fit_improves_blurred_extremities_in_any_frame(body_1229):
    gt = ground_truth(body_1229, 2, seed=11)  # randomly rotated: the fit must solve the global rotation
    inp = blurred(body_1229, gt)
    res = R.refine_extremities(inp, body_1229, method="fit", steps=60)
    assert res.vertices.shape == inp.shape and res.fitted.shape == inp.shape
    assert extremity_error(res.vertices, gt, body_1229) / extremity_error(inp, gt, body_1229) < 0.6
    np.testing.assert_array_equal(res.vertices[:, res.weight == 0], inp[:, res.weight == 0])
    # the fitted body mesh lies on the input everywhere, not only at the hands (the global transform is right)
    body_err = np.linalg.norm(res.fitted - gt, axis=-1)[:, res.weight == 0].mean(axis=1)
    assert (body_err < 15.0).all(), body_err
    assert res.fit_rms.shape == (2,) and (res.fit_rms < 25.0).all()
    whole = R.refine_extremities(inp[0], body_1229, method="fit", blend="whole", steps=60)
    assert whole.vertices.shape == (body_1229.num_vertices, 3) and (whole.weight == 1).all()


@pytest.mark.slow
def test_fit_on_the_fine_topologies(body_notoes, body_full):
    for body in (body_notoes, body_full):
        gt = ground_truth(body, 1, seed=13)
        inp = blurred(body, gt)
        res = R.refine_extremities(torch.from_numpy(inp[0]), body, method="fit", steps=40)
        assert res.vertices.shape == (body.num_vertices, 3)
        assert extremity_error(res.vertices.numpy(), gt[0], body) / extremity_error(inp[0], gt[0], body) < 0.7
        far = torch.from_numpy(res.weight == 0)
        assert torch.equal(res.vertices[far], torch.from_numpy(inp[0])[far])


def test_refines_a_network_output(tiny_config, body_1229, graph_cache):
    """What `p2m infer` hands over: Pose2Mesh's mesh (float32 torch, mm, camera frame), refined in place of it."""
    from p2m.pose2mesh.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_config, body=body_1229, cache_dir=graph_cache).eval()
    with torch.no_grad():
        mesh = model(torch.randn(2, 17, 2)).mesh
    for method in R.METHODS:
        res = R.refine_extremities(mesh, body_1229, method=method, steps=10)
        assert res.vertices.shape == mesh.shape and res.vertices.dtype == mesh.dtype
        assert torch.isfinite(res.vertices).all()
        far = torch.from_numpy(res.weight == 0)
        assert torch.equal(res.vertices[:, far], mesh[:, far])
        assert not torch.equal(res.vertices, mesh)


# ------------------------------------------------------------------------------------------------ helpers
def test_blur_moves_only_weighted_vertices(body_1229):
    gt = ground_truth(body_1229, 1)
    weight = np.zeros(body_1229.num_vertices)
    hand = R.extremity_regions(body_1229)["left_hand"]
    weight[hand.core] = 1.0
    out = R.blur_extremities(torch.from_numpy(gt[0]), body_1229.faces.numpy(), weight, iterations=5).numpy()
    moved = np.linalg.norm(out - gt[0], axis=1) > 0
    assert moved[hand.core].mean() > 0.9 and not moved[weight == 0].any()


def test_kabsch_recovers_a_rigid_motion():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.normal(size=(2, 30, 3)))
    rot = torch.from_numpy(np.stack([_random_rotation(rng) for _ in range(2)]))
    dst = torch.einsum("bij,bnj->bni", rot, src) + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    r, t = R.kabsch(src, dst)
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=torch.float64))


def test_figure(body_1229, tmp_path):
    gt = ground_truth(body_1229, 1)[0]
    inp = blurred(body_1229, gt[None])[0]
    res = R.refine_extremities(inp, body_1229, method="paste")
    regions = R.extremity_regions(body_1229)
    img = refine_figure(
        {"before": inp, "after": res.vertices, "truth": gt},
        body_1229.faces,
        regions,
        weight=res.weight,
        panel=96,
    )
    assert img.shape == (18 + 4 * 96, 3 * 96, 3) and img.dtype == np.uint8
    panels = [img[18 + r * 96 : 18 + (r + 1) * 96, c * 96 : (c + 1) * 96] for r in range(4) for c in range(3)]
    assert all((p != 245).any(axis=-1).mean() > 0.03 for p in panels)  # every panel shows some mesh
    before, after = img[18:, :96].astype(int), img[18:, 96:192].astype(int)
    assert np.abs(before - after).mean() > 1.0
    write_png(tmp_path / "refine.png", img)
    from PIL import Image

    with Image.open(tmp_path / "refine.png") as im:
        assert im.size == (3 * 96, 18 + 4 * 96)
