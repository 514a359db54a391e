"""Input normalisation, the seeded 2D error models and flips, in torch on whole batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from p2m.joints import H36M_FLIP_PAIRS, flip_permutation
from p2m.pose2mesh.config import NoiseConfig, TransformConfig
from p2m.pose2mesh.transforms import (
    H36M_DERIVED,
    CounterRNG,
    Pose2DTransform,
    batch_seeds,
    expand_to_aspect,
    flip_crop_joints,
    flip_joints3d,
    gaussian_errors,
    joint_set_info,
    joints_bbox,
    key_seeds,
    normalize_pose2d,
    posefix_errors,
)

PERM = torch.as_tensor(np.asarray(flip_permutation(H36M_FLIP_PAIRS, 17)))


def _pose(seed: int = 0, n: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (17, 2) if n is None else (n, 17, 2)
    return rng.uniform([200, 100], [400, 500], size=shape)


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _numpy_normalize(p: np.ndarray, vis: np.ndarray | None = None, crop=(288, 384)) -> np.ndarray:
    """The numpy float64 normalisation the trainer used before (the reference for the torch one)."""
    mask = np.ones(p.shape[:-1], bool) if vis is None else vis > 0
    mask = np.where(mask.any(-1, keepdims=True), mask, True)
    lo = np.where(mask[..., None], p, np.inf).min(-2)
    hi = np.where(mask[..., None], p, -np.inf).max(-2)
    x, y, w, h = lo[..., 0], lo[..., 1], hi[..., 0] - lo[..., 0], hi[..., 1] - lo[..., 1]
    aspect = crop[0] / crop[1]
    w2 = np.where(w > aspect * h, w, aspect * h)
    h2 = np.where(w > aspect * h, w / aspect, h)
    box = np.stack([x + w / 2 - w2 / 2, y + h / 2 - h2 / 2, w2, h2], -1)[..., None, :]
    c = (p - box[..., :2]) / box[..., 2:] * np.array(crop) / np.array(crop)
    return (c - c.mean(-2, keepdims=True)) / np.maximum(c.std(-2, keepdims=True), 1e-6)


def test_bbox_and_aspect():
    p = _t([[10.0, 20.0], [30.0, 100.0], [0.0, 0.0]])
    torch.testing.assert_close(joints_bbox(p, torch.tensor([1, 1, 0])), _t([10, 20, 20, 80]))
    torch.testing.assert_close(joints_bbox(p), _t([0, 0, 30, 100]))
    torch.testing.assert_close(
        expand_to_aspect(_t([10.0, 20.0, 20.0, 80.0]), 0.75), _t([-10, 20, 60, 80])
    )  # widen
    torch.testing.assert_close(
        expand_to_aspect(_t([0.0, 0.0, 90.0, 60.0]), 0.75), _t([0, -30, 90, 120])
    )  # heighten


def test_normalisation_is_the_numpy_one_in_float32():
    p = _pose(0, 64)
    vis = np.random.default_rng(1).integers(0, 3, size=(64, 17)).astype(np.float32)
    vis[3] = 0  # no visible joint: all joints set the bbox
    got = normalize_pose2d(_t(p), _t(vis))
    assert got.dtype == torch.float32 and got.shape == (64, 17, 2)
    np.testing.assert_allclose(got.numpy(), _numpy_normalize(p, vis), atol=2e-5)
    as_numpy = normalize_pose2d(p[0])  # arrays in, float32 array out (inference passes arrays)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    np.testing.assert_allclose(as_numpy, _numpy_normalize(p[0]), atol=2e-5)


def test_normalisation_is_a_per_axis_zscore_and_invariant_to_position_and_scale():
    p = _pose()
    z = normalize_pose2d(p)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)  # each axis separately
    moved = p * np.array([2.0, 3.0]) + np.array([50.0, -20.0])  # per-axis scale: still the same z-score
    np.testing.assert_allclose(normalize_pose2d(moved), z, atol=1e-5)


def test_eval_transform_is_the_plain_normalisation():
    t = Pose2DTransform(TransformConfig(flip_prob=1.0), train=False)
    out = t(_t(_pose(0, 3)), joints3d=torch.ones(3, 17, 3))
    torch.testing.assert_close(out.pose2d, normalize_pose2d(_t(_pose(0, 3))))
    assert not out.flipped.any() and (out.error_kind == -1).all() and bool((out.joints3d == 1).all())


def test_noise_depends_on_the_seed_of_each_sample_only():
    t = Pose2DTransform(TransformConfig(noise=NoiseConfig(kind="posefix")), train=True)
    p = _t(_pose(0, 6))
    seeds = batch_seeds(6, 7, 3, 11)
    a = t(p, seeds=seeds).pose2d
    torch.testing.assert_close(t(p, seeds=seeds).pose2d, a, rtol=0, atol=0)
    assert (a - t(p, seeds=batch_seeds(6, 7, 3, 12)).pose2d).abs().max() > 1e-3
    # the same sample in another batch, at another row, alone: the same noise
    torch.testing.assert_close(t(p[[4, 1]], seeds=seeds[[4, 1]]).pose2d, a[[4, 1]], rtol=0, atol=0)
    torch.testing.assert_close(t(p[2:3], seeds=seeds[2:3]).pose2d, a[2:3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="seeds"):
        t(p)


def test_evaluation_noise_depends_on_the_key_and_eval_seed_not_on_batching():
    keys = [f"h36m_s009_a002_sa001_c0001_f{i:06d}_p00" for i in range(10)]
    seeds = key_seeds(keys, 0)
    assert torch.equal(key_seeds(keys[3:5], 0), seeds[3:5]) and not torch.equal(key_seeds(keys, 1), seeds)
    t = Pose2DTransform(TransformConfig(flip_prob=0.0, noise=NoiseConfig(kind="gaussian")), train=True)
    p = _t(_pose(2, 10))
    whole = t(p, seeds=seeds).pose2d
    parts = torch.cat([t(p[i : i + 3], seeds=key_seeds(keys[i : i + 3], 0)).pose2d for i in range(0, 10, 3)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=0)


def test_counter_rng_gives_uniform_and_normal_numbers():
    rng = CounterRNG(batch_seeds(4000, 5))
    u = rng.uniform(50)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert float(u.mean()) == pytest.approx(0.5, abs=0.003) and float(u.var()) == pytest.approx(
        1 / 12, abs=0.002
    )
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.003
    z = rng.normal(50)
    assert float(z.mean()) == pytest.approx(0, abs=0.01) and float(z.std()) == pytest.approx(1, abs=0.01)
    assert float((z.abs() < 1.96).float().mean()) == pytest.approx(0.95, abs=0.005)
    v = rng.uniform(50)  # the next draw is another stream
    assert abs(float(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1])) < 0.01


def test_gaussian_errors_have_the_configured_spread():
    crop = torch.zeros(20000, 17, 2)
    std = torch.linspace(1.0, 9.0, 17)
    noised = gaussian_errors(crop, CounterRNG(batch_seeds(20000, 0)), std, prob=0.9)
    moved = noised.abs().sum(-1) > 0
    assert float(moved.float().mean()) == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(noised[..., 0].std(dim=0).numpy(), (std * np.sqrt(0.9)).numpy(), rtol=0.05)


def test_posefix_kinds_follow_their_probabilities_and_distances():
    info = joint_set_info("h36m")
    crop = _t(np.broadcast_to(_pose(3), (20000, 17, 2)).copy())
    noised, kind = posefix_errors(crop, CounterRNG(batch_seeds(20000, 1)), info, NoiseConfig(kind="posefix"))
    # derived joints (Pelvis, Torso, Neck) are never drawn themselves and move with their parents' mean offset
    assert (kind[:, list(H36M_DERIVED)] == -1).all()
    delta = noised - crop
    torch.testing.assert_close(delta[:, 0], delta[:, [1, 4]].mean(dim=1), atol=1e-3, rtol=0)
    torch.testing.assert_close(delta[:, 8], delta[:, [11, 14]].mean(dim=1), atol=1e-3, rtol=0)
    # wrists (limb ends): jitter 0.20, miss 0.10, inversion 0.06
    wrist = kind[:, 13]
    assert float((wrist == 1).float().mean()) == pytest.approx(0.20, abs=0.015)
    assert float((wrist == 2).float().mean()) == pytest.approx(0.10, abs=0.01)
    assert float((wrist == 3).float().mean()) == pytest.approx(0.06, abs=0.01)
    assert not (kind[:, 9] == 3).any()  # the nose has no left/right partner: never inverted
    # inverted joints land near their partner; misses move further than jitters, jitters further than good ones
    inv = wrist == 3
    to_partner = (noised[inv, 13] - crop[inv, 16]).norm(dim=-1)
    to_self = (noised[inv, 13] - crop[inv, 13]).norm(dim=-1)
    assert float((to_partner < to_self).float().mean()) > 0.95
    dist = delta[:, 13].norm(dim=-1)
    assert float(dist[wrist == 2].min()) >= float(dist[wrist == 1].max()) - 1e-3
    assert float(dist[wrist == 1].min()) >= float(dist[wrist == 0].max()) - 1e-3


def test_posefix_leaves_invalid_joints_and_raises_rates_with_few_valid():
    info = joint_set_info("h36m")
    crop = _t(np.broadcast_to(_pose(4), (20000, 17, 2)).copy())
    vis = torch.ones(20000, 17)
    vis[:, 8:] = 0  # 8 valid joints -> few_valid_scale applies
    noised, kind = posefix_errors(
        crop, CounterRNG(batch_seeds(20000, 2)), info, NoiseConfig(kind="posefix"), vis
    )
    assert torch.equal(noised[:, 9:], crop[:, 9:]) and (kind[:, 9:] == -1).all()
    assert float((kind[:, 3] == 1).float().mean()) == pytest.approx(
        0.30, abs=0.015
    )  # ankle jitter 0.20 x 1.5


def test_flip_twice_is_identity_and_mirrors_3d():
    crop = _t(_pose(5))
    torch.testing.assert_close(flip_crop_joints(flip_crop_joints(crop, 288, PERM), 288, PERM), crop)
    q = torch.randn(17, 3, generator=torch.Generator().manual_seed(0))
    f = flip_joints3d(q, PERM)
    torch.testing.assert_close(f[4], q[1] * torch.tensor([-1.0, 1, 1]))  # L_Hip <- mirrored R_Hip
    torch.testing.assert_close(f[0], q[0] * torch.tensor([-1.0, 1, 1]))


def test_flip_in_the_pipeline_mirrors_input_and_target():
    cfg = TransformConfig(flip_prob=1.0, noise=NoiseConfig(kind="none"))
    p, q = _t(_pose(6, 2)), torch.randn(2, 17, 3, generator=torch.Generator().manual_seed(1))
    out = Pose2DTransform(cfg, train=True)(p, joints3d=q, seeds=batch_seeds(2, 0))
    plain = normalize_pose2d(p)
    assert out.flipped.all()
    torch.testing.assert_close(
        out.pose2d[..., 0], -plain[:, PERM, 0], atol=1e-5, rtol=0
    )  # x mirrored about 0
    torch.testing.assert_close(out.pose2d[..., 1], plain[:, PERM, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.joints3d, flip_joints3d(q, PERM))
    half = Pose2DTransform(dataclasses.replace(cfg, flip_prob=0.5), train=True)
    flips = half(
        p[:1].expand(4000, 17, 2), joints3d=q[:1].expand(4000, 17, 3), seeds=batch_seeds(4000, 1)
    ).flipped
    assert float(flips.float().mean()) == pytest.approx(0.5, abs=0.03)


def test_coco19_joint_set():
    t = Pose2DTransform(TransformConfig(noise=NoiseConfig(kind="posefix")), joint_set="coco19", train=True)
    p = _t(np.random.default_rng(0).uniform(100, 400, size=(1, 19, 2)))
    assert t(p, seeds=batch_seeds(1, 1)).pose2d.shape == (1, 19, 2)
    with pytest.raises(ValueError, match="expected"):
        t(_t(_pose(0, 1)), seeds=batch_seeds(1, 1))
