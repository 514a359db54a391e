"""The extra training-log sinks: TensorBoard event files read back with tensorboard's own reader, CSV tables."""

from __future__ import annotations

import csv

import pytest

from p2m.errors import ConfigError
from p2m.pose2mesh.sinks import CsvSink, TensorBoardSink, parse_loggers


def _rows(steps, loss_of=lambda s: 1.0 / s):
    for s in steps:
        yield {"kind": "train", "step": s, "epoch": 0, "loss": loss_of(s), "lr": 0.001, "time": 1e9 + s}
        if s % 2 == 0:
            yield {
                "kind": "val",
                "step": s,
                "epoch": 0,
                "split": "test",
                "mpjpe": 100.0 - s,
                "pa_mpjpe": float("nan"),
            }


def _read_tb(run):
    pytest.importorskip("tensorboard", reason="the 'plot' extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return acc


def test_parse_loggers():
    assert parse_loggers(["jsonl"]) == ()
    assert parse_loggers(["tensorboard,csv", "jsonl"]) == ("csv", "tensorboard")
    with pytest.raises(ConfigError, match="--logger wandb: expected jsonl, csv, tensorboard"):
        parse_loggers(["wandb"])


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard")
    sink = TensorBoardSink(tmp_path)
    for row in _rows(range(1, 7)):
        sink.write(row)
    sink.close()
    acc = _read_tb(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["train/loss", "train/lr", "val/mpjpe"]  # NaN and labels left out
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6]
    assert [round(e.value, 6) for e in loss] == [round(1.0 / s, 6) for s in range(1, 7)]
    assert [(e.step, e.value) for e in acc.Scalars("val/mpjpe")] == [(2, 98.0), (4, 96.0), (6, 94.0)]


def test_tensorboard_resume_purges_the_replayed_steps(tmp_path):
    pytest.importorskip("tensorboard")
    first = TensorBoardSink(tmp_path)
    for row in _rows(range(1, 7)):
        first.write(row)
    first.close()
    again = TensorBoardSink(tmp_path, resume_step=3)  # the checkpoint was at step 3: steps 4-6 are replayed
    for row in _rows(range(4, 8), loss_of=lambda s: 10.0 * s):
        again.write(row)
    again.close()
    loss = _read_tb(tmp_path).Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6, 7]
    assert [round(e.value, 4) for e in loss[3:]] == [40.0, 50.0, 60.0, 70.0]


def test_csv_tables_per_kind_and_rebuilt_on_resume(tmp_path):
    sink = CsvSink(tmp_path)
    for row in _rows(range(1, 5)):
        sink.write(row)
    sink.close()
    with open(tmp_path / "metrics_train.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["step", "epoch", "loss", "lr"] and [r[0] for r in table[1:]] == ["1", "2", "3", "4"]
    assert float(table[2][2]) == 0.5
    with open(tmp_path / "metrics_val.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["step", "epoch", "mpjpe"], ["2", "0", "98.0"], ["4", "0", "96.0"]]
    # resume at step 1: the tables are rebuilt from the kept record, then appended to
    resumed = CsvSink(tmp_path, rows=list(_rows([1])))
    assert not (tmp_path / "metrics_val.csv").exists()
    for row in _rows([2]):
        resumed.write(row)
    resumed.close()
    with open(tmp_path / "metrics_train.csv", newline="") as fh:
        assert [r[0] for r in csv.reader(fh)] == ["step", "1", "2"]
    with open(tmp_path / "metrics_val.csv", newline="") as fh:
        assert [r[0] for r in csv.reader(fh)] == ["step", "2"]
