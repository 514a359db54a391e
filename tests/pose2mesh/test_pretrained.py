"""The shipped-model plumbing: `default` resolves to the package's weights; export writes small float16 weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from p2m.errors import CheckpointError
from p2m.pose2mesh import pretrained


def test_default_resolves_to_the_package_folder(tmp_path):
    assert pretrained.is_shipped_name("default") and not pretrained.is_shipped_name("./default")
    assert pretrained.resolve("runs/x") == tmp_path.__class__("runs/x")
    with pytest.raises(CheckpointError, match="not in this installation"):
        pretrained.shipped_path("default", folder=tmp_path)
    with pytest.raises(CheckpointError, match="unknown shipped model 'nope'"):
        pretrained.shipped_path("nope", folder=tmp_path)
    target = tmp_path / f"{pretrained.SHIPPED['default']}.safetensors"
    target.write_bytes(b"x")
    assert pretrained.resolve("default", folder=tmp_path) == target
    assert pretrained.model_card(folder=tmp_path) == target.with_suffix(".md")
    assert pretrained.models_dir().parts[-3:] == ("p2m", "data", "models")


def test_export_writes_float16_weights_that_load_into_the_model(tiny_config, body_369, graph_cache, tmp_path):
    from p2m.pose2mesh.checkpoint import load_model_state, save_weights
    from p2m.pose2mesh.config import to_dict
    from p2m.pose2mesh.model import build_model

    body = replace(tiny_config.model.body, topology="notoes_collapse3pc")
    cfg = replace(tiny_config, model=replace(tiny_config.model, body=body))
    torch.manual_seed(0)
    model = build_model(cfg, body=body_369, cache_dir=graph_cache).eval()
    src = tmp_path / "run" / "best.safetensors"
    src.parent.mkdir()
    full = save_weights(src, model.state_dict(), to_dict(cfg))
    out = tmp_path / "shipped.safetensors"
    size = pretrained.export_weights(src, out, metadata={"mpjpe": 12.5})
    assert size == out.stat().st_size and size < 0.6 * full
    state, config, _ = load_model_state(out)
    assert config == to_dict(cfg)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    reloaded = build_model(config, body=body_369, cache_dir=graph_cache).eval()
    reloaded.load_state_dict(state)  # strict; casts back to float32
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    x = torch.randn(4, 17, 2)
    with torch.no_grad():
        a, b = model(x), reloaded(x)
    assert (a.mesh - b.mesh).abs().max() < 1.0  # mm: float16 weights barely move the output
    with pytest.raises(CheckpointError, match="over the"):
        pretrained.export_weights(src, tmp_path / "big.safetensors", max_bytes=1000)
