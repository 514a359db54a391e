"""Trainer benchmarks on the CPU: training samples/s (tiny and full config), time from `--resume` to the first step,
checkpoint bytes on disk after many epochs; each against a named baseline measured in the same run.

    .venv/bin/python benchmarks/bench_train.py            # tiny config + full config (a few full-size steps)
    .venv/bin/python benchmarks/bench_train.py --quick    # tiny config only

Baselines:
- samples/s: the same training step with the ground-truth mesh built the original's way, one sample at a time on
  the CPU (``__getitem__``), instead of one batched body-model call on the training device;
- resume: a fresh start of the same run (process launch to the end of the first step, both through the CLI);
- checkpoint bytes: the original's scheme, one checkpoint (weights + optimizer) per epoch plus best, no pruning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_pose2mesh.yaml"
FULL = REPO / "configs" / "pose2mesh_h36m.yaml"
TINY_SETS = ["model.body.topology=notoes_collapse3pc", "train.batch_size=16", "train.num_workers=0",
             "train.shuffle_buffer=64", "train.val_batch_size=64", "train.log_every=1"]  # fmt: skip


sys.path.insert(0, str(REPO / "benchmarks"))
from rows import emit as emit_row  # noqa: E402


def emit(name: str, value: float, unit: str, baseline_name: str, baseline: float, note: str = "") -> None:
    lower = unit in ("s", "MB", "GB")  # times and bytes: lower is better
    emit_row(
        "train",
        name,
        round(value, 4),
        unit,
        baseline_name,
        round(baseline, 4),
        higher_is_better=not lower,
        note=note,
    )
    ratio = value / baseline if baseline else float("nan")
    row = {
        "benchmark": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline_name,
        "baseline_value": round(baseline, 4),
        "ratio": round(ratio, 3),
        "note": note,
    }
    print(json.dumps(row))
    print(f"| {name} | {value:.4g} {unit} | {baseline_name}: {baseline:.4g} {unit} | {ratio:.2f}x | {note} |")
    sys.stdout.flush()


def make_shards(base: Path, num: int) -> Path:
    from p2m.annotate.synth import SynthOptions, synth
    from p2m.shards import build_shards

    synth(
        base / "ds",
        SynthOptions(num=num, poses="cmu-train", subjects=4, topology="notoes_collapse3pc", seed=3),
        progress=False,
    )
    build_shards(
        [base / "ds"],
        base / "shards",
        splits={"train": "S1,S2,S3", "test": "S4"},
        maxcount=max(1, num // 8),
        progress=False,
    )
    return base / "shards"


def train_rate(
    cfg_path: Path, sets: list[str], data: Path, run: Path, steps: int
) -> tuple[float, float, int]:
    """Median samples/s of the logged steps after the first (warm-up), the median step s, and the batch size."""
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.train import train

    cfg = load_config(cfg_path, sets)
    train(cfg, run, data, device="cpu", progress=False, max_steps=steps)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if r["kind"] == "train" and r["step"] > 1]
    rate = statistics.median(rates)
    return rate, cfg.train.batch_size / rate, cfg.train.batch_size


def gt_cost(topology: str, batch: int, reps: int = 3) -> tuple[float, float]:
    """Seconds to build the GT meshes of one batch: one batched call vs one call per sample (the original)."""
    import torch

    from p2m.body import create

    body = create("anny", topology=topology)
    pose = torch.randn(batch, body.num_bones, 3) * 0.2
    shape = torch.rand(batch, body.num_shape)
    trans = torch.zeros(batch, 3)
    with torch.no_grad():
        body(pose[:2], shape[:2], trans[:2])  # warm-up (kernel compilation)
        t0 = time.perf_counter()
        for _ in range(reps):
            body(pose, shape, trans)
        batched = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for i in range(batch):
            body(pose[i : i + 1], shape[i : i + 1], trans[i : i + 1])
        single = time.perf_counter() - t0
    return batched, single


def bench_rate(
    name: str, cfg_path: Path, sets: list[str], data: Path, work: Path, steps: int, topology: str
) -> None:
    rate, step_s, batch = train_rate(cfg_path, sets, data, work / f"rate-{name}", steps)
    batched, single = gt_cost(topology, batch)
    baseline = batch / (step_s - batched + single)
    emit(
        f"train samples/s, {name} config (CPU, batch {batch})",
        rate,
        "samples/s",
        "same step with per-sample CPU GT meshes (original)",
        baseline,
        f"GT per batch {batched * 1e3:.0f} ms batched vs {single * 1e3:.0f} ms per-sample; {steps} steps",
    )


def _cli_seconds(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "p2m", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"p2m train failed: rc {proc.returncode}\n{proc.stderr[-2000:]}")
    return seconds


def bench_resume(name: str, cfg_path: Path, sets: list[str], data: Path, work: Path, stop: int) -> None:
    """Launch -> first step done (``--max-steps``: the run stops right after that step's checkpoint), resume vs
    fresh."""
    env = dict(os.environ, P2M_CACHE_DIR=os.environ.get("P2M_CACHE_DIR", str(REPO / ".cache")))
    args = ["train", "--config", str(cfg_path), "--device", "cpu", "--no-progress", "--data", str(data)]
    for s in [*sets, "train.ckpt_every_steps=1"]:
        args += ["--set", s]
    run = work / f"resume-{name}"
    _cli_seconds([*args, "--out", str(run), "--max-steps", str(stop)], env)  # a run stopped after step `stop`
    fresh = _cli_seconds([*args, "--out", str(work / f"fresh-{name}"), "--max-steps", "1"], env)
    resumed = _cli_seconds([*args, "--out", str(run), "--resume", "--max-steps", str(stop + 1)], env)
    size = (run / "checkpoints" / "last.pt").stat().st_size
    emit(
        f"--resume to first step, {name} config (process launch -> step done)",
        resumed,
        "s",
        "fresh start to first step",
        fresh,
        f"last.pt {size / 1e6:.1f} MB",
    )


def bench_disk(data: Path, work: Path, epochs: int) -> None:
    from p2m.pose2mesh import checkpoint as ckpt
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.model import build_model
    from p2m.pose2mesh.train import train

    cfg = load_config(
        TINY,
        [
            *TINY_SETS,
            f"train.epochs={epochs}",
            "train.lr_steps=[1000]",
            "train.log_every=50",
            "train.ckpt_every_steps=5",
        ],
    )
    run = work / "disk"
    train(cfg, run, data, device="cpu", progress=False)
    ours = ckpt.disk_usage(run)
    per_epoch = (run / "checkpoints" / "last.pt").stat().st_size
    original = (epochs + 1) * per_epoch  # checkpoint{epoch}.pth.tar for each epoch, plus best.pth.tar
    emit(
        f"checkpoint bytes on disk after {epochs} epochs, tiny config",
        ours / 1e6,
        "MB",
        "original scheme (one checkpoint per epoch + best)",
        original / 1e6,
        "ours: last.pt + best.pt (hard link when equal) + best.safetensors",
    )
    full = load_config(FULL)
    params = sum(p.numel() for p in build_model(full).parameters())
    ckpt_bytes = 8 * params  # fp32 weights + RMSprop square_avg
    ours_full = 2 * ckpt_bytes + 4 * params  # worst case: last.pt and best.pt differ, plus the weights
    emit(
        f"checkpoint bytes after 15 epochs, full config ({params / 1e6:.1f} M parameters, computed)",
        ours_full / 1e9,
        "GB",
        "original scheme: 15 per-epoch checkpoints + best",
        16 * ckpt_bytes / 1e9,
        "8 bytes/parameter per checkpoint (weights + RMSprop state)",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny config only")
    ap.add_argument("--full-steps", type=int, default=4, help="training steps of the full config")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the checkpoint-bytes run")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = ap.parse_args()
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    work = Path(tempfile.mkdtemp(prefix="p2m-bench-train-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = make_shards(work, 480)
        bench_rate("tiny", TINY, TINY_SETS, data, work, 30, "notoes_collapse3pc")
        bench_resume("tiny", TINY, TINY_SETS, data, work, 5)
        bench_disk(data, work, args.epochs)
        if not args.quick:
            full_sets = ["train.num_workers=0", "train.log_every=1", "train.val_split=null"]
            bench_rate("full", FULL, full_sets, data, work, args.full_steps, "notoes")
            bench_resume("full", FULL, [*full_sets, "train.batch_size=8"], data, work, 1)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
