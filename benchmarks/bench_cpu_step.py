"""CPU training-step speed of the shipped model's networks: eager float32, torch.compile, bf16 autocast, 1 vs 2
threads; PoseNet alone and PoseNet + MeshNet; each against a plain PyTorch MLP of the same size measured in the same
run (Linear/ReLU only, the same widths: what the lifter costs without BatchNorm, dropout and residual plumbing).

    .venv/bin/python benchmarks/bench_cpu_step.py [--config configs/release_pose2mesh.yaml] [--min-time 3]

A step is forward, L1 losses, backward and an Adam update on random inputs (data drawing is measured apart by the
synthetic source's own row). Prints one BENCH_ROW per variant (samples/s, higher is better).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from rows import emit as emit_row  # noqa: E402


def plain_mlp(joints: int, hidden: int, blocks: int) -> torch.nn.Module:
    layers: list[torch.nn.Module] = [torch.nn.Linear(2 * joints, hidden)]
    for _ in range(2 * blocks):
        layers += [torch.nn.ReLU(), torch.nn.Linear(hidden, hidden)]
    layers += [torch.nn.ReLU(), torch.nn.Linear(hidden, 3 * joints)]
    return torch.nn.Sequential(*layers)


def step_rate(model: torch.nn.Module, batch: int, *, mesh: bool, bf16: bool, min_time: float) -> float:
    """Samples/s of forward + L1 + backward + Adam on random data (after 3 warm-up steps)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 17, 2)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            out = model(x) if mesh else model(x.reshape(batch, -1))
        if mesh:
            loss = out.joints_lifted.float().abs().mean() + out.mesh.float().abs().mean()
        else:
            loss = out.float().abs().mean()
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time or n < 3:
        one()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "release_pose2mesh.yaml"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)"
    )
    args = ap.parse_args()
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.model import build_model

    cfg = load_config(args.config)
    pc = cfg.model.posenet
    full = build_model(cfg)
    posenet = full.posenet
    base = plain_mlp(17, pc.hidden, pc.num_blocks)
    variants = (
        [("eager fp32", False, False)]
        + ([] if args.no_compile else [("torch.compile", True, False)])
        + [("bf16 autocast", False, True)]
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ref = step_rate(base, args.batch, mesh=False, bf16=False, min_time=args.min_time)
        for name, comp, bf16 in variants:
            for what, module, mesh in (("PoseNet", posenet, False), ("PoseNet+MeshNet", full, True)):
                m = torch.compile(module) if comp else module
                if not mesh:
                    m = _Flat(m)
                rate = step_rate(m, args.batch, mesh=mesh, bf16=bf16, min_time=args.min_time)
                label = f"{what} train step, {name}, {threads} thread(s), batch {args.batch}"
                emit_row(
                    "cpu_step",
                    label,
                    round(rate, 1),
                    "samples/s",
                    f"plain MLP {pc.hidden}x{2 * pc.num_blocks} fp32",
                    round(ref, 1),
                    higher_is_better=True,
                )
                print(
                    f"| {label} | {rate:.0f} samples/s | plain MLP: {ref:.0f} samples/s | {rate / ref:.2f}x |",
                    flush=True,
                )


class _Flat(torch.nn.Module):
    """PoseNet on flat (B, 2J) inputs, like the plain MLP."""

    def __init__(self, posenet: torch.nn.Module) -> None:
        super().__init__()
        self.posenet = posenet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.posenet(x.reshape(x.shape[0], 17, 2))


if __name__ == "__main__":
    main()
