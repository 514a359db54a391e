"""`p2m train` as a good citizen: a broken shard is one line; --resume needs no --data; extra log sinks."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import pytest

from .helpers import TINY_CONFIG, p2m_cli, train_args


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "reindexed"), [(0, False), (1, True)])
def test_a_truncated_shard_during_training_is_one_line(shards, tmp_path, workers, reindexed):
    data = shutil.copytree(shards, tmp_path / "shards")
    tar = data / "train-000001.tar"
    size = tar.stat().st_size
    os.truncate(tar, size // 2 + 100)  # cuts a member in half
    if reindexed:  # an index that matches the cut file: the tar reader finds the cut
        index = json.loads((data / "index.json").read_text())
        rec = index["splits"]["train"]["shards"][1]
        rec["sha256"], rec["bytes"] = hashlib.sha256(tar.read_bytes()).hexdigest(), tar.stat().st_size
        (data / "index.json").write_text(json.dumps(index))
    proc = p2m_cli(*train_args(TINY_CONFIG, data, tmp_path / "run", "--set", f"train.num_workers={workers}"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    if reindexed:
        assert lines[0].startswith(f"Error: {tar}: truncated tar: member at byte "), lines[0]
        assert lines[0].endswith(" left")
    else:  # the sha256 check when the shard is opened
        assert lines[0].startswith(f"Error: {tar}: sha256 ") and "index.json says" in lines[0], lines[0]


@pytest.mark.slow
def test_resume_needs_no_data_and_the_loggers_mirror_the_record(shards, tmp_path):
    """Stop at step 3, resume with neither --config nor --data: the TensorBoard events and CSV tables equal
    metrics.jsonl, with no replayed step shown twice."""
    pytest.importorskip("tensorboard", reason="the 'plot' extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from p2m.pose2mesh.logging_utils import read_metrics

    run = tmp_path / "run"
    args = train_args(TINY_CONFIG, shards, run, "--logger", "tensorboard", "--logger", "csv")
    first = p2m_cli(*args, "--max-steps", "5", "--keep-last", "2")  # checkpoints at steps 3 and 5
    assert first.returncode == 0, first.stderr
    # as if it had crashed after step 5 with its last checkpoint at step 3: resume replays steps 4 and 5, whose
    # rows (step 4) are already in every log
    snapshots = sorted((run / "checkpoints").glob("step-*.pt"))
    assert len(snapshots) == 2
    shutil.copyfile(snapshots[0], run / "checkpoints" / "last.pt")
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"] == [2, 4]
    proc = p2m_cli(
        "train",
        "--out",
        str(run),
        "--resume",
        "--device",
        "cpu",
        "--no-progress",
        "--logger",
        "tensorboard,csv",
    )
    assert proc.returncode == 0, proc.stderr
    assert "done at step 22" in proc.stdout
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train_rows]
    assert [round(e.value, 4) for e in loss] == [round(r["loss"], 4) for r in train_rows]
    assert [e.step for e in acc.Scalars("val/mpjpe")] == [r["step"] for r in rows if r["kind"] == "val"]
    with open(run / "metrics_train.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in table] == [r["step"] for r in train_rows]
    assert (run / "metrics_epoch.csv").exists() and (run / "metrics_val.csv").exists()
