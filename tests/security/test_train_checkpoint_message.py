"""A checkpoint that does not load with weights_only=True is refused without advice to load it unsafely."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
import torch

from p2m.errors import CheckpointError
from p2m.pose2mesh import checkpoint as ckpt

UNSAFE_ADVICE = ("weights_only=False", "weights_only` set to `False`", "add_safe_globals", "safe_globals(",
                 "can still be loaded", "if you trust")  # fmt: skip


class _RunsCode:
    """Unpickling this would run a shell command (what weights_only=False would do with a hostile file)."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    ("payload", "named"),
    [(Fraction(1, 3), "GLOBAL fractions.Fraction"), (_RunsCode(), f"GLOBAL {os.system.__module__}.system")],
    ids=["foreign class", "code on load"],
)
def test_refusal_names_the_object_and_gives_no_unsafe_advice(tmp_path, payload, named, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.pt"
    torch.save({"format": ckpt.FORMAT, "obj": payload}, path)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the checkpoint") and named in message
    assert "\n" not in message and not any(advice in message for advice in UNSAFE_ADVICE), message
    assert not (tmp_path / "pwned").exists()
