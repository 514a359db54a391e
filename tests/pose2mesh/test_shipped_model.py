"""The model shipped in the package: `p2m infer default` and `p2m eval default` run on it, it stays small, its model
card carries the numbers; with intrinsics the root lands in the camera frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.errors import CheckpointError


@pytest.fixture(scope="module")
def shipped():
    from p2m.pose2mesh.pretrained import MAX_BYTES, shipped_path

    try:
        path = shipped_path()
    except CheckpointError as exc:
        pytest.skip(f"no shipped model in this checkout: {exc}")
    assert path.stat().st_size <= MAX_BYTES
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Held-out synthetic people (CMU evaluation subjects) as a dataset and as shards."""
    from p2m.annotate.synth import SynthOptions, synth
    from p2m.shards import build_shards

    base = tmp_path_factory.mktemp("shipped")
    synth(
        base / "ds",
        SynthOptions(num=64, poses="cmu-eval", seed=5, subjects=1, topology="1229", name="held"),
        progress=False,
    )
    build_shards([base / "ds"], base / "shards", splits={"test": "S1"}, progress=False)
    return base


def test_model_card_names_data_metrics_and_credit(shipped):
    card = shipped.with_suffix(".md").read_text()
    for needle in (
        "MPJPE",
        "PA-MPJPE",
        "MPVPE",
        "edge-length",
        "MRPE",
        "CMU",
        "mocap.cs.cmu.edu",
        "Apache-2.0",
    ):
        assert needle in card, needle


def test_eval_default_scores_held_out_people(shipped, people, tmp_path, monkeypatch):
    from p2m.cli import main

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        main, ["eval", "default", "--data", str(people / "shards"), "--input", "gt", "--threads", "1"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "default_eval_test.json").read_text())  # written here, not into the package
    assert out["samples"] == 64 and out["checkpoint"] == str(shipped)
    # a trained model: far better than an untrained one (about 450 mm), smooth meshes
    assert out["mpjpe"] < 150 and out["pa_mpjpe"] < 110 and out["edge_error"] < 40


def test_infer_default_with_intrinsics_places_the_root(shipped, people, tmp_path):
    from p2m.cli import main

    ds = people / "ds" / "annotations"
    ann = json.loads((ds / "held_subject1_data.json").read_text())
    img = ann["images"][0]
    cam = json.loads((ds / "held_subject1_camera.json").read_text())[str(img["cam_idx"])]
    k = f"{cam['f'][0]},{cam['f'][1]},{cam['c'][0]},{cam['c'][1]}"
    res = CliRunner().invoke(
        main,
        [
            "infer",
            "default",
            "--pose2d",
            str(ds / "held_subject1_data.json"),
            "--person",
            "0",
            "--out",
            str(tmp_path / "o"),
            "--no-refine",
            "--intrinsics",
            k,
        ],
    )
    assert res.exit_code == 0, res.output
    joints = json.loads((tmp_path / "o" / "joints3d.json").read_text())
    assert len(joints["joints"]) == 17 and "joints_camera_frame" in joints
    world = json.loads((ds / "held_subject1_joint_3d.json").read_text())["1"]["1"][str(img["frame_idx"])]
    gt_root = np.asarray(cam["R"]) @ np.asarray(world[0]) + np.asarray(cam["t"])
    root = np.asarray(joints["joints_camera_frame"][0])
    assert np.linalg.norm(root - gt_root) < 0.1 * gt_root[2]  # within 10 % of the distance
    bad = CliRunner().invoke(
        main,
        [
            "infer",
            "default",
            "--pose2d",
            str(ds / "held_subject1_data.json"),
            "--out",
            str(tmp_path / "p"),
            "--intrinsics",
            "1,2,3",
        ],
    )
    assert bad.exit_code == 2 and "FX,FY,CX,CY" in bad.output
