"""Writing shards: keys, content read back with the real webdataset package, boundaries, images, options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from p2m.errors import ConfigError, LayoutError, ShardError
from p2m.layout import read_dataset
from p2m.shards import build_shards, load_index
from p2m.shards.encode import sample_key, sanitize_key_part


def _read_all(out: Path, split: str, decode: bool = True) -> list[dict]:
    """Every sample of a split, read with webdataset (decoded: json -> dict, npy -> record, jpg -> uint8 HWC)."""
    index = load_index(out)
    urls = [str(out / sh["name"]) for sh in index["splits"][split]["shards"]]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    return list(ds.decode("rgb8") if decode else ds)


def test_key_parts_lose_their_dots():
    assert sanitize_key_part("S1_Directions_1.54138969_000001") == "S1_Directions_1-54138969_000001"
    assert sanitize_key_part("Human3.6M v1") == "Human3-6M-v1"
    key = sample_key("Human3.6M", 1, 2, 1, 54138969, 12, 0)
    assert key == "Human3-6M_s001_a002_sa001_c54138969_f000012_p00"
    assert "." not in key


def test_roundtrip_through_webdataset(datasets, tmp_path):
    out = tmp_path / "shards"
    stats = build_shards(
        [datasets["h36m"], datasets["synth"], datasets["crawl"]],
        out,
        splits={"train": "S1,S5", "test": "S9"},
        maxcount=7,
        with_meta=True,
    )
    index = load_index(out)
    assert index["complete"] and index["schema_version"] == 2 and index["config"]["with_meta"]
    assert [s["names"] for s in index["sources"]] == [["h36m"], ["synth"], ["crawl"]]
    # h36m: S1,S5 x 5 frames x 2 cams; synth S1 x 3 x 2; crawl S1: 3 photos x 2 people
    assert index["splits"]["train"]["samples"] == 20 + 6 + 6 == stats["split/train/samples"]
    assert index["splits"]["test"]["samples"] == 10 + 6
    assert index["splits"]["train"]["sources"] == {"crawl": 6, "h36m": 20, "synth": 6}
    assert set(index["splits"]["train"]["body_models"]) == {"anny", "smpl"}
    assert index["splits"]["train"]["body_models"]["smpl"]["pose"] == [72]

    expected = {}
    for path in datasets.values():
        persons: dict = {}
        for s in read_dataset(path).iter_samples():
            img = s.image
            person = persons.setdefault((s.dataset, s.subject, img["id"]), 0)
            persons[(s.dataset, s.subject, img["id"])] += 1
            key = sample_key(
                s.dataset,
                s.subject,
                img["action_idx"],
                img["subaction_idx"],
                img["cam_idx"],
                img["frame_idx"],
                person,
            )
            expected[key] = s
    seen = set()
    for split, subjects in (("train", {1, 5}), ("test", {9})):
        samples = _read_all(out, split)
        assert len(samples) == index["splits"][split]["samples"]
        for sample in samples:
            key = sample["__key__"]
            assert "." not in key and key not in seen
            seen.add(key)
            assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"json", "npy"}
            src, meta, record = expected[key], sample["json"], sample["npy"]
            assert record.shape == () and record.dtype.names[:2] == ("j2d", "j3d" if src.camera else "bbox")
            arrays = {name: record[name] for name in record.dtype.names}
            assert meta["key"] == key and meta["source"] == src.dataset and meta["subject"] in subjects
            assert meta["image_id"] == src.image["id"] and meta["ann_id"] == src.annotation["id"]
            assert meta["bbox"] == pytest.approx(src.annotation["bbox"])
            np.testing.assert_allclose(arrays["j2d"], src.joints_2d_h36m, rtol=1e-6)
            assert arrays["j2d"].dtype == np.float32
            if src.camera is None:
                assert not {"j3d", "cam", "R", "model"} & set(arrays) and meta["camera"] is None
                assert meta["source_url"].startswith("http://127.0.0.1/")
            else:
                np.testing.assert_allclose(arrays["j3d"], src.joints_3d_cam, rtol=1e-5, atol=1e-3)
                np.testing.assert_allclose(arrays["cam"], [*src.camera.f, *src.camera.c])
                np.testing.assert_allclose(arrays["R"], src.camera.R, rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(meta["camera"]["R"], src.camera.R)
                assert arrays["model"].item().decode() == src.body_param["model"]
                np.testing.assert_allclose(arrays["pose"], src.body_param["pose"], rtol=1e-6)
    assert seen == set(expected) - {k for k, s in expected.items() if s.subject not in (1, 5, 9)}
    assert any(k.endswith("_p01") for k in seen)  # the second person of a photo


def test_pose_only_samples_are_one_member_of_at_most_2_kb(datasets, tmp_path):
    out = tmp_path / "shards"
    build_shards([datasets["h36m"], datasets["crawl"]], out, maxcount=100)
    rec = load_index(out)["splits"]["train"]
    assert "json" not in rec["fields"] and rec["fields"]["R"] == rec["fields"]["cam"] == 30
    samples = _read_all(out, "train", decode=False)
    assert all(set(s) - {"__key__", "__url__", "__local_path__"} == {"npy"} for s in samples)
    tar_bytes = sum(
        (out / sh["name"]).stat().st_size - 1024 for sh in rec["shards"]
    )  # without the end blocks
    assert tar_bytes / rec["samples"] <= 2048  # one 512-byte header + the record padded to 512


def test_same_inputs_give_identical_bytes(datasets, tmp_path):
    a = build_shards([datasets["h36m"]], tmp_path / "a", maxcount=6)
    b = build_shards([datasets["h36m"]], tmp_path / "b", maxcount=6)
    assert a["samples/written"] == b["samples/written"] == 30
    ia, ib = (tmp_path / "a" / "index.json").read_text(), (tmp_path / "b" / "index.json").read_text()
    assert ia == ib
    for sh in json.loads(ia)["splits"]["train"]["shards"]:
        data = (tmp_path / "a" / sh["name"]).read_bytes()
        assert data == (tmp_path / "b" / sh["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sh["sha256"] and len(data) == sh["bytes"]


def test_maxcount_and_maxsize_bound_the_shards(datasets, tmp_path):
    build_shards([datasets["h36m"]], tmp_path / "c", maxcount=4)
    counts = [sh["samples"] for sh in load_index(tmp_path / "c")["splits"]["train"]["shards"]]
    assert counts == [4] * 7 + [2]
    build_shards([datasets["h36m"]], tmp_path / "s", maxsize=16_000)
    shards = load_index(tmp_path / "s")["splits"]["train"]["shards"]
    assert len(shards) > 1 and sum(sh["samples"] for sh in shards) == 30
    assert all(sh["bytes"] <= 16_000 for sh in shards)
    assert [p.name for p in sorted((tmp_path / "s").glob("*.tar"))] == [sh["name"] for sh in shards]


def test_with_images_frames_and_crops(images_dataset, tmp_path):
    frames = tmp_path / "frames"
    build_shards([images_dataset], frames, with_images=True, with_meta=True)
    for sample in _read_all(frames, "train", decode=False):
        meta = json.loads(sample["json"])
        original = images_dataset / "images" / meta["file_name"]
        assert "." in original.name.removesuffix(".jpg")  # the H36M-style dotted name
        assert sample["jpg"] == original.read_bytes()  # a JPEG frame is stored untouched
    crops = tmp_path / "crops"
    build_shards(
        [images_dataset], crops, with_images=True, crop=True, crop_size=64, crop_margin=0.2, with_meta=True
    )
    index = load_index(crops)
    assert index["config"]["crop"] and index["config"]["crop_size"] == 64
    assert index["splits"]["train"]["fields"]["jpg"] == 4
    for sample in _read_all(crops, "train"):
        assert sample["jpg"].shape == (64, 64, 3) and sample["jpg"].dtype == np.uint8
        x0, y0, side = sample["json"]["crop"]
        bx, by, bw, bh = sample["json"]["bbox"]
        assert side == pytest.approx(max(bw, bh) * 1.4)
        cx, cy = x0 + side / 2, y0 + side / 2
        assert (cx, cy) == pytest.approx((bx + bw / 2, by + bh / 2))
        # the gradient frame encodes position in colour: the crop's centre pixel is the bbox centre's colour
        r, g, _ = sample["jpg"][32, 32].astype(float)
        assert r == pytest.approx(255 * cx / 1000, abs=6) and g == pytest.approx(255 * cy / 1000, abs=6)


def test_missing_images_are_counted_not_written(datasets, tmp_path):
    stats = build_shards([datasets["crawl"]], tmp_path / "x", with_images=True)
    assert stats["samples/skipped/image_missing"] == 6 and stats.get("samples/written", 0) == 0


def test_options_and_split_errors(datasets, tmp_path):
    out = tmp_path / "o"
    build_shards([datasets["h36m"]], out, maxcount=8)
    with pytest.raises(ShardError, match="maxcount: 8 then, 5 now"):
        build_shards([datasets["h36m"]], out, maxcount=5)
    stats = build_shards([datasets["h36m"]], out, maxcount=5, overwrite=True)
    assert stats["shards/written"] == 6 and len(list(out.glob("*.tar"))) == 6
    with pytest.raises(ConfigError, match="subject S1 is in split 'a' and in split 'b'"):
        build_shards([datasets["h36m"]], tmp_path / "p", splits={"a": "S1", "b": "1,5"})
    with pytest.raises(ConfigError, match="'X1'"):
        build_shards([datasets["h36m"]], tmp_path / "p", splits={"a": "X1"})
    with pytest.raises(ConfigError, match="split name"):
        build_shards([datasets["h36m"]], tmp_path / "p", splits={"a.b": "S1"})


def test_shards_of_the_previous_schema_are_refused_with_the_fix(datasets, tmp_path):
    from p2m.shards import make_loader

    out = tmp_path / "old"
    build_shards([datasets["h36m"]], out, maxcount=8)
    index = json.loads((out / "index.json").read_text())
    index["schema_version"] = 1  # as written by p2m before the .npy record
    (out / "index.json").write_text(json.dumps(index))
    for read in (load_index, lambda d: make_loader(d, "train", 4)):
        with pytest.raises(
            ShardError, match=r"schema_version 1; this p2m reads version 2: rewrite .*`p2m shard"
        ):
            read(out)
    with pytest.raises(ShardError, match="--overwrite"):
        build_shards([datasets["h36m"]], out, maxcount=8)
    stats = build_shards([datasets["h36m"]], out, maxcount=8, overwrite=True)
    assert stats["samples/written"] == 30 and load_index(out)["schema_version"] == 2


def test_rest_split_and_unlisted_subjects(datasets, tmp_path):
    stats = build_shards([datasets["h36m"]], tmp_path / "r", splits={"val": "S9", "train": "*"})
    assert stats["split/val/samples"] == 10 and stats["split/train/samples"] == 20
    stats = build_shards([datasets["h36m"]], tmp_path / "u", splits={"train": "S1"})
    assert stats["split/train/samples"] == 10 and stats["samples/skipped/no_split"] == 20


def test_duplicate_dataset_names_are_refused(datasets, tmp_path):
    with pytest.raises(ShardError, match="is already given by image id 1 of dataset .h36m. in"):
        build_shards([datasets["h36m"], _copy(datasets["h36m"], tmp_path / "copy")], tmp_path / "d")


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_worker_processes_write_the_same_bytes(datasets, tmp_path):
    inputs = [datasets["h36m"], datasets["synth"], datasets["crawl"]]
    one = build_shards(inputs, tmp_path / "one", splits={"train": "S1,S5", "test": "S9"}, maxcount=5)
    three = build_shards(
        inputs, tmp_path / "three", splits={"train": "S1,S5", "test": "S9"}, maxcount=5, workers=3
    )
    assert one["samples/written"] == three["samples/written"] == 48
    files = sorted(
        p.name
        for p in (tmp_path / "one").iterdir()
        if p.suffix in (".tar", ".json") and "stats" not in p.name
    )
    assert files == sorted(
        p.name
        for p in (tmp_path / "three").iterdir()
        if p.suffix in (".tar", ".json") and "stats" not in p.name
    )
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "three" / name).read_bytes(), name


def test_errors_in_worker_processes_reach_the_caller(datasets, tmp_path):
    broken = _copy(datasets["h36m"], tmp_path / "broken")
    data_file = broken / "annotations" / "h36m_subject5_data.json"
    data = json.loads(data_file.read_text())
    data["annotations"][3]["image_id"] = 999_999
    data_file.write_text(json.dumps(data))
    for workers in (1, 2):
        with pytest.raises(
            LayoutError, match="h36m_subject5_data.json: annotation id .*'image_id' = 999999 names no image"
        ):
            build_shards([broken], tmp_path / f"o{workers}", workers=workers)


def test_rejected_crowd_and_invalid_fits_stay_out(tmp_path):
    from shard_fixtures import write_h36m_like

    from p2m.io import read_json, write_json

    ds = write_h36m_like(tmp_path / "ds", subjects=(1,), frames=3)
    path = ds / "annotations" / "h36m_subject1_data.json"
    data = read_json(path)
    anns = data["annotations"]
    assert len(anns) == 6
    anns[0]["review"] = {"status": "rejected"}
    anns[1]["fit_valid"] = False
    anns[2]["iscrowd"] = 1
    anns[3]["review"] = {"status": "accepted"}
    anns[4]["fit_valid"] = True
    write_json(path, data)
    out = tmp_path / "shards"
    stats = build_shards([ds], out, splits={"train": "S1"}, with_meta=True)
    assert load_index(out)["splits"]["train"]["samples"] == 3
    assert stats["samples/skipped/rejected"] == 1
    assert stats["samples/skipped/fit_invalid"] == 1
    assert stats["samples/skipped/iscrowd"] == 1
    kept = {json.loads(s["json"])["ann_id"] for s in _read_all(out, "train", decode=False)}
    assert kept == {anns[i]["id"] for i in (3, 4, 5)}
