"""Input normalisation, the seeded 2D error models and flips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from p2m.joints import H36M_FLIP_PAIRS, flip_permutation
from p2m.pose2mesh.config import NoiseConfig, TransformConfig
from p2m.pose2mesh.transforms import (
    H36M_DERIVED,
    Pose2DTransform,
    expand_to_aspect,
    flip_crop_joints,
    flip_joints3d,
    gaussian_errors,
    joint_set_info,
    joints_bbox,
    normalize_pose2d,
    posefix_errors,
    sample_rng,
)


def _pose(seed: int = 0, n: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (17, 2) if n is None else (n, 17, 2)
    return rng.uniform([200, 100], [400, 500], size=shape)


def test_bbox_and_aspect():
    p = np.array([[10.0, 20.0], [30.0, 100.0], [0.0, 0.0]])
    np.testing.assert_allclose(joints_bbox(p, np.array([1, 1, 0])), [10, 20, 20, 80])
    np.testing.assert_allclose(joints_bbox(p), [0, 0, 30, 100])
    box = expand_to_aspect(np.array([10.0, 20.0, 20.0, 80.0]), 0.75)  # too tall: widen
    np.testing.assert_allclose(box, [-10, 20, 60, 80])
    box = expand_to_aspect(np.array([0.0, 0.0, 90.0, 60.0]), 0.75)  # too wide: heighten
    np.testing.assert_allclose(box, [0, -30, 90, 120])


def test_normalisation_is_a_per_axis_zscore_and_invariant_to_position_and_scale():
    p = _pose()
    z = normalize_pose2d(p)
    assert z.dtype == np.float32 and z.shape == (17, 2)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)  # each axis separately
    moved = p * np.array([2.0, 3.0]) + np.array([50.0, -20.0])  # per-axis scale: still the same z-score
    np.testing.assert_allclose(normalize_pose2d(moved), z, atol=1e-5)
    batch = normalize_pose2d(np.stack([p, moved, _pose(1)]))
    np.testing.assert_allclose(batch[1], z, atol=1e-5)
    np.testing.assert_allclose(batch[2], normalize_pose2d(_pose(1)), atol=1e-6)


def test_eval_transform_is_the_plain_normalisation():
    t = Pose2DTransform(TransformConfig(flip_prob=1.0), train=False)
    out = t(_pose(), np.ones((17, 3)))
    np.testing.assert_allclose(out.pose2d, normalize_pose2d(_pose()))
    assert not out.flipped and (out.error_kind == -1).all()
    np.testing.assert_allclose(out.joints3d, 1.0)


def test_noise_is_seeded():
    t = Pose2DTransform(TransformConfig(noise=NoiseConfig(kind="posefix")), train=True)
    a = t(_pose(), rng=sample_rng(7, 3, 11)).pose2d
    b = t(_pose(), rng=sample_rng(7, 3, 11)).pose2d
    c = t(_pose(), rng=sample_rng(7, 3, 12)).pose2d
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    with pytest.raises(ValueError, match="rng"):
        t(_pose())


def test_gaussian_errors_have_the_configured_spread():
    rng = np.random.default_rng(0)
    crop = np.zeros((20000, 17, 2))
    std = np.linspace(1.0, 9.0, 17)
    noised = gaussian_errors(crop, rng, std, prob=0.9)
    moved = np.abs(noised).sum(-1) > 0
    assert moved.mean() == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(noised[..., 0].std(axis=0), std * np.sqrt(0.9), rtol=0.05)


def test_posefix_kinds_follow_their_probabilities_and_distances():
    info = joint_set_info("h36m")
    cfg = NoiseConfig(kind="posefix")
    rng = np.random.default_rng(1)
    crop = np.broadcast_to(_pose(3), (20000, 17, 2)).copy()
    noised, kind = posefix_errors(crop, rng, info, cfg)
    # derived joints (Pelvis, Torso, Neck) are never drawn themselves and move with their parents' mean offset
    assert (kind[:, list(H36M_DERIVED)] == -1).all()
    delta = noised - crop
    np.testing.assert_allclose(delta[:, 0], delta[:, [1, 4]].mean(axis=1), atol=1e-9)
    np.testing.assert_allclose(delta[:, 8], delta[:, [11, 14]].mean(axis=1), atol=1e-9)
    # wrists (limb ends): jitter 0.20, miss 0.10, inversion 0.06
    wrist = kind[:, 13]
    assert (wrist == 1).mean() == pytest.approx(0.20, abs=0.015)
    assert (wrist == 2).mean() == pytest.approx(0.10, abs=0.01)
    assert (wrist == 3).mean() == pytest.approx(0.06, abs=0.01)
    # the nose has no left/right partner: never inverted
    assert not (kind[:, 9] == 3).any()
    # inverted joints land near their partner; misses move further than jitters
    inv = wrist == 3
    to_partner = np.linalg.norm(noised[inv, 13] - crop[inv, 16], axis=-1)
    to_self = np.linalg.norm(noised[inv, 13] - crop[inv, 13], axis=-1)
    assert (to_partner < to_self).mean() > 0.95
    dist = np.linalg.norm(delta[:, 13], axis=-1)
    assert dist[wrist == 2].min() >= dist[wrist == 1].max() - 1e-6
    assert dist[wrist == 1].min() >= dist[wrist == 0].max() - 1e-6


def test_posefix_leaves_invalid_joints_and_raises_rates_with_few_valid():
    info = joint_set_info("h36m")
    cfg = NoiseConfig(kind="posefix")
    crop = np.broadcast_to(_pose(4), (20000, 17, 2)).copy()
    vis = np.ones((20000, 17))
    vis[:, 8:] = 0  # 8 valid joints -> few_valid_scale applies
    noised, kind = posefix_errors(crop, np.random.default_rng(2), info, cfg, vis)
    np.testing.assert_array_equal(noised[:, 9:], crop[:, 9:])
    assert (kind[:, 9:] == -1).all()
    # ankle (limb end) jitter probability 0.20 x 1.5
    assert (kind[:, 3] == 1).mean() == pytest.approx(0.30, abs=0.015)


def test_flip_twice_is_identity_and_mirrors_3d():
    perm = flip_permutation(H36M_FLIP_PAIRS, 17)
    crop = _pose(5)
    np.testing.assert_allclose(flip_crop_joints(flip_crop_joints(crop, 288, perm), 288, perm), crop)
    q = np.random.default_rng(0).normal(size=(17, 3))
    f = flip_joints3d(q, perm)
    np.testing.assert_allclose(f[4], q[1] * [-1, 1, 1])  # L_Hip <- mirrored R_Hip
    np.testing.assert_allclose(f[0], q[0] * [-1, 1, 1])


def test_flip_in_the_pipeline_mirrors_input_and_target():
    cfg = TransformConfig(flip_prob=1.0, noise=NoiseConfig(kind="none"))
    t = Pose2DTransform(cfg, train=True)
    p, q = _pose(6), np.random.default_rng(1).normal(size=(17, 3))
    out = t(p, q, rng=sample_rng(0, 0))
    plain = normalize_pose2d(p)
    perm = flip_permutation(H36M_FLIP_PAIRS, 17)
    assert out.flipped
    np.testing.assert_allclose(out.pose2d[:, 0], -plain[perm, 0], atol=1e-5)  # x mirrored (z-scored about 0)
    np.testing.assert_allclose(out.pose2d[:, 1], plain[perm, 1], atol=1e-5)
    np.testing.assert_allclose(out.joints3d, flip_joints3d(q, perm), atol=1e-6)
    half = Pose2DTransform(dataclasses.replace(cfg, flip_prob=0.5), train=True)
    flips = half(np.stack([p] * 4000), np.stack([q] * 4000), rng=sample_rng(0, 1)).flipped
    assert flips.mean() == pytest.approx(0.5, abs=0.03)


def test_coco19_joint_set():
    t = Pose2DTransform(TransformConfig(noise=NoiseConfig(kind="posefix")), joint_set="coco19", train=True)
    p = np.random.default_rng(0).uniform(100, 400, size=(19, 2))
    out = t(p, rng=sample_rng(1))
    assert out.pose2d.shape == (19, 2)
    with pytest.raises(ValueError, match="expected"):
        t(_pose(), rng=sample_rng(1))
