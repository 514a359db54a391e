"""`--ray` for annotate detect and fit: the same dataset files as a local run, also when a worker dies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scale_helpers import tree_bytes

from p2m.layout import subject_file

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[3] / "shared" / "external-fixtures"
PHOTOS = [SHARED / "public-domain-people-images", SHARED / "mmpose-coco"]


def test_detect_on_ray_writes_the_same_dataset(ray_cluster, tmp_path):
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    if not all(p.is_dir() for p in PHOTOS):
        pytest.skip(f"shared photo fixtures absent under {SHARED}")
    from p2m.annotate.detect import detect
    from p2m.scale.detect import detect as ray_detect

    src = tmp_path / "src"
    (src / "coco").mkdir(parents=True)
    for p in PHOTOS[0].glob("*.png"):
        shutil.copy(p, src / p.name)
    for p in PHOTOS[1].glob("*.jpg"):
        shutil.copy(p, src / "coco" / p.name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    local = detect(src, tmp_path / "local", batch=3, progress=False)
    ray_cluster.write_text("armed")
    ray = ray_detect(src, tmp_path / "ray", batch=3, progress=False)
    assert not ray_cluster.exists(), "no task met the armed fault"
    skip = ("detect_stats.json",)
    assert tree_bytes(tmp_path / "local", skip) == tree_bytes(tmp_path / "ray", skip)
    assert local["images/person"] >= 4 and local["images/unreadable"] == 1
    assert {k: v for k, v in ray.items() if k != "seconds"} == {
        k: v for k, v in local.items() if k != "seconds"
    }


def _fit_input(root: Path) -> None:
    """Six synthetic people with random cameras, their 3D removed: fit has to find it."""
    from p2m.annotate.synth import SynthOptions, synth

    synth(
        root,
        SynthOptions(num=6, poses="sampler", cameras="random", seed=7, topology="notoes_collapse10pc"),
        progress=False,
    )
    for kind in ("joint_3d", "body_param"):
        subject_file(root, "synth", 1, kind).unlink()


def test_fit_on_ray_writes_the_same_fits(ray_cluster, tmp_path):
    from p2m.annotate.fit import fit_bodies as fit
    from p2m.scale.fit import fit as ray_fit

    _fit_input(tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    from p2m.annotate.fit_solver import SolverOptions

    small = SolverOptions(
        rigid_iters=10, headings=4, candidates=4, starts=1
    )  # a quick solver: same code paths
    opts = dict(iters=10, batch=3, topology="notoes_collapse10pc", options=small)
    local = fit(tmp_path / "local", device="cpu", progress=False, **opts)
    ray = ray_fit(
        tmp_path / "ray", progress=False, **opts
    )  # (killed workers: the other tests of this folder)
    assert ray["annotations/fitted"] == local["annotations/fitted"] == 6
    assert ray["device"].startswith("ray (cpu")

    def read(root: Path, kind: str):
        return json.loads(subject_file(root, "synth", 1, kind).read_text())

    a, b = read(tmp_path / "local", "data"), read(tmp_path / "ray", "data")
    assert [x["id"] for x in a["annotations"]] == [x["id"] for x in b["annotations"]]
    for x, y in zip(a["annotations"], b["annotations"]):
        assert x["fit_valid"] == y["fit_valid"] and set(x) == set(y)
        np.testing.assert_allclose(x["fit_error_px"], y["fit_error_px"], atol=0.01)
        np.testing.assert_allclose(x["joints_2d_h36m"], y["joints_2d_h36m"], atol=0.05)
    ja, jb = read(tmp_path / "local", "joint_3d"), read(tmp_path / "ray", "joint_3d")
    frames = [(a_, s, f) for a_ in ja for s in ja[a_] for f in ja[a_][s]]
    assert len(frames) == sum(x["fit_valid"] for x in a["annotations"])
    for a_, s, f in frames:  # float32 sums over one vs two threads: equal to well under a millimetre
        np.testing.assert_allclose(ja[a_][s][f], jb[a_][s][f], atol=0.1)
