"""Benchmark: MeshNet forward+backward samples/s with sparse graph operators vs the same network with dense ones.

For each mesh (default: anny ``notoes``, 12,272 vertices, and the CPU-sized ``notoes_collapse10pc``, 1,229) and
each architecture (the original's layer table from configs/pose2mesh_h36m.yaml; the CPU-sized
configs/tiny_pose2mesh.yaml on the small mesh), it builds one MeshNet with sparse CSR Laplacians/up-sampling
(p2m's implementation) and a copy with the same weights whose graph operators are dense (V x V) matrices (the
plain baseline), then times ``loss = out.square().mean(); loss.backward()`` in training mode.

Both variants run at the same batch for the ratio; on the CPU the dense network on the 12k mesh is so slow
that it runs at a batch of 2 (and the sparse one is timed at that batch too). Memory per sample: the bytes
autograd saves for backward (all devices; the same for both variants), and on an accelerator the peak
allocation above the model's resident memory. The graph operators' own size (per model) is reported apart.

    python benchmarks/bench_meshnet.py [--device auto|cpu|<accelerator>] [--batch 16] [--min-time 5] [--threads N]

Prints one JSON line per measurement, then a markdown table with the sparse/dense ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from p2m.joints import H36M_FLIP_PAIRS, H36M_SKELETON
from p2m.pose2mesh.config import load_config
from p2m.pose2mesh.graph import joint_adjacency, load_or_build_hierarchy
from p2m.pose2mesh.meshnet import MeshNet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from rows import emit  # noqa: E402


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        return acc if acc is not None else torch.device("cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cpu":
        return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    mod = getattr(torch, device.type)
    return mod.get_device_name(device)


def sync(device: torch.device) -> None:
    if device.type != "cpu":
        getattr(torch, device.type).synchronize(device)


def saved_bytes_per_sample(net: MeshNet, x: torch.Tensor) -> float:
    """Bytes autograd keeps for backward in one forward pass, divided by the batch size."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided:  # sparse views of the graph buffers are not activations
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    # graph operators are buffers, not activations: drop storages the model owns
    owned = {(b.untyped_storage().data_ptr(), b.untyped_storage().nbytes()) for b in net.buffers()}
    owned |= {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in net.parameters()}
    total = sum(v for k, v in seen.items() if k not in owned)
    del out
    return total / x.shape[0]


def graph_megabytes(net: MeshNet) -> float:
    return (
        sum(getattr(net, n).numel() * getattr(net, n).element_size() for n in net.graph_buffer_names) / 2**20
    )


def time_fwd_bwd(
    net: MeshNet, x: torch.Tensor, device: torch.device, min_time: float, max_iters: int
) -> dict:
    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).square().mean().backward()

    step()  # warm-up
    sync(device)
    mod = getattr(torch, device.type, None) if device.type != "cpu" else None
    if mod is not None:
        mod.empty_cache()
        base = mod.memory_allocated(device)
        mod.reset_peak_memory_stats(device)
    iters, start = 0, time.perf_counter()
    while True:
        step()
        iters += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or iters >= max_iters:
            break
    res = {"iters": iters, "seconds": round(elapsed, 3), "samples_per_s": iters * x.shape[0] / elapsed}
    if mod is not None:
        res["peak_mb_per_sample"] = (mod.max_memory_allocated(device) - base) / 2**20 / x.shape[0]
    return res


