"""`verify_shards` / `p2m shard verify` / `p2m shard info` on a good set and on every kind of damage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from p2m.cli import main
from p2m.shards import build_shards, shard_info, verify_shards
from p2m.shards.codec import TAR_END, iter_tar_samples, record_header, tar_member


@pytest.fixture()
def shard_set(datasets, tmp_path) -> Path:
    out = tmp_path / "shards"
    build_shards([datasets["h36m"]], out, maxcount=4, with_meta=True)  # 30 samples -> 8 shards
    return out


def _rewrite(path: Path, change) -> None:
    """Rebuild a tar member by member; ``change(name, data)`` returns the new (name, data) or None to drop it."""
    with path.open("rb") as fh:
        members = [
            (f"{key}.{field}", data)
            for key, fields in iter_tar_samples(fh, str(path))
            for field, data in fields.items()
        ]
    out = []
    for name, data in members:
        new = change(name, data)
        if new is not None:
            out.append(tar_member(*new))
    path.write_bytes(b"".join(out) + TAR_END)


def test_good_set_passes(shard_set):
    report = verify_shards(shard_set)
    assert report.ok, report.format()
    assert report.shards == 8 and report.samples == 30
    info = shard_info(shard_set)
    assert info["total"] == {
        "shards": 8,
        "samples": 30,
        "bytes": sum((shard_set / f"train-{i:06d}.tar").stat().st_size for i in range(8)),
    }
    assert info["splits"]["train"]["sources"] == {"h36m": 30}


def test_every_kind_of_damage_is_listed(shard_set):
    shards = [shard_set / f"train-{i:06d}.tar" for i in range(8)]
    # 0: one byte of a JSON value changed (still valid JSON): only the sha256 can tell
    data = bytearray(shards[0].read_bytes())
    pos = data.index(b'"frame":') + len(b'"frame":')
    data[pos] = ord("7") if data[pos] != ord("7") else ord("8")
    shards[0].write_bytes(bytes(data))
    # 1: truncated in the middle of a member
    shards[1].write_bytes(shards[1].read_bytes()[:3000])
    # 2: an npy member whose bytes are garbage
    garbled: list[str] = []

    def garble_first_npy(name: str, data: bytes):
        if name.endswith(".npy") and not garbled:
            garbled.append(name.removesuffix(".npy"))
            return name, b"\x00" * len(data)
        return name, data

    _rewrite(shards[2], garble_first_npy)

    # 3: a field of the wrong shape
    def short_j2d(name: str, data: bytes):
        if not name.endswith(".npy"):
            return name, data
        record = np.load(io.BytesIO(data))
        fields = [(n, record.dtype[n].base.str, record.dtype[n].shape) for n in record.dtype.names]
        fields[0] = ("j2d", "<f4", (16, 3))
        head, _ = record_header(tuple(fields))
        return name, head + record["j2d"][:16].tobytes() + b"".join(
            record[n].tobytes() for n in record.dtype.names[1:]
        )

    _rewrite(shards[3], short_j2d)
    # 4: the index promises one sample more than the shard holds
    index = json.loads((shard_set / "index.json").read_text())
    rec = index["splits"]["train"]
    rec["shards"][4]["samples"] += 1
    rec["samples"] += 1
    # 5: a member whose key has a dot (webdataset cuts it at the dot)
    _rewrite(shards[5], lambda n, d: (n.replace("_p00.json", "_p00.54138969_000001.json"), d))
    (shard_set / "index.json").write_text(json.dumps(index))
    # 6: gone
    shards[6].unlink()
    # an unlisted tar is a warning, not a problem
    (shard_set / "train-000099.tar").write_bytes(TAR_END)

    report = verify_shards(shard_set)
    assert not report.ok
    by_shard: dict[str, list[str]] = {}
    for p in report.problems:
        by_shard.setdefault(p.shard, []).append(str(p))
    text = report.format()
    assert len(by_shard["train-000000.tar"]) == 1 and "sha256" in by_shard["train-000000.tar"][0]
    assert any("webdataset cannot read the tar" in m for m in by_shard["train-000001.tar"])
    assert any("size 3000 bytes" in m for m in by_shard["train-000001.tar"])
    assert any(f"sample {garbled[0]}: npy does not decode" in m for m in by_shard["train-000002.tar"])
    assert any("j2d shape (16, 3), expected (17, 3)" in m for m in by_shard["train-000003.tar"])
    assert any("4 samples read, index.json says 5" in m for m in by_shard["train-000004.tar"])
    assert any("unexpected members ['54138969_000001.json']" in m for m in by_shard["train-000005.tar"])
    assert any("no .json member" in m for m in by_shard["train-000005.tar"])
    assert any("cannot open" in m for m in by_shard["train-000006.tar"])
    assert "train-000007.tar" not in by_shard
    assert any("train-000099.tar" in w for w in report.warnings)
    assert "train-000099.tar" in text and f"{len(report.problems)} problem(s)" in text

    parallel = verify_shards(shard_set, workers=2)
    assert sorted(map(str, parallel.problems)) == sorted(map(str, report.problems))

    result = CliRunner().invoke(main, ["shard", "verify", str(shard_set)])
    assert result.exit_code == 1
    assert "j2d shape (16, 3)" in result.output and "sha256" in result.output


def test_incomplete_index_is_a_problem(shard_set):
    index = json.loads((shard_set / "index.json").read_text())
    index["complete"] = False
    (shard_set / "index.json").write_text(json.dumps(index))
    report = verify_shards(shard_set)
    assert [p.shard for p in report.problems] == ["index.json"]
    assert "interrupted" in report.problems[0].message


def test_cli_write_is_the_default_action(datasets, tmp_path):
    out = tmp_path / "cli"
    runner = CliRunner()
    # the crawl fixture has no camera file, which `p2m annotate validate` (and so `p2m shard`) rejects
    result = runner.invoke(
        main,
        [
            "shard",
            str(datasets["h36m"]),
            str(datasets["crawl"]),
            "--out",
            str(out),
            "--split",
            "train=S1,S5",
            "--split",
            "test=S9",
            "--maxcount",
            "8",
            "--no-validate",
        ],
    )
    assert result.exit_code == 0, result.output
    # train: 20 h36m + 3 photos x 2 people = 26 (8+8+8+2), test: 10 (8+2)
    assert "36 samples in 6 new shards" in result.output and "train: 26 samples" in result.output
    info = runner.invoke(main, ["shard", "info", str(out)])
    assert info.exit_code == 0
    lines = info.output.splitlines()
    assert any(line.split()[:3] == ["train", "4", "26"] and "crawl:6, h36m:20" in line for line in lines)
    assert any(line.split()[:3] == ["test", "2", "10"] for line in lines)
    as_json = json.loads(runner.invoke(main, ["shard", "info", str(out), "--json"]).output)
    assert as_json["total"]["samples"] == 36
    assert runner.invoke(main, ["shard", "verify", str(out)]).exit_code == 0
    again = runner.invoke(main, ["shard", str(datasets["h36m"]), "--out", str(out), "--maxcount", "9"])
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output
    bad = runner.invoke(main, ["shard", str(datasets["h36m"]), "--out", str(out), "--split", "train"])
    assert bad.exit_code == 2 and "NAME=S1,S5" in bad.output
    crop = runner.invoke(main, ["shard", str(datasets["h36m"]), "--out", str(tmp_path / "c"), "--crop"])
    assert crop.exit_code == 2 and "--with-images" in crop.output
    assert runner.invoke(main, ["shard", "--help"]).exit_code == 0
    missing = runner.invoke(main, ["shard", "info", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no shard index" in missing.output
