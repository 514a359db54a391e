"""`--ray` for synth and shard: the same bytes as a local run, also when a worker dies mid-task."""

from __future__ import annotations

import json

import pytest
from scale_helpers import tree_bytes
from shard_fixtures import write_h36m_like

from p2m.annotate.synth import SynthOptions, synth
from p2m.shards import build_shards

pytestmark = pytest.mark.slow


def test_synth_on_ray_writes_the_same_bytes(ray_cluster, tmp_path):
    from p2m.scale.synth import synth as ray_synth

    opts = SynthOptions(num=22, poses="sampler", subjects=2, seed=5, batch_size=2)
    synth(tmp_path / "local", opts, progress=False)
    stats = ray_synth(tmp_path / "ray", opts, progress=False)
    assert stats["images"] == 22 and stats["ray_tasks"] == 3  # 6 frames of 4 views in batches of 2
    local, ray = tree_bytes(tmp_path / "local"), tree_bytes(tmp_path / "ray")
    assert len(local) == 9 and local == ray  # 2 subjects x 4 files + info


def test_synth_with_images_survives_a_killed_worker(ray_cluster, tmp_path):
    from p2m.scale.synth import synth as ray_synth

    opts = SynthOptions(
        num=4, poses="sampler", cameras="random", images=True, image_size=96, seed=2, batch_size=1
    )
    synth(tmp_path / "local", opts, progress=False)
    ray_cluster.write_text("armed")  # the first task to start kills its worker; Ray runs it again
    ray_synth(tmp_path / "ray", opts, progress=False)
    assert not ray_cluster.exists(), "no task met the armed fault"
    local, ray = tree_bytes(tmp_path / "local"), tree_bytes(tmp_path / "ray")
    assert sum(k.endswith(".jpg") for k in local) == 4 and local == ray
    data = json.loads((tmp_path / "ray/annotations/synth_subject1_data.json").read_text())
    assert [img["id"] for img in data["images"]] == [1, 2, 3, 4]  # nothing added twice


@pytest.fixture(scope="module")
def shard_inputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("shard-inputs")
    h36m = write_h36m_like(base / "Human3.6M.v1", "h36m", subjects=(1, 5, 9), frames=4, images=True)
    other = write_h36m_like(
        base / "synth", "synth", subjects=(1, 9), frames=3, model="smpl", pose_len=72, seed=3
    )
    return [h36m, other]


@pytest.mark.parametrize("with_images", [False, True])
def test_shards_on_ray_are_the_same_files_with_one_index(ray_cluster, shard_inputs, tmp_path, with_images):
    from p2m.scale.shard import build_shards as ray_build_shards

    opts = dict(splits={"train": "1,5", "test": "9"}, with_images=with_images, crop=with_images, maxcount=5)
    build_shards(shard_inputs, tmp_path / "local", **opts)
    ray_cluster.write_text("armed")  # one subject's task dies once and is retried
    stats = ray_build_shards(shard_inputs, tmp_path / "ray", **opts)
    assert not ray_cluster.exists(), "no task met the armed fault"
    local = tree_bytes(tmp_path / "local", skip=("shard_stats.json",))
    ray = tree_bytes(tmp_path / "ray", skip=("shard_stats.json",))
    assert sorted(ray) == sorted(local) and ray == local
    index = json.loads(ray["index.json"])
    # train: h36m subjects 1 and 5 (4 frames x 2 cameras each) and synth subject 1 (3 x 2, no image files)
    assert index["complete"] and index["splits"]["train"]["samples"] == 16 + (0 if with_images else 6)
    assert stats["samples/written"] == sum(s["samples"] for s in index["splits"].values())
