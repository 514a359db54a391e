"""The columnar writing path gives the bytes and counts of the per-sample path, and hands it what it cannot take."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from p2m.errors import LayoutError
from p2m.layout import read_dataset
from p2m.shards import build_shards, columns
from p2m.shards.encode import EncodeOptions
from p2m.shards.tasks import plan_tasks


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix == ".tar"}


def _both(monkeypatch, inputs: list[Path], tmp_path: Path, **kwargs) -> tuple[dict, dict]:
    fast = build_shards(inputs, tmp_path / "fast", **kwargs)
    monkeypatch.setattr(columns, "ENABLED", False)
    slow = build_shards(inputs, tmp_path / "slow", **kwargs)
    monkeypatch.setattr(columns, "ENABLED", True)
    assert _files(tmp_path / "fast") == _files(tmp_path / "slow")
    index = [json.loads((tmp_path / d / "index.json").read_text())["splits"] for d in ("fast", "slow")]
    assert index[0] == index[1]
    drop = ("duration_s", "out", "index")
    return (
        {k: v for k, v in fast.items() if k not in drop},
        {k: v for k, v in slow.items() if k not in drop},
    )


def _taken(inputs: list[Path]) -> list[bool]:
    """Per subject: whether the columnar path takes it."""
    tasks = plan_tasks([read_dataset(p) for p in inputs], {"*": "train"}, {})
    return [columns.encode_subject(t, EncodeOptions()) is not None for t in tasks]


def test_columnar_path_writes_the_per_sample_bytes(datasets, monkeypatch, tmp_path):
    inputs = [datasets["h36m"], datasets["synth"], datasets["crawl"]]
    assert all(_taken(inputs))
    fast, slow = _both(monkeypatch, inputs, tmp_path, splits={"train": "S1,S5", "test": "S9"}, maxcount=5)
    assert fast == slow and fast["samples/written"] == 48


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_odd_files_go_down_the_per_sample_path_with_the_same_result(datasets, monkeypatch, tmp_path):
    ds = _copy(datasets["h36m"], tmp_path / "odd")
    ann = ds / "annotations"

    def s1(data):  # a 2D joint given as a string and a flat bbox of 3: numpy's rules decide, as before
        data["annotations"][0]["joints_2d_h36m"][3][0] = "12.5"
        data["annotations"][1]["bbox"] = [1, 2, 3]
        data["annotations"][2]["joints_2d_h36m"] = sum(
            data["annotations"][2]["joints_2d_h36m"], []
        )  # flat 51

    def s5(data):  # an extra person on an image, ids as the layout allows, an int bbox
        extra = dict(data["annotations"][0], id=999, bbox=[10, 20, 30, 40])
        data["annotations"].append(extra)

    _edit(ann / "h36m_subject1_data.json", s1)
    _edit(ann / "h36m_subject5_data.json", s5)
    _edit(
        ann / "h36m_subject5_joint_3d.json", lambda d: d["2"]["1"]["2"][4].__setitem__(0, 1e39)
    )  # inf in camera
    _edit(
        ann / "h36m_subject5_body_param.json", lambda d: d["2"]["1"]["1"].update(shape=[1e39] * 6)
    )  # left out
    (ann / "h36m_subject9_data.json").write_text(
        (ann / "h36m_subject9_data.json").read_text().replace('"iscrowd":0', '"iscrowd":NaN', 1)
    )
    assert _taken([ds]) == [False, True, False]
    fast, slow = _both(monkeypatch, [ds], tmp_path, maxcount=4)
    assert fast == slow and fast["samples/written"] == 27 and fast["samples/skipped/bad_bbox"] == 1
    assert fast["samples/skipped/bad_joints_3d"] == 2


def test_errors_are_the_per_sample_paths(datasets, tmp_path):
    ds = _copy(datasets["h36m"], tmp_path / "bad")
    ann = ds / "annotations"
    _edit(ann / "h36m_subject5_body_param.json", lambda d: d["2"]["1"]["3"].update(pose=[0.0] * 5))
    with pytest.raises(
        LayoutError, match=r"h36m_subject5_body_param.json: frame 2/1/3: field 'pose' has 5 numbers"
    ):
        build_shards([ds], tmp_path / "out")
    _edit(ann / "h36m_subject5_body_param.json", lambda d: d["2"]["1"]["3"].update(pose=[0.0] * 93))
    cams = json.loads((ann / "h36m_subject5_camera.json").read_text())
    del cams["2"]
    (ann / "h36m_subject5_camera.json").write_text(json.dumps(cams))
    with pytest.raises(
        LayoutError, match=r"h36m_subject5_data.json: image id \d+: field 'cam_idx' = 2 is not in"
    ):
        build_shards([ds], tmp_path / "out2")
