"""PoseNet, MeshNet and Pose2Mesh: shapes, gradients, the Chebyshev maths, config knobs, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from p2m.errors import CheckpointError, ConfigError
from p2m.joints import H36M_FLIP_PAIRS, H36M_SKELETON
from p2m.pose2mesh.config import Config, to_dict
from p2m.pose2mesh.graph import joint_adjacency, load_or_build_hierarchy
from p2m.pose2mesh.layers import ChebConv, graph_mm
from p2m.pose2mesh.meshnet import MeshNet
from p2m.pose2mesh.model import Pose2MeshOutput, build_model, load_model
from p2m.pose2mesh.posenet import PoseNet

PACKAGE = Path(__file__).resolve().parents[2] / "p2m" / "pose2mesh"


def _replace(cfg: Config, **meshnet) -> Config:
    mc = dataclasses.replace(cfg.model, meshnet=dataclasses.replace(cfg.model.meshnet, **meshnet))
    return dataclasses.replace(cfg, model=mc)


def _random_laplacian(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = (rng.random((n, n)) < 0.2).astype(np.float64)
    a = np.triu(a, 1)
    a = a + a.T
    d = np.maximum(a.sum(1), 1)
    lap = np.eye(n) - a / np.sqrt(d[:, None] * d[None, :])
    return 2 * lap / np.linalg.eigvalsh(lap)[-1] - np.eye(n)


@pytest.mark.parametrize(
    ("fin", "fout", "k"), [(4, 6, 3), (6, 2, 3), (5, 5, 1), (6, 3, 2), (3, 7, 4), (8, 3, 5)]
)
def test_chebconv_matches_the_polynomial(fin, fout, k):
    torch.manual_seed(0)
    lap = _random_laplacian(12, fin)
    conv = ChebConv(fin, fout, k).double()
    x = torch.randn(12, 2, fin, dtype=torch.float64)
    # reference: sum_k T_k(L) x W_k + b with T_k from the dense recursion
    lt = torch.from_numpy(lap)
    t = [torch.eye(12, dtype=torch.float64), lt]
    while len(t) < k:
        t.append(2 * lt @ t[-1] - t[-2])
    w = conv.weight.view(fout, k, fin)
    ref = sum(torch.einsum("uv,vbi,oi->ubo", t[j], x, w[:, j]) for j in range(k)) + conv.bias
    sparse = torch.from_numpy(lap).double().to_sparse_csr()
    torch.testing.assert_close(conv(x, sparse), ref)
    torch.testing.assert_close(conv(x, lt), ref)


def test_graph_mm_sparse_equals_dense():
    lap = _random_laplacian(9, 1)
    x = torch.randn(9, 3, 4)
    torch.testing.assert_close(
        graph_mm(torch.from_numpy(lap).float().to_sparse_csr(), x), graph_mm(torch.from_numpy(lap).float(), x)
    )


@pytest.fixture(scope="module")
def tiny_model(tiny_config, body_1229, graph_cache):
    torch.manual_seed(0)
    return build_model(tiny_config, body=body_1229, cache_dir=graph_cache)


def test_shapes_and_named_output(tiny_model):
    out = tiny_model(torch.randn(3, 17, 2))
    assert isinstance(out, Pose2MeshOutput)
    assert out.joints_lifted.shape == (3, 17, 3)
    assert out.mesh.shape == (3, 1229, 3)
    assert out.joints_from_mesh.shape == (3, 17, 3)
    assert tiny_model.meshnet.level_sizes == (1229, 644, 340, 183)
    # joints_from_mesh is the body's regressor applied to the mesh
    reg = tiny_model.joint_regressor
    torch.testing.assert_close(out.joints_from_mesh, torch.einsum("jv,bvc->bjc", reg, out.mesh))


def test_every_parameter_gets_a_gradient(tiny_model):
    tiny_model.zero_grad()
    out = tiny_model(torch.randn(4, 17, 2))
    (out.mesh.square().mean() + out.joints_lifted.square().mean()).backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("detach", [True, False])
def test_meshnet_loss_reaches_posenet_only_without_detach(tiny_config, body_1229, graph_cache, detach):
    model = build_model(_replace(tiny_config, detach_lifted=detach), body=body_1229, cache_dir=graph_cache)
    model(torch.randn(4, 17, 2)).mesh.square().mean().backward()
    grad = model.posenet.out.weight.grad
    assert (grad is None or grad.abs().sum() == 0) == detach


@pytest.mark.parametrize(
    "knobs",
    [
        {"activation": "gelu"},
        {"activation": "leaky_relu", "norm": "none"},
        {"residual": "linear", "level_channels": ((16, 32), (32, 16))},
        {"residual": "none", "laplacian_scaling": "pose2mesh"},
        {"cheb_k": 2, "head_channels": ()},
    ],
)
def test_config_knobs_build_and_run(tiny_config, body_1229, graph_cache, knobs):
    model = build_model(_replace(tiny_config, **knobs), body=body_1229, cache_dir=graph_cache)
    out = model(torch.randn(2, 17, 2))
    assert out.mesh.shape == (2, 1229, 3)
    assert torch.isfinite(out.mesh).all()
    if knobs.get("residual") == "linear":
        assert any("skip.proj" in n for n, _ in model.named_parameters())


def test_interpolating_residual_is_identity_for_equal_widths(tiny_model):
    block = tiny_model.meshnet.blocks[1]
    x = torch.randn(5, 2, block.convs[0].conv.in_features)
    torch.testing.assert_close(block.skip(x), x)


def test_posenet_stage_and_original_size():
    cfg = Config()
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, stage="posenet")))
    assert model.meshnet is None
    out = model.eval()(torch.randn(2, 17, 2))
    assert out.mesh is None and out.joints_from_mesh is None and out.joints_lifted.shape == (2, 17, 3)
    # the digest's figure: about 67.5 M parameters for hidden 4096, 2 blocks, 17 joints
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(67.5e6, rel=0.01)


def test_coco19_input(tiny_config, body_1229, graph_cache):
    cfg = dataclasses.replace(tiny_config, model=dataclasses.replace(tiny_config.model, joint_set="coco19"))
    out = build_model(cfg, body=body_1229, cache_dir=graph_cache)(torch.randn(2, 19, 2))
    assert out.joints_lifted.shape == (2, 19, 3) and out.joints_from_mesh.shape == (2, 17, 3)


def test_checkpoint_round_trip(tiny_config, tiny_model, body_1229, graph_cache, tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_model.eval()
    state = tiny_model.state_dict()
    assert "graph_digest" in state
    assert all(t.layout == torch.strided for t in state.values())  # no sparse tensors: safetensors-ready
    assert not any(re.search(r"lap_|up_|joint_regressor", k) for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    ckpt = {"config": to_dict(tiny_config), "state_dict": load_file(str(tmp_path / "w.safetensors"))}
    rebuilt = load_model(ckpt, body=body_1229, cache_dir=graph_cache).eval()
    x = torch.randn(2, 17, 2)
    with torch.no_grad():
        a, b = tiny_model(x), rebuilt(x)
    torch.testing.assert_close(a.mesh, b.mesh)
    torch.testing.assert_close(a.joints_lifted, b.joints_lifted)
    tiny_model.train()


def test_checkpoint_errors(tiny_config, tiny_model, body_1229, graph_cache):
    state = dict(tiny_model.state_dict())
    state["graph_digest"] = torch.zeros_like(state["graph_digest"])
    with pytest.raises(CheckpointError, match="another mesh hierarchy"):
        load_model(
            {"config": to_dict(tiny_config), "state_dict": state}, body=body_1229, cache_dir=graph_cache
        )
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_model({"config": to_dict(tiny_config)})
    with pytest.raises(ConfigError, match="topology"):
        other = dataclasses.replace(
            tiny_config.model, body=dataclasses.replace(tiny_config.model.body, topology="615")
        )
        build_model(other, body=body_1229, cache_dir=graph_cache)


def test_dtype_follows_the_module(tiny_model):
    double = copy.deepcopy(tiny_model).double()
    out = double(torch.randn(2, 17, 2, dtype=torch.float64))
    assert out.mesh.dtype == torch.float64
    lap = double.meshnet.graph_op("lap_0")
    assert lap.dtype == torch.float64 and lap.layout == torch.sparse_csr


def test_dense_graph_baseline_computes_the_same(tiny_config, tiny_model, body_1229, graph_cache):
    hierarchy = load_or_build_hierarchy(body_1229.faces.numpy(), 1229, 3, graph_cache)
    adj = joint_adjacency(17, H36M_SKELETON, H36M_FLIP_PAIRS)
    dense = MeshNet(tiny_config.model.meshnet, hierarchy, adj, dense_graph=True)
    dense.load_state_dict(tiny_model.meshnet.state_dict())
    assert dense.graph_op("lap_0").layout == torch.strided
    x = torch.randn(2, 17, 5)
    with torch.no_grad():
        torch.testing.assert_close(dense.eval()(x), tiny_model.meshnet.eval()(x), rtol=1e-4, atol=1e-5)
    tiny_model.train()


def test_posenet_blocks_and_dropout_follow_args():
    net = PoseNet(17, hidden=32, num_blocks=3, dropout=0.25, activation="silu")
    assert len(net.blocks) == 3
    assert net.blocks[0].body[2].p == 0.25
    assert isinstance(net.blocks[0].body[1], torch.nn.SiLU)


MODEL_MODULES = (
    "graph",
    "layers",
    "meshnet",
    "posenet",
    "model",
    "losses",
    "metrics",
    "transforms",
    "config",
)


def test_no_device_literals_in_the_package():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        strict = path.stem in MODEL_MODULES  # model code: no device names at all; the trainer may pick "cuda"
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if ".cuda(" in line or (strict and re.search(r"""["']cuda(:\d+)?["']""", line)):
                offenders.append(f"{path.name}:{no}: {line.strip()}")
    assert not offenders, offenders


def test_ddp_deepcopy_and_averaging_work(tiny_model, tmp_path):
    import torch.distributed as dist
    from torch.optim.swa_utils import AveragedModel

    copied = copy.deepcopy(tiny_model)  # EMA/SWA helpers deep-copy the model
    assert copied.meshnet.graph_op("lap_0").layout == torch.sparse_csr
    AveragedModel(tiny_model).update_parameters(tiny_model)
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(copied)
        for _ in range(2):  # the second forward broadcasts buffers: the graph buffers must be skipped or work
            out = ddp(torch.randn(4, 17, 2))
            (out.mesh.square().mean() + out.joints_lifted.square().mean()).backward()
        assert copied.meshnet.fc.weight.grad is not None
    finally:
        dist.destroy_process_group()
