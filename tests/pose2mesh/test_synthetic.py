"""The on-device synthetic source: deterministic, resumable, no held-out poses, exact projections, valid mirrors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from p2m import joints as J
from p2m.camera import Camera
from p2m.errors import ConfigError

BATCH = 16


@pytest.fixture(scope="module")
def source_cls():
    from p2m.pose2mesh.synthetic import SyntheticSource

    return SyntheticSource


def _same(a: dict, b: dict) -> bool:
    return a["key"] == b["key"] and all(torch.equal(a[k], b[k]) for k in a if k != "key")


def test_same_seed_same_batches_other_seed_others(body_1229, source_cls):
    a = source_cls(body_1229, BATCH, seed=7, batches_per_epoch=3)
    b = source_cls(body_1229, BATCH, seed=7, batches_per_epoch=3)
    c = source_cls(body_1229, BATCH, seed=8, batches_per_epoch=3)
    first_a, first_b, first_c = list(a), list(b), list(c)
    assert len(first_a) == 3 and all(_same(x, y) for x, y in zip(first_a, first_b))
    assert not torch.allclose(first_a[0]["j2d"], first_c[0]["j2d"])
    assert not torch.allclose(first_a[0]["pose"], first_a[1]["pose"])  # batches differ along the stream
    keys = [k for batch in first_a for k in batch["key"]]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)


def test_resume_continues_exactly(body_1229, source_cls):
    full = source_cls(body_1229, BATCH, seed=3, batches_per_epoch=2)
    run = [b for _ in range(3) for b in full]  # three epochs of two batches
    assert full.epoch == 3 and full.batch == 0
    part = source_cls(body_1229, BATCH, seed=3, batches_per_epoch=2)
    it = iter(part)
    next(it)
    state = part.state_dict()
    assert state["batches"] == 1 and state["epoch"] == 0 and state["batch"] == 1
    resumed = source_cls(body_1229, BATCH, seed=3, batches_per_epoch=2)
    resumed.load_state_dict(state)
    rest = list(resumed) + [b for _ in range(2) for b in resumed]
    assert len(rest) == 5 and all(_same(x, y) for x, y in zip(rest, run[1:]))
    with pytest.raises(ConfigError, match="seed"):
        source_cls(body_1229, BATCH, seed=4).load_state_dict(state)


def _nearest(a: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, bank, compute_mode="donot_use_mm_for_euclid_dist").amin(1)


def test_held_out_subjects_are_never_drawn(body_1229, source_cls, tmp_path):
    from p2m.body.poses import PoseSource, table_path
    from p2m.pose2mesh.synthetic import held_out_subjects, mirror_pose

    held = held_out_subjects()
    assert held == {2, 3}
    src = source_cls(body_1229, 64, seed=0)
    assert not set(src.pose_source.clip_subject.tolist()) & held
    train = torch.as_tensor(PoseSource.from_table(split="train").poses)[:, 1:].flatten(1)
    evals = torch.as_tensor(PoseSource.from_table(split="eval").poses)[:, 1:].flatten(1)
    drawn = torch.cat([src.draw(i)["pose"] for i in range(4)])
    unmirrored = mirror_pose(drawn, src._perm)
    body = drawn[:, 1:].flatten(1)
    body_m = unmirrored[:, 1:].flatten(1)
    to_train = torch.minimum(_nearest(body, train), _nearest(body_m, train))
    to_eval = torch.minimum(_nearest(body, evals), _nearest(body_m, evals))
    assert float(to_train.max()) < 1e-4  # every drawn body pose is a training pose (or its mirror image)
    assert float(to_eval.min()) > 1e-2
    with pytest.raises(ConfigError, match="held-out"):
        source_cls(body_1229, BATCH, poses="cmu-eval")
    leaked = tmp_path / "leak.npz"
    with np.load(table_path("eval")) as z:
        np.savez(leaked, **{k: z[k] for k in z.files})
    with pytest.raises(ConfigError, match=r"held-out evaluation subjects \[2, 3\]"):
        source_cls(body_1229, BATCH, poses=str(leaked))


def test_batches_project_like_p2m_camera(body_1229, source_cls):
    src = source_cls(body_1229, 32, seed=11, random_camera_prob=0.5)
    b = src.draw(0)
    with torch.no_grad():
        world = body_1229(b["pose"], b["shape"], b["trans"]).joints.double().numpy() * 1000.0
    j3d, j2d, rot = b["j3d"].double().numpy(), b["j2d"].double().numpy(), b["R"].double().numpy()
    sizes = set()
    for i in range(32):
        t = j3d[i, 0] - rot[i] @ world[i, 0]
        cam = Camera(
            R=rot[i], t=t, f=b["cam"][i, :2].tolist(), c=b["cam"][i, 2:].tolist()
        )  # checks R is a rotation
        np.testing.assert_allclose(cam.world_to_camera(world[i]), j3d[i], atol=0.05)  # mm
        np.testing.assert_allclose(cam.project(world[i]), j2d[i, :, :2], atol=0.02)  # px
        x, y, w, h = b["bbox"][i].tolist()
        inside = j2d[i, :, 2] > 0
        assert (j2d[i, inside, 0] >= x - 1e-3).all() and (j2d[i, inside, 0] <= x + w + 1e-3).all()
        assert (j2d[i, inside, 1] >= y - 1e-3).all() and (j2d[i, inside, 1] <= y + h + 1e-3).all()
        sizes.add(round(float(b["cam"][i, 2]) / 100))
        # the person is in front of the camera, upright in the image (head above the feet)
        assert (j3d[i, :, 2] > 1000).all() and j2d[i, 10, 1] < j2d[i, 3, 1]
    assert sizes >= {2, 5}  # both camera kinds: c about 256 (512 px random) and about 500 (rig)
    assert (b["j2d"][..., 2] == 2).float().mean() > 0.95
    assert bool(b["has_j3d"].all() and b["has_cam"].all() and b["has_body"].all())


def test_look_at_matches_camera_look_at():
    from p2m.pose2mesh.synthetic import look_at

    rng = np.random.default_rng(0)
    eye, target = rng.normal(0, 3000, (5, 3)), rng.normal(0, 300, (5, 3))
    ours = look_at(torch.as_tensor(eye), torch.as_tensor(target)).numpy()
    for i in range(5):
        np.testing.assert_allclose(
            ours[i], Camera.look_at(eye[i], target[i], f=(1, 1), c=(0, 0)).R, atol=1e-9
        )


def test_mirrored_poses_are_mirror_images(body_1229, source_cls):
    from p2m.pose2mesh.synthetic import mirror_pose

    src = source_cls(body_1229, 8, seed=5, mirror_prob=0.0)
    pose, shape = src.draw(0)["pose"], src.draw(0)["shape"]
    flip = J.flip_permutation(J.H36M_FLIP_PAIRS, J.H36M_NUM_JOINTS)
    with torch.no_grad():
        a = body_1229(pose, shape).joints
        b = body_1229(mirror_pose(pose, src._perm), shape).joints
    expected = a[:, flip] * a.new_tensor([-1.0, 1.0, 1.0])
    err_mm = (b - expected).norm(dim=-1) * 1000
    assert float(err_mm.max()) < 15.0, float(err_mm.max())
    assert float(err_mm.mean()) < 5.0
    # twice mirrored is the pose itself; mirror_prob 1 mirrors every sample
    assert torch.allclose(mirror_pose(mirror_pose(pose, src._perm), src._perm), pose)
    always = source_cls(body_1229, 8, seed=5, mirror_prob=1.0).draw(0)
    assert not torch.allclose(always["pose"][:, 1:], pose[:, 1:])