def run_case(topology: str, config: Path, args: argparse.Namespace, device: torch.device) -> dict:
    """Time one mesh + architecture: sparse at the main batch, sparse and dense at the dense batch."""
    from p2m.body import create

    cfg = load_config(config, [f"model.body.topology={topology}"])
    body = create(cfg.model.body.model, topology=topology)
    mcfg = cfg.model.meshnet
    hier = load_or_build_hierarchy(body.faces.numpy(), body.num_vertices, mcfg.num_levels - 1)
    adj = joint_adjacency(17, H36M_SKELETON, H36M_FLIP_PAIRS)
    torch.manual_seed(0)
    sparse = MeshNet(mcfg, hier, adj).to(device)
    dense = MeshNet(mcfg, hier, adj, dense_graph=True)
    dense.load_state_dict(sparse.state_dict())
    dense = dense.to(device)
    params = sum(p.numel() for p in sparse.parameters())
    big = hier.num_vertices[0] > args.dense_full_above
    dense_batch = args.dense_batch_full if big else args.batch
    runs = [("sparse", sparse, args.batch), ("dense", dense, dense_batch)]
    if dense_batch != args.batch:
        runs.insert(1, ("sparse", sparse, dense_batch))  # the ratio compares equal batches
    out: dict = {"topology": topology, "vertices": hier.num_vertices[0], "config": config.name, "runs": []}
    for kind, net, batch in runs:
        x = torch.randn(batch, 17, 5, device=device)
        res = time_fwd_bwd(net, x, device, args.min_time, args.max_iters)
        res.update(
            bench="meshnet_fwd_bwd",
            impl=kind,
            device=device_name(device),
            topology=topology,
            vertices=hier.num_vertices[0],
            levels=list(hier.num_vertices[: mcfg.num_levels]),
            config=config.name,
            params_m=round(params / 1e6, 2),
            batch=batch,
            saved_mb_per_sample=round(saved_bytes_per_sample(net, x) / 2**20, 2),
            graph_mb=round(graph_megabytes(net), 1),
        )
        res["samples_per_s"] = round(res["samples_per_s"], 3)
        if "peak_mb_per_sample" in res:
            res["peak_mb_per_sample"] = round(res["peak_mb_per_sample"], 2)
        print(json.dumps(res), flush=True)
        out["runs"].append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="torch device (auto: the accelerator if any, else cpu)")
    ap.add_argument(
        "--batch", type=int, default=None, help="batch size (default 16 on the CPU, 64 otherwise)"
    )
    ap.add_argument(
        "--dense-batch-full",
        type=int,
        default=None,
        help="batch of the dense runs on meshes above --dense-full-above vertices (default 2 on the CPU, else --batch)",
    )
    ap.add_argument("--dense-full-above", type=int, default=5000)
    ap.add_argument("--min-time", type=float, default=5.0, help="seconds of timed iterations per measurement")
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    ap.add_argument(
        "--cases",
        default="notoes:pose2mesh_h36m,notoes_collapse10pc:pose2mesh_h36m,notoes_collapse10pc:tiny_pose2mesh",
        help="comma-separated topology:config pairs (configs/<config>.yaml)",
    )
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_cpu = device.type == "cpu"
    args.batch = args.batch or (16 if on_cpu else 64)
    args.dense_batch_full = args.dense_batch_full or (2 if on_cpu else args.batch)
    cases = [
        run_case(t, REPO / "configs" / f"{c}.yaml", args, device)
        for t, c in (x.split(":") for x in args.cases.split(","))
    ]

    print()
    print(
        "| device | mesh (V) | config | params | sparse samples/s @B | dense samples/s @B | sparse/dense (same B) "
        "| saved activations MB/sample | peak MB/sample sparse/dense | graph operators MB sparse/dense |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        runs = case["runs"]
        main_run, dense = runs[0], runs[-1]
        same = runs[-2]  # sparse at the dense batch
        peak = (
            f"{same['peak_mb_per_sample']} / {dense['peak_mb_per_sample']}"
            if "peak_mb_per_sample" in dense
            else "n/a (CPU)"
        )
        emit(
            "meshnet",
            f"forward+backward samples/s, {case['topology']} ({case['vertices']} v), {case['config']}, "
            f"B={same['batch']}, {main_run['device']}",
            same["samples_per_s"],
            "samples/s",
            "dense-Laplacian MeshNet, same architecture and batch",
            dense["samples_per_s"],
            note=f"saved activations {main_run['saved_mb_per_sample']} MB/sample; graph operators "
            f"{main_run['graph_mb']} MB sparse vs {dense['graph_mb']} MB dense",
        )
        sparse_txt = f"{main_run['samples_per_s']} @{main_run['batch']}"
        if same is not main_run:
            sparse_txt += f", {same['samples_per_s']} @{same['batch']}"
        print(
            f"| {main_run['device']} | {case['topology']} ({case['vertices']}) | {case['config']} "
            f"| {main_run['params_m']} M | {sparse_txt} | {dense['samples_per_s']} @{dense['batch']} "
            f"| {same['samples_per_s'] / dense['samples_per_s']:.1f}x | {main_run['saved_mb_per_sample']} "
            f"| {peak} | {main_run['graph_mb']} / {dense['graph_mb']} |"
        )


if __name__ == "__main__":
    main()
