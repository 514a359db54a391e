"""Training on the synthetic source: no shards needed, exact resume, mixing with shards, the loss ramp, one scale,
--init from another run."""

from __future__ import annotations

import json

import pytest
import torch

from p2m.errors import ConfigError
from p2m.pose2mesh import checkpoint as ckpt
from p2m.pose2mesh.train import train

from .helpers import TINY_CONFIG, p2m_cli, tiny_config

SYNTH = ("synthetic.ratio=1", "synthetic.batches_per_epoch=4", "transform.standardize=one_scale", "loss.ramp_epochs=1",
         "loss.edge_start_epoch=0")  # fmt: skip


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _same_weights(a, b) -> None:
    assert a["step"] == b["step"] and set(a["model"]) == set(b["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_pure_synthetic_run_needs_no_shards_and_resumes_exactly(tmp_path):
    cfg = tiny_config(*SYNTH)
    res = train(cfg, tmp_path / "a", None, device="cpu", progress=False)
    assert res["step"] == 8 and not res["stopped"]  # 2 epochs of 4 batches
    train(cfg, tmp_path / "b", None, device="cpu", progress=False, max_steps=3)
    train(cfg, tmp_path / "b", None, device="cpu", progress=False, resume=True)
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    _same_weights(a, b)
    assert a["data"] == b["data"] and a["data"]["batches"] == 8 and a["data"]["kind"] == "synthetic"
    rows = [r for r in _rows(tmp_path / "a") if r["kind"] == "train"]
    assert all(r["normal"] > 0 and r["edge"] > 0 for r in rows)


def test_without_shards_the_ratio_must_be_one(tmp_path):
    with pytest.raises(ConfigError, match="synthetic.ratio 0.5: training shards are needed"):
        train(tiny_config("synthetic.ratio=0.5"), tmp_path / "r", None, device="cpu", progress=False)
    res = p2m_cli("train", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "c"))
    assert res.returncode != 0 and "training shards are needed" in res.stderr


def test_mixed_batches_take_the_ratio_from_each_source(shards, tmp_path):
    from p2m.body import create
    from p2m.pose2mesh.data import make_train_source

    cfg = tiny_config("synthetic.ratio=0.25")
    body = create("anny", topology="notoes_collapse3pc")
    src = make_train_source(shards, cfg, 16, 0, 1, body, torch.device("cpu"))
    batch = next(iter(src))
    keys = batch["key"]
    assert len(keys) == 16 and sum(k.startswith("gen") for k in keys) == 4
    assert batch["j2d"].shape == (16, 17, 3) and bool(batch["has_body"].all())
    state = src.state_dict()
    assert state["batch"] == 1 and state["synthetic"]["batches"] == 1
    # a run on the mix resumes exactly too
    cfg = tiny_config("synthetic.ratio=0.25", "train.epochs=1")
    train(cfg, tmp_path / "a", shards, device="cpu", progress=False, max_steps=6)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=2)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=6, resume=True)
    _same_weights(
        ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt"),
        ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt"),
    )


def test_init_starts_every_weight_from_another_run(tmp_path):
    cfg = tiny_config(*SYNTH, "train.epochs=1")
    train(cfg, tmp_path / "first", None, device="cpu", progress=False, max_steps=2)
    first = ckpt.load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")
    train(cfg, tmp_path / "tuned", None, device="cpu", progress=False, max_steps=1, init=tmp_path / "first")
    tuned = ckpt.load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.pt")
    assert tuned["init_posenet"].endswith("last.pt")
    # one step away from the first run's weights, not from a fresh initialisation
    w = "posenet.inp.weight"
    fresh = tiny_config(*SYNTH)
    train(fresh, tmp_path / "fresh", None, device="cpu", progress=False, max_steps=1)
    scratch = ckpt.load_checkpoint(tmp_path / "fresh" / "checkpoints" / "last.pt")
    assert (tuned["model"][w] - first["model"][w]).abs().max() < (
        scratch["model"][w] - first["model"][w]
    ).abs().max()
    other = tiny_config(*SYNTH, "model.posenet.hidden=32")
    with pytest.raises(Exception, match="do not fit the model of this config"):
        train(
            other, tmp_path / "bad", None, device="cpu", progress=False, max_steps=1, init=tmp_path / "first"
        )


def test_ship_writes_small_weights_and_a_model_card_that_p2m_loads(tmp_path):
    from p2m.pose2mesh.model_card import ship
    from p2m.pose2mesh.pretrained import resolve

    cfg = tiny_config(*SYNTH, "train.epochs=1")
    train(cfg, tmp_path / "run", None, device="cpu", progress=False, max_steps=2)
    result = {
        "gt": {
            "samples": 10,
            "mpjpe": 55.0,
            "pa_mpjpe": 41.5,
            "mpvpe": 70.0,
            "edge_error": 8.0,
            "normal_dev": 1.5,
            "mrpe": 120.0,
        },
        "noisy": {"mpjpe": 60.0},
    }
    text = ship(tmp_path / "run", tmp_path / "run", result, hours=0.5, folder=tmp_path / "models")
    weights = resolve("default", folder=tmp_path / "models")
    assert weights.stat().st_size < 5 * 1024 * 1024 and "shipped" in text
    card = weights.with_suffix(".md").read_text()
    for needle in (
        "| MPJPE, 14 joints | 55.0 mm | 60.0 mm | <= 60 mm |",
        "PA-MPJPE",
        "edge-length",
        "MRPE",
        "mocap.cs.cmu.edu",
        "0.50 h",
        "Apache-2.0",
    ):
        assert needle in card, needle
    # the shipped file starts a fine-tuning run
    train(cfg, tmp_path / "tuned", None, device="cpu", progress=False, max_steps=1, init=weights)


@pytest.mark.parametrize("stop", [4, 3])
def test_resume_at_an_epoch_end_does_not_train_that_epoch_again(shards, tmp_path, stop):
    """--max-steps at an epoch's last step: the resumed run does only that epoch's end (schedule, validation)."""
    cfg = tiny_config(*SYNTH, "train.val_split=test", "train.val_max_samples=32")
    train(cfg, tmp_path / "a", shards, device="cpu", progress=False)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=stop)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, resume=True)
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    _same_weights(a, b)
    assert a["step"] == 8 and a["scheduler"] == b["scheduler"] and a["best"] == b["best"]

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("time", "samples_per_s", "seconds")} for r in rows]

    assert strip(_rows(tmp_path / "a")) == strip(_rows(tmp_path / "b"))


def test_resume_at_an_epoch_end_from_shards(shards, tmp_path):
    """The same for the shard loader: 180 samples / batch 16 = 11 batches per epoch."""
    cfg = tiny_config("train.epochs=2")
    train(cfg, tmp_path / "a", shards, device="cpu", progress=False)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, max_steps=11)
    train(cfg, tmp_path / "b", shards, device="cpu", progress=False, resume=True)
    _same_weights(
        ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt"),
        ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt"),
    )
