"""An index.json is data, never a command: shard names that are not ``{split}-NNNNNN.tar`` are refused by every
command that reads the index (issue 12 item 1), and nothing runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _toy_dataset import toy_dataset

from p2m.shards import build_shards

REPO = Path(__file__).resolve().parents[2]


def _dataset(root: Path) -> Path:
    return toy_dataset(root, subjects=(1, 9), frames=8, seed=0)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("names")
    build_shards([_dataset(base / "ds")], base / "shards", splits={"train": "S1", "test": "S9"}, maxcount=4)
    return base / "shards"


def _tampered(clean: Path, dst: Path, name: str) -> Path:
    """A copy of the shard set whose index names its first train shard ``name``."""
    dst.mkdir()
    for p in clean.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    index = json.loads((dst / "index.json").read_text())
    index["splits"]["train"]["shards"][0]["name"] = name
    (dst / "index.json").write_text(json.dumps(index))
    return dst


def _p2m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    )
    env.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))
    return subprocess.run(
        [sys.executable, "-m", "p2m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_pipe_command_in_index_json_is_refused_and_never_runs(clean, tmp_path):
    shards = _tampered(clean, tmp_path / "shards", "pipe:touch pwned")
    config = REPO / "configs" / "tiny_posenet.yaml"
    # relative spellings ("." and "index.json") are the ones that turned the name into a pipe: URL
    runs = [
        _p2m("shard", "verify", ".", cwd=shards),
        _p2m("shard", "verify", "index.json", cwd=shards),
        _p2m("shard", "verify", str(shards / "index.json"), cwd=tmp_path),
        _p2m("shard", "info", ".", cwd=shards),
        _p2m(
            "train",
            "--config",
            str(config),
            "--data",
            ".",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            "train.val_split=null",
            cwd=shards,
        ),
    ]
    for proc in runs:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert (
            "splits.train.shards[0].name 'pipe:touch pwned' is not a shard file name"
            in proc.stderr + proc.stdout
        )
        assert "Traceback" not in proc.stderr
    assert not (shards / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "name",
    [
        "../train-000000.tar",
        "/etc/passwd",
        "https://127.0.0.1/train-000000.tar",
        "test-000000.tar",
        "train-000000.tar\n",
        "train-٠٠٠٠٠٠.tar",
    ],
)
def test_names_outside_the_folder_or_of_another_split_are_refused(clean, tmp_path, name):
    from p2m.errors import ShardError
    from p2m.shards import load_index, make_loader, verify_shards

    shards = _tampered(clean, tmp_path / "shards", name)
    for read in (load_index, verify_shards, lambda d: make_loader(d, "train", 2)):
        with pytest.raises(ShardError, match=r"splits\.train\.shards\[0\]\.name .* is not a shard file name"):
            read(shards)
