"""The streaming reader: exact epochs over workers and ranks, resampled epochs, resume, collation, URLs."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from shard_fixtures import write_h36m_like

from p2m.errors import ShardError
from p2m.shards import ShardStream, build_shards, load_index, make_loader, shard_info, verify_shards
from p2m.shards.read import balance


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> Path:
    """80 samples in 11 shards of 7 and one of 3: shard counts that do not divide among ranks and workers."""
    base = tmp_path_factory.mktemp("uneven")
    ds = write_h36m_like(base / "ds", "h36m", subjects=(1, 5, 6, 7), frames=10, seed=7)
    build_shards([ds], base / "shards", maxcount=7)
    return base / "shards"


@pytest.fixture(scope="module")
def mixed(datasets, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "shards"
    build_shards([datasets["h36m"], datasets["synth"], datasets["crawl"]], out, maxcount=5, with_meta=True)
    return out


def _keys(loader) -> list[list[str]]:
    return [batch["key"] for batch in loader]


def _reference(out: Path, split: str = "train") -> dict[str, dict]:
    urls = [str(out / sh["name"]) for sh in load_index(out)["splits"][split]["shards"]]
    records = {s["__key__"]: s["npy"] for s in wds.WebDataset(urls, shardshuffle=False).decode()}
    return {key: {name: r[name] for name in r.dtype.names} for key, r in records.items()}


def test_exact_epoch_in_one_process_matches_webdataset(uneven):
    loader = make_loader(uneven, "train", 8, shuffle_buffer=16, seed=3)
    ref = _reference(uneven)
    batches = list(loader)
    assert len(batches) == len(loader) == 80 // 8
    seen = [k for b in batches for k in b["key"]]
    assert len(seen) == len(set(seen)) == 80
    for b in batches:
        assert b["j2d"].shape == (8, 17, 3) and b["j2d"].dtype == torch.float32
        assert b["pose"].shape == (8, 93) and bool(b["has_body"].all()) and bool(b["has_j3d"].all())
        for i, key in enumerate(b["key"]):
            np.testing.assert_array_equal(b["j2d"][i].numpy(), ref[key]["j2d"])
            np.testing.assert_array_equal(b["j3d"][i].numpy(), ref[key]["j3d"])
            np.testing.assert_array_equal(b["bbox"][i].numpy(), ref[key]["bbox"])
            np.testing.assert_array_equal(b["pose"][i].numpy(), ref[key]["pose"])
            np.testing.assert_array_equal(b["R"][i].numpy(), ref[key]["R"])
            np.testing.assert_array_equal(b["cam"][i].numpy(), ref[key]["cam"])
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
    again = [k for b in loader for k in b["key"]]
    assert sorted(again) == sorted(seen) and again != seen  # epoch 1: the same samples, another order


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_and_workers_split_without_repeats_and_with_equal_lengths(uneven, world_size):
    per_rank = []
    for rank in range(world_size):
        loader = make_loader(
            uneven, "train", 4, num_workers=2, rank=rank, world_size=world_size, shuffle_buffer=8
        )
        batches = _keys(loader)
        assert len(batches) == len(loader) and all(len(b) == 4 for b in batches)
        per_rank.append([k for b in batches for k in b])
    assert len({len(keys) for keys in per_rank}) == 1  # every rank yields the same number of batches
    everything = [k for keys in per_rank for k in keys]
    assert len(everything) == len(set(everything))  # no sample twice in an epoch, across ranks and workers
    counts = [sh["samples"] for sh in load_index(uneven)["splits"]["train"]["shards"]]
    shares = [sum(counts[i] for i in b) for b in balance(counts, world_size)]
    assert sorted(shares) == (
        [38, 42] if world_size == 2 else [24, 28, 28]
    )  # whole shards per rank, balanced
    assert len(per_rank[0]) == min(shares) // 2 // 4 * 2 * 4  # full batches per worker of the smallest share


def test_resume_mid_epoch_replays_the_rest_exactly(uneven):
    def fresh():
        return make_loader(uneven, "train", 4, num_workers=2, shuffle_buffer=10, seed=11)

    full = fresh()
    epoch0, epoch1 = _keys(full), _keys(full)
    for k in (5, 6):  # an odd and an even number of consumed batches (which worker comes next differs)
        run = fresh()
        got = []
        for batch in run:
            got.append(batch["key"])
            if len(got) == k:
                break
        assert got == epoch0[:k]
        state = run.state_dict()
        assert state["epoch"] == 0 and state["batch"] == k
        resumed = fresh()
        resumed.load_state_dict(state)
        assert _keys(resumed) == epoch0[k:]
        assert _keys(resumed) == epoch1


def test_resampled_epochs_have_a_fixed_length(uneven):
    lengths = []
    for rank in range(2):
        loader = make_loader(
            uneven, "train", 16, num_workers=2, epoch_length=9, rank=rank, world_size=2, seed=5
        )
        lengths.append([len(_keys(loader)) for _ in range(2)])
    assert lengths == [[9, 9], [9, 9]]  # more batches than one pass over the data holds: resampled
    loader = make_loader(uneven, "train", 16, num_workers=2, epoch_length=9, seed=5)
    loader.load_state_dict(
        {
            "epoch": 3,
            "batch": 4,
            "seed": 5,
            "mode": "resampled",
            "world_size": 1,
            "num_workers": 2,
            "batch_size": 16,
        }
    )
    assert len(_keys(loader)) == 5 and loader.state_dict()["epoch"] == 4
    # a URL list without an index works in resampled mode only
    urls = sorted(str(p) for p in uneven.glob("train-*.tar"))
    assert len(_keys(make_loader(urls, "train", 8, epoch_length=3))) == 3
    with pytest.raises(ShardError, match="epoch_length"):
        ShardStream(urls, "train", 8)


def test_body_models_are_collated_one_at_a_time(mixed):
    with pytest.raises(ShardError, match=r"mixes body models \['anny', 'smpl'\]"):
        ShardStream(mixed, "train", 8)
    ref = _reference(mixed)
    loader = make_loader(mixed, "train", 4, body_model="smpl", shuffle_buffer=0, with_meta=True)
    seen = 0
    for b in loader:
        assert b["pose"].shape == (4, 72)
        for i, key in enumerate(b["key"]):
            seen += 1
            src = ref[key]
            assert bool(b["has_body"][i]) == (src.get("model", np.array(b"")).item() == b"smpl")
            assert (
                bool(b["has_j3d"][i])
                == ("j3d" in src)
                == (not key.startswith("crawl_"))
                == bool(b["has_cam"][i])
            )
            if not b["has_cam"][i]:  # a photo: no camera, R is the identity
                assert torch.equal(b["R"][i], torch.eye(3)) and not b["cam"][i].any()
            assert b["meta"][i]["key"] == key
            if b["has_body"][i]:
                np.testing.assert_array_equal(b["pose"][i].numpy(), src["pose"])
            else:
                assert not b["pose"][i].any()
    assert seen == len(loader) * 4 == 48  # h36m 30 + synth 12 + crawl 6


def test_images_and_bad_configurations(images_dataset, tmp_path, uneven):
    out = tmp_path / "img"
    build_shards([images_dataset], out, with_images=True, crop=True, crop_size=32)
    batch = next(iter(make_loader(out, "train", 2, with_images=True)))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == torch.uint8
    with pytest.raises(ShardError, match="with_meta: the shards hold no .json members"):
        ShardStream(out, "train", 2, with_meta=True)
    with pytest.raises(ShardError, match="no split 'val'"):
        ShardStream(uneven, "val", 4)
    with pytest.raises(ShardError, match="12 shards for 20 ranks"):
        ShardStream(uneven, "train", 4, rank=0, world_size=20)
    with pytest.raises(ShardError, match="too few for one batch"):
        ShardStream(uneven, "train", 64, num_workers=2)
    stream = ShardStream(uneven, "train", 4, num_workers=2)
    with pytest.raises(ShardError, match="make_loader"):
        next(iter(stream))


def test_streams_from_pipe_file_and_http_urls(uneven):
    urls = sorted(uneven.glob("train-*.tar"))
    got = make_loader(
        [f"pipe:cat {urls[0]}", f"file://{urls[1]}"], "train", 7, epoch_length=2, shuffle_buffer=0
    )
    assert all(len(k) == 7 for k in _keys(got))
    handler = functools.partial(_QuietHandler, directory=str(uneven))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        remote = make_loader(base, "train", 8, seed=4)  # index.json and shards over HTTP: exact epochs
        local = make_loader(uneven, "train", 8, seed=4)
        assert _keys(remote) == _keys(local)
        report = verify_shards(base)  # verify and info read over HTTP too
        assert report.ok and report.samples == 80, report.format()
        assert shard_info(base)["total"]["samples"] == 80
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_writing_and_verifying_do_not_import_torch(datasets, tmp_path):
    code = (
        "import sys\nfrom p2m.shards import build_shards, shard_info\n"
        f"build_shards([{str(datasets['h36m'])!r}], {str(tmp_path / 'o')!r})\n"
        f"shard_info({str(tmp_path / 'o')!r})\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_position_after_a_finished_epoch_and_rank_from_the_environment(uneven, monkeypatch):
    loader = make_loader(uneven, "train", 8)
    loader.load_state_dict({**loader.state_dict(), "epoch": 2, "batch": len(loader)})
    assert (loader.state.epoch, loader.state.batch) == (3, 0)  # a trainer loop resumes with the next epoch
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stream = ShardStream(uneven, "train", 8)
    assert (stream.rank, stream.world_size) == (1, 2)
    other = ShardStream(uneven, "train", 8, rank=0, world_size=2)
    assert set(stream.rank_shards).isdisjoint(other.rank_shards)
    assert len(stream.rank_shards) + len(other.rank_shards) == 12


def test_evaluation_streams_cover_every_sample_once(uneven):
    keys = []
    for rank in range(2):
        loader = make_loader(
            uneven,
            "train",
            8,
            num_workers=2,
            rank=rank,
            world_size=2,
            drop_last=False,
            shuffle_buffer=0,
            shuffle_shards=False,
        )
        batches = _keys(loader)
        assert len(batches) == len(loader) and all(0 < len(b) <= 8 for b in batches)
        keys += [k for b in batches for k in b]
    assert sorted(keys) == sorted(_reference(uneven)) and len(keys) == 80
    in_order = [sh["first_key"] for sh in load_index(uneven)["splits"]["train"]["shards"]]
    first = make_loader(
        uneven, "train", 8, drop_last=False, shuffle_buffer=0, shuffle_shards=False, max_samples=17
    )
    got = [k for b in first for k in b["key"]]
    assert len(got) == 17 and got[0] == in_order[0] and got[7] == in_order[1] and got[14] == in_order[2]
    with pytest.raises(ShardError, match="exact epochs"):
        ShardStream(uneven, "train", 8, epoch_length=3, drop_last=False)
