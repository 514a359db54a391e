"""`p2m train` on broken shards: one line naming the shard and the byte offset, exit 1, no traceback."""

from __future__ import annotations

import os
import shutil

import pytest

from .helpers import TINY_CONFIG, p2m_cli, train_args


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_a_truncated_shard_during_training_is_one_line(shards, tmp_path, workers):
    data = shutil.copytree(shards, tmp_path / "shards")
    tar = data / "train-000001.tar"
    size = tar.stat().st_size
    os.truncate(tar, size // 2 + 100)  # cuts a member in half
    proc = p2m_cli(*train_args(TINY_CONFIG, data, tmp_path / "run", "--set", f"train.num_workers={workers}"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"Error: {tar}: truncated tar: member at byte "), lines[0]
    assert lines[0].endswith(" left")
