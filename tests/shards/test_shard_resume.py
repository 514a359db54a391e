"""A writer killed with SIGKILL resumes: complete shards are kept, the rest is written, the result is identical."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from p2m.errors import ShardError
from p2m.shards import build_shards, load_index

SPLITS = {"train": "S1,S5", "test": "S9"}

# Runs build_shards in a child process that SIGKILLs itself at a chosen point: in the middle of a shard
# ("mid": after N samples went into temp files, or the first batch that reaches N) or between a shard's rename and its entry in index.json
# ("renamed": at the N-th index save). Nothing is cleaned up, as after a real kill -9 or power cut.
CHILD = r"""
import json, os, signal, sys
from p2m.shards import write as W

datasets, out, mode, n = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = [0]
if mode == "mid":
    orig = W._SplitWriter.add
    def add(self, enc):
        orig(self, enc)
        calls[0] += 1
        if calls[0] == n:
            self.fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    W._SplitWriter.add = add
    orig_batch = W._SplitWriter.add_batch
    def add_batch(self, batch):  # the columnar path's batches: killed after the batch that reaches N
        orig_batch(self, batch)
        calls[0] += sum(g >= 0 for g in batch.group_of)
        if calls[0] >= n:
            self.fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    W._SplitWriter.add_batch = add_batch
else:
    orig_save = W.save_index
    def save(out_dir, index):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        orig_save(out_dir, index)
    W.save_index = save
W.build_shards(datasets, out, splits=json.loads(sys.argv[5]), maxcount=4)
"""


def _kill_run(datasets: list[Path], out: Path, mode: str, n: int) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps([str(d) for d in datasets]),
            str(out),
            mode,
            str(n),
            json.dumps(SPLITS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def _tree(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name.endswith((".tar", "index.json"))}


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "shards"
    build_shards([datasets["h36m"], datasets["synth"]], out, splits=SPLITS, maxcount=4)
    return _tree(out)


@pytest.mark.parametrize(("mode", "n"), [("mid", 19), ("renamed", 4)])
def test_kill_then_rerun_equals_uninterrupted(datasets, tmp_path, reference, mode, n):
    inputs = [datasets["h36m"], datasets["synth"]]
    out = tmp_path / "shards"
    _kill_run(inputs, out, mode, n)
    index = load_index(out)
    assert not index["complete"]
    listed = {sh["name"] for rec in index["splits"].values() for sh in rec["shards"]}
    assert listed, "the child was killed before committing any shard"
    temps = list(out.glob(".*.tmp"))
    if mode == "mid":
        assert temps, "a shard was being written: its temp file must be there"
    else:  # renamed but not indexed: a complete-looking tar the index does not list
        assert {p.name for p in out.glob("*.tar")} - listed
    with pytest.raises(ShardError, match="incomplete"):
        from p2m.shards import ShardStream

        ShardStream(out, "train", 2)
    workers = 2 if mode == "mid" else 1  # the rerun may use other workers: they do not change the bytes
    stats = build_shards(inputs, out, splits=SPLITS, maxcount=4, workers=workers)
    assert stats["shards/kept"] == len(listed)
    assert stats["samples/kept"] >= 4 * len(listed)
    assert stats.get("files/removed_temp", 0) == len(temps)
    assert not list(out.glob(".*.tmp"))
    assert _tree(out) == reference


def test_changed_shard_is_rewritten(datasets, tmp_path, reference):
    inputs = [datasets["h36m"], datasets["synth"]]
    out = tmp_path / "shards"
    _kill_run(inputs, out, "mid", 25)
    index = load_index(out)
    first = index["splits"]["train"]["shards"][0]["name"]
    data = bytearray((out / first).read_bytes())
    data[700] ^= 0xFF  # one flipped bit inside the first sample: same size, another sha256
    (out / first).write_bytes(bytes(data))
    stats = build_shards(inputs, out, splits=SPLITS, maxcount=4)
    assert stats["shards/rewritten_bad_hash"] == 1
    assert _tree(out) == reference


def test_complete_set_is_kept_whole(datasets, tmp_path):
    out = tmp_path / "shards"
    build_shards([datasets["h36m"]], out, maxcount=4)
    before = _tree(out)
    stats = build_shards([datasets["h36m"]], out, maxcount=4)
    assert stats["shards/kept"] == 8 and stats.get("shards/written", 0) == 0
    assert _tree(out) == before


def test_subjects_before_the_resume_point_only_make_keys(datasets):
    from p2m.layout import read_dataset
    from p2m.shards.tasks import plan_tasks

    opened = [read_dataset(datasets["h36m"]), read_dataset(datasets["synth"])]
    split_of = {1: "train", 5: "train", 9: "test"}
    tasks = plan_tasks(opened, split_of, {"train": "h36m_s005_a002_sa001_c0001_f000003_p00"})
    assert [(t.name, t.subject, t.split, t.mode) for t in tasks] == [
        ("h36m", 1, "train", "keys"),
        ("h36m", 5, "train", "encode"),
        ("h36m", 9, "test", "encode"),
        ("synth", 1, "train", "encode"),
        ("synth", 9, "test", "encode"),
    ]
    tasks = plan_tasks(opened, {1: "train"}, {"train": "synth_s001_a002_sa001_c0002_f000000_p00"})
    assert [t.mode for t in tasks] == ["keys", "count", "count", "encode", "count"]
