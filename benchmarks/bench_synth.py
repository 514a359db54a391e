"""Benchmark `p2m synth`: pose-only samples per second.

Baseline, measured in the same run: the body model's batched forward alone for the same number of frames
(the floor any synthesiser on this body model pays). The ratio says what the dataset writing adds.

    python benchmarks/bench_synth.py [--num 10000] [--poses cmu-train]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from p2m.annotate.synth import SynthOptions, synth
from p2m.body import create
from p2m.body.poses import load_pose_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--poses", default="cmu-train")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = synth(Path(tmp) / "ds", SynthOptions(num=args.num, poses=args.poses), progress=False)
        synth_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "ds").rglob("*") if p.is_file())

    body = create("anny", topology="full")
    source = load_pose_source(args.poses)
    rng = np.random.default_rng(0)
    frames = stats["frames"]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, frames, 64):
            n = min(64, frames - start)
            pose = torch.as_tensor(np.asarray(source.sample(n, rng)), dtype=torch.float32)
            body(pose, torch.full((n, 6), 0.5))
    forward_s = time.perf_counter() - t0

    row = {
        "benchmark": "synth pose-only",
        "samples": stats["images"],
        "seconds": round(synth_s, 2),
        "samples_per_s": round(stats["images"] / synth_s, 1),
        "baseline": "body model forward alone (same frames, B=64)",
        "baseline_seconds": round(forward_s, 2),
        "ratio_time_vs_baseline": round(synth_s / forward_s, 2),
        "dataset_bytes": size,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, CPU",
    }
    print(json.dumps(row))
    emit(
        "synth",
        f"pose-only samples/s ({stats['images']} samples, h36m cameras)",
        row["samples_per_s"],
        "samples/s",
        "body-model forward alone, same frames",
        round(stats["images"] / forward_s, 1),
        note=f"{synth_s:.1f} s for {stats['images']} samples; goal: 10,000 in under 60 s",
    )


if __name__ == "__main__":
    main()
