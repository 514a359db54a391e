"""The one safetensors reader (p2m.pose2mesh.weights): p2m's metadata, strict and lenient reads, named errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from p2m.errors import CheckpointError
from p2m.pose2mesh.weights import WEIGHTS_FORMAT, load_weights


def test_reads_p2m_weights_and_their_config(tmp_path):
    path = tmp_path / "best.safetensors"
    save_file(
        {"a.weight": torch.arange(6.0).reshape(2, 3)},
        str(path),
        metadata={
            "format": WEIGHTS_FORMAT,
            "config": json.dumps({"model": {"stage": "posenet"}}),
            "step": "7",
        },
    )
    state, config, meta = load_weights(path)
    assert torch.equal(state["a.weight"], torch.arange(6.0).reshape(2, 3))
    assert config == {"model": {"stage": "posenet"}} and meta["step"] == "7"


def test_foreign_weights_are_refused_when_strict_and_read_without_config_otherwise(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointError, match=r"other\.safetensors: not p2m weights"):
        load_weights(path)
    state, config, meta = load_weights(path, strict=False)
    assert config is None and meta == {} and torch.equal(state["w"], torch.ones(2))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors: no such weights file"):
        load_weights(tmp_path / "nothing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: cannot read the safetensors file"):
        load_weights(bad, strict=False)
