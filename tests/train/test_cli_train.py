"""The `p2m train`, `p2m eval` and `p2m plot` commands: thin, clean errors, JSON and PNG outputs."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner
from PIL import Image

from p2m.cli import main

from .helpers import REPO, TINY_CONFIG, p2m_cli, run_env, train_args


def test_train_command_module_does_not_import_torch():
    code = "import sys, p2m.cli.train, p2m.cli.evaluate, p2m.cli.plot; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_eval_prints_a_table_and_writes_json(tiny_run, shards, tmp_path):
    import shutil

    run, result = tiny_run
    run = shutil.copytree(run, tmp_path / "run")  # the shared run stays untouched
    res = CliRunner().invoke(
        main, ["eval", str(run), "--data", str(shards), "--split", "test", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    assert (
        "MPJPE (14 joints)" in res.output and "PA-MPJPE (17 joints)" in res.output and "MPVPE" in res.output
    )
    data = json.loads((run / "eval_test.json").read_text())
    assert data["samples"] == 60 and data["unit"].startswith("mm") and data["split"] == "test"
    assert data["checkpoint"].endswith("best.pt")
    # the validation of the best epoch and `p2m eval` of best.pt use the same code and noise: same numbers
    assert abs(data["mpjpe"] - result["best"]["value"]) < 1e-6
    assert data["pa_mpjpe"] < data["mpjpe"] and data["pa_mpjpe_17"] < data["mpjpe_17"]
    out = tmp_path / "gt.json"
    res = CliRunner().invoke(
        main,
        [
            "eval",
            str(run / "best.safetensors"),
            "--data",
            str(shards),
            "--input",
            "gt",
            "--max-samples",
            "20",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    gt = json.loads(out.read_text())
    assert gt["samples"] == 20 and gt["input"] == "gt"


def test_plot_writes_png_curves(tiny_run, tmp_path):
    run, _ = tiny_run
    res = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["losses.png", "lr.png", "val.png"]
    for name in names:
        with Image.open(tmp_path / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_resume_with_another_config_is_refused_with_the_diff(tiny_run, shards):
    run, _ = tiny_run
    before = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    proc = p2m_cli(*train_args(TINY_CONFIG, shards, run, "--resume", "--set", "loss.edge=5"), env=run_env())
    assert proc.returncode == 1, proc.stderr
    assert "another config" in proc.stderr and "loss.edge: 20.0 in the run, 5.0 now" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == before


def test_bad_checkpoint_for_eval_exits_cleanly(tmp_path, shards):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\0" * 100)
    res = CliRunner().invoke(main, ["eval", str(bad), "--data", str(shards)])
    assert res.exit_code == 1 and "bad.pt: cannot read the checkpoint" in res.output
