"""The `p2m` command group: every stage is listed, help is fast, errors exit cleanly."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from p2m.cli import STAGES, main

EXPECTED = {"crawl", "annotate", "synth", "shard", "train", "eval", "infer", "demo"}


def test_help_lists_every_stage():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in EXPECTED:
        assert f"  {name} " in result.output, name


def test_every_stage_has_help():
    runner = CliRunner()
    for name in STAGES:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from p2m.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Commands:" in proc.stdout
    assert proc.stdout.strip().endswith("torch loaded: False")


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "p2m", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "p2m" in proc.stdout
