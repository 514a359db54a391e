"""`p2m synth`: the dataset it writes passes validate, its body parameters reproduce its joints, same seed
gives the same bytes, and rendered images show a shaded person where the keypoints say."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2m.annotate.synth import SynthOptions, synth
from p2m.annotate.validate import validate
from p2m.cli import main
from p2m.layout import read_dataset

pytestmark = pytest.mark.body


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pose_only(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    stats = synth(out, SynthOptions(num=30, poses="sampler", subjects=2, seed=3), progress=False)
    return out, stats


def test_pose_only_dataset_is_valid(pose_only):
    out, stats = pose_only
    assert stats["images"] == 30
    report = validate(out)
    assert report.ok, report.summary()
    ds = read_dataset(out)
    samples = list(ds.iter_samples())
    assert len(samples) == 30
    assert {s.subject for s in samples} == {1, 2}
    # Four Human3.6M-like cameras per subject, each seeing the person inside the image.
    assert {s.image["cam_idx"] for s in samples} == {1, 2, 3, 4}
    for s in samples:
        j2d = s.joints_2d_h36m
        assert (j2d[:, 2] == 2).all()
        assert (j2d[:, 0] > 0).all() and (j2d[:, 0] < s.image["width"]).all()


def test_body_parameters_reproduce_the_joints(pose_only):
    import torch

    from p2m.body import create

    out, _ = pose_only
    samples = list(read_dataset(out).iter_samples())[:8]
    body = create("anny", topology=samples[0].body_param["topology"])
    pose = torch.tensor([s.body_param["pose"] for s in samples], dtype=torch.float32)
    shape = torch.tensor([s.body_param["shape"] for s in samples], dtype=torch.float32)
    trans = torch.tensor([s.body_param["trans"] for s in samples], dtype=torch.float32)
    with torch.inference_mode():
        res = body(pose, shape, trans)
    joints_mm = res.joints.double().numpy() * 1000
    stored = np.stack([s.joints_3d_world for s in samples])
    assert np.abs(joints_mm - stored).max() < 1.0
    # Feet on the floor: the lowest vertex is at z = 0 (world mm).
    assert np.abs(res.vertices[..., 2].min(dim=1).values.numpy() * 1000).max() < 1.0
    # Standing adults: pelvis to head top between 0.5 and 1.2 m.
    assert ((stored[:, 10, 2] - stored[:, 0, 2]) < 1200).all()


def test_same_seed_same_bytes_other_seed_differs(tmp_path, pose_only):
    out, _ = pose_only
    again = tmp_path / "again"
    synth(again, SynthOptions(num=30, poses="sampler", subjects=2, seed=3), progress=False)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    synth(other, SynthOptions(num=30, poses="sampler", subjects=2, seed=4), progress=False)
    assert _digest(other) != _digest(out)


def test_rendered_images_show_a_shaded_person(tmp_path):
    out = tmp_path / "img"
    synth(
        out,
        SynthOptions(num=3, poses="sampler", cameras="random", images=True, image_size=256, seed=1),
        progress=False,
    )
    assert validate(out).ok
    for s in read_dataset(out).iter_samples():
        img = np.asarray(Image.open(s.image_path).convert("RGB"), dtype=np.float64)
        assert img.shape == (256, 256, 3)
        x, y, w, h = (int(round(v)) for v in s.annotation["bbox"])
        assert w > 40 and h > 40
        kp = s.keypoints
        visible = kp[kp[:, 2] == 2]
        assert len(visible) >= 5
        # Skin-coloured, shaded body pixels at the visible hips/shoulders: not a flat silhouette.
        body_px = np.array([img[int(v), int(u)] for u, v, _ in visible])
        assert body_px.std(axis=0).max() > 2.0
        # The rendered person differs from the background next to the box.
        assert np.abs(img[y : y + h, x : x + w].mean((0, 1)) - img[:, :10].mean((0, 1))).max() > 3.0


def test_cli_writes_and_reports(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["synth", "--out", str(out), "--num", "4", "--poses", "sampler"])
    assert result.exit_code == 0, result.output
    assert "4 images" in result.output
    data = json.loads((out / "annotations" / "synth_subject1_data.json").read_text())
    assert len(data["images"]) == 4


def test_cli_rejects_bad_options(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--cameras", "fisheye"])
    assert bad.exit_code == 2 and "fisheye" in bad.output
    too_many = runner.invoke(
        main, ["synth", "--out", str(tmp_path / "y"), "--num", "2", "--subjects", "3", "--poses", "sampler"]
    )
    assert too_many.exit_code == 1 and "--subjects 3" in too_many.output
    assert not (tmp_path / "y").exists()
