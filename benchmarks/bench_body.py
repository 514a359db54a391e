"""Benchmark the p2m.body anny layer (float32, B=64) against anny as shipped (float64) and against torch skinning.

Usage: python benchmarks/bench_body.py [--batch 64] [--repeats 11] [--topology full --topology 1229 ...]

For each topology prints JSON lines and markdown rows: median milliseconds per batched forward (no_grad) and
per forward+backward, for
  * p2m layer, skinning "auto" (warp's kernel on CPU tensors, torch's dense blend elsewhere),
  * p2m layer, skinning "torch" (baseline 1: the dense torch blend on every device),
  * ``anny.Anny(rig="cmu_mb", topology=...)`` as shipped: float64, its default skinning (baseline 2),
with the ratios baseline / p2m.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from p2m.body import create, resolve_topology  # noqa: E402
from p2m.body.anny_model import axis_angle_to_transforms, import_anny  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402


def interleaved_median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each function, timed round-robin so that machine noise hits every variant alike."""
    for fn in fns.values():
        fn()  # warm-up (warp compiles its CPU kernels once per kernel cache)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(ts) for name, ts in times.items()}


def bench_topology(topology: str, batch: int, repeats: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    pose = torch.randn(batch, 31, 3, generator=gen) * 0.3
    shape = torch.rand(batch, 6, generator=gen)
    rows = []
    runs: dict[str, tuple] = {}
    for skinning in ("auto", "torch"):
        body = create("anny", topology=topology, skinning=skinning)

        def forward(body=body):
            with torch.no_grad():
                body(pose, shape)

        def forward_backward(body=body):
            p = pose.clone().requires_grad_(True)
            s = shape.clone().requires_grad_(True)
            out = body(p, s)
            (out.vertices.sum() + out.joints.sum()).backward()

        runs[f"p2m-{skinning}"] = (forward, forward_backward)
    anny = import_anny()
    raw = anny.Anny(rig="cmu_mb", topology=resolve_topology(topology).anny_name)
    pose64, shape64 = pose.double(), shape.double()

    def raw_forward():
        with torch.no_grad():
            raw(pose_parameters=axis_angle_to_transforms(pose64), phenotype_kwargs=shape64)

    def raw_forward_backward():
        p = pose64.clone().requires_grad_(True)
        s = shape64.clone().requires_grad_(True)
        raw(pose_parameters=axis_angle_to_transforms(p), phenotype_kwargs=s)["vertices"].sum().backward()

    runs["anny-as-shipped-fp64"] = (raw_forward, raw_forward_backward)
    fwd = interleaved_median_ms({name: f for name, (f, _) in runs.items()}, repeats)
    fwd_bwd = interleaved_median_ms({name: fb for name, (_, fb) in runs.items()}, repeats)
    results = {name: (fwd[name], fwd_bwd[name]) for name in runs}
    ours_f, ours_fb = results["p2m-auto"]
    for name, (f, fb) in results.items():
        rows.append(
            {
                "benchmark": "body_forward",
                "topology": resolve_topology(topology).name,
                "batch": batch,
                "variant": name,
                "forward_ms": round(f, 1),
                "forward_backward_ms": round(fb, 1),
                "forward_ratio_vs_p2m_auto": round(f / ours_f, 2),
                "forward_backward_ratio_vs_p2m_auto": round(fb / ours_fb, 2),
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--topology", action="append", help="default: full and 1229")
    args = ap.parse_args()
    rows = [
        r for t in (args.topology or ["full", "1229"]) for r in bench_topology(t, args.batch, args.repeats)
    ]
    for row in rows:
        print(json.dumps(row))
    by = {(r["topology"], r["variant"]): r for r in rows}
    for (topology, variant), r in by.items():
        if variant == "p2m-auto":
            continue
        ours = by[(topology, "p2m-auto")]
        for what in ("forward", "forward_backward"):
            emit(
                "body",
                f"{what.replace('_', '+')} ms, B={r['batch']}, {topology} mesh",
                ours[f"{what}_ms"],
                "ms",
                variant,
                r[f"{what}_ms"],
                higher_is_better=False,
            )
    print("| topology | B | variant | forward ms | fwd+bwd ms | forward x p2m | fwd+bwd x p2m |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['topology']} | {r['batch']} | {r['variant']} | {r['forward_ms']} | {r['forward_backward_ms']} "
            f"| {r['forward_ratio_vs_p2m_auto']} | {r['forward_backward_ratio_vs_p2m_auto']} |"
        )


if __name__ == "__main__":
    main()
