"""Config: YAML -> frozen dataclasses, unknown keys by dotted path, overrides, round trip, shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from p2m.errors import ConfigError
from p2m.pose2mesh.config import Config, LossConfig, dump_config, from_dict, load_config, save_config, to_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_are_the_original_stage_two():
    cfg = load_config()
    assert cfg.model.meshnet.cheb_k == 3 and cfg.model.meshnet.num_levels == 8
    assert cfg.loss == LossConfig(
        vertex=1.0, normal=0.1, edge=20.0, joint=1e-3, lift=1e-3, edge_start_epoch=7
    )
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (
        "rmsprop",
        1e-3,
        64,
        15,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.loss.vertex = 2.0  # type: ignore[misc]


def test_unknown_keys_are_named_by_dotted_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  meshnet:\n    chebk: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.meshnet\.chebk") as err:
        load_config(path)
    assert "model.meshnet.cheb_k" in str(err.value)  # the valid keys are listed
    with pytest.raises(ConfigError, match=r"lossy"):
        load_config(None, ["lossy.vertex=1"])


def test_bad_values_name_their_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.meshnet.*activation.*'swish'"):
        load_config(None, ["model.meshnet.activation=swish"])
    with pytest.raises(ConfigError, match=r"train\.batch_size.*expected an integer"):
        load_config(None, ["train.batch_size=6.5"])
    with pytest.raises(ConfigError, match=r"model\.meshnet\.detach_lifted.*true or false"):
        load_config(None, ["model.meshnet.detach_lifted=1"])
    with pytest.raises(ConfigError, match=r"model\.meshnet\.level_channels\[1\]\[0\]"):
        load_config(None, ["model.meshnet.level_channels=[[8],[x]]"])
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["novalue"])


def test_overrides_parse_yaml_values():
    cfg = load_config(
        CONFIGS / "tiny_pose2mesh.yaml",
        [
            "loss.edge=0",
            "model.meshnet.level_channels=[[8, 8], [8]]",
            "transform.noise.kind=posefix",
            "train.lr=3e-4",
        ],
    )
    assert cfg.loss.edge == 0.0 and isinstance(cfg.loss.edge, float)
    assert cfg.model.meshnet.level_channels == ((8, 8), (8,))
    assert cfg.transform.noise.kind == "posefix"
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.body.topology == "notoes_collapse10pc"  # untouched keys keep the file's values


def test_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "pose2mesh_h36m.yaml", ["loss.form=smooth_l1"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert from_dict(Config, to_dict(cfg)) == cfg
    assert "level_channels" in dump_config(cfg)


@pytest.mark.parametrize("name", ["tiny_pose2mesh.yaml", "pose2mesh_h36m.yaml", "posenet_h36m.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    if name == "posenet_h36m.yaml":
        assert cfg.model.stage == "posenet" and cfg.train.epochs == 60 and cfg.transform.flip_prob == 0.5
        assert cfg.loss.lift == 1.0 and cfg.loss.vertex == 0.0
    if name == "pose2mesh_h36m.yaml":
        assert cfg.model.body.topology == "notoes" and cfg.train.lr_steps == (12,)
        assert cfg.model.meshnet == Config().model.meshnet  # the defaults are the original's layer table
