"""Ship a trained model into the package (float16 weights under 5 MB + its model card, p2m/data/models/)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from p2m.body.poses import CMU_CREDIT
from p2m.pose2mesh.pretrained import DEFAULT, SHIPPED, export_weights, models_dir

logger = logging.getLogger(__name__)

_ROWS = (("mpjpe", "MPJPE, 14 joints", "mm"), ("pa_mpjpe", "PA-MPJPE, 14 joints", "mm"), ("mpvpe", "MPVPE", "mm"),
         ("edge_error", "edge-length error vs GT mesh", "%"), ("normal_dev", "faces > 60 deg off GT normal", "%"),
         ("mrpe", "MRPE (root from 2D + intrinsics)", "mm"))  # fmt: skip
#: The targets of issue 14 for the shipped model (lower is better).
TARGETS = {"mpjpe": 60.0, "pa_mpjpe": 40.0, "edge_error": 10.0, "normal_dev": 2.0}


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_summary(run: str | os.PathLike) -> dict[str, Any]:
    """Steps, samples seen, wall seconds and best validation of a run folder (from metrics.jsonl and config)."""
    from p2m.pose2mesh.config import load_config

    run = Path(run)
    cfg = load_config(run / "config.yaml")
    rows = _rows(run / "metrics.jsonl")
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    seconds = sum(float(r.get("seconds", 0.0)) for r in rows if r.get("kind") == "epoch")
    val = [r for r in rows if r.get("kind") == "val"]
    best = min(val, key=lambda r: r.get(cfg.train.best_metric) or float("inf")) if val else {}
    return {
        "steps": steps,
        "samples": steps * cfg.train.batch_size,
        "epochs": sum(r.get("kind") == "epoch" for r in rows),
        "seconds": seconds,
        "best": best,
        "config": cfg,
    }


def card_text(
    stage1: Mapping[str, Any],
    stage2: Mapping[str, Any],
    result: Mapping[str, Any],
    *,
    size_bytes: int,
    hours: float,
    extra: str = "",
    middle: tuple[Mapping[str, Any], ...] = (),
) -> str:
    """The model card (Markdown): ``stage1`` (PoseNet), ``middle`` stages, ``stage2`` the shipped one."""
    cfg = stage2["config"]
    seen = "; ".join(
        f"stage {i} ({'PoseNet' if s['config'].model.stage == 'posenet' else 'PoseNet + MeshNet'}, normal weight "
        f"{s['config'].loss.normal:g}) {s['samples']:,} samples in {s['steps']:,} steps"
        for i, s in enumerate((stage1, *middle, stage2), start=1)
    )
    pc, mc = cfg.model.posenet, cfg.model.meshnet
    gt, noisy = result.get("gt", {}), result.get("noisy", {})
    lines = [
        "# p2m `default`: Pose2Mesh on anny's 1,229-vertex mesh",
        "",
        "2D human joints (H36M-17, pixels) in; root-relative 3D joints and a 1,229-vertex anny body mesh (mm, "
        "camera axes) out. `p2m infer default --pose2d POSE --out DIR`, `p2m eval default --data SHARDS`, "
        "`p2m train --init default` (fine-tuning).",
        "",
        "## Model",
        f"- PoseNet {pc.hidden} wide, {pc.num_blocks} residual blocks, dropout {pc.dropout}; MeshNet with joint "
        f"channels {list(mc.joint_channels)}, levels {[list(x) for x in mc.level_channels]} (coarse to fine), "
        f"head {list(mc.head_channels)}, Chebyshev K={mc.cheb_k}.",
        f"- Input normalisation `{cfg.transform.standardize}`; 2D error model `{cfg.transform.noise.kind}` "
        f"(scale {cfg.transform.noise.gaussian_scale}).",
        f"- Weights stored as float16 ({size_bytes / 1e6:.2f} MB); loading casts them back to float32.",
        "",
        "## Data",
        "- Training: the on-device synthetic source (`synthetic.ratio: 1`): poses of the CMU training subjects "
        "1, 5, 6, 7, 8, 9 (24,633 poses of 84 clips, mirrored left/right with probability "
        f"{cfg.synthetic.mirror_prob}), random headings, adult anny phenotypes, a Human3.6M-like 4-camera rig and "
        f"random cameras ({cfg.synthetic.random_camera_prob:.0%}).",
        f"- Seen: {seen}.",
        "- Held out: CMU subjects 2 and 3 (`p2m synth --poses cmu-eval`): validation seed 3 (2,000 samples, chooses "
        "best.pt on PA-MPJPE from GT 2D), evaluation seed 2 (4,000 samples, the numbers below).",
        "",
        "## Recipe",
        "`python scripts/train_release.py`: configs/release_posenet.yaml, then configs/release_pose2mesh.yaml "
        "(--init-posenet), then configs/release_smooth.yaml (--init). Departures from the original are listed in the "
        "configs' headers.",
        "",
        "## Metrics (held-out CMU subjects 2 and 3, `p2m eval`)",
        "",
        "| metric | GT 2D | 2D + error model | target |",
        "| --- | --- | --- | --- |",
    ]
    for key, label, unit in _ROWS:
        target = f"<= {TARGETS[key]:g} {unit}" if key in TARGETS else "-"
        a, b = gt.get(key), noisy.get(key)
        lines.append(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit)} | {target} |")
    lines += [
        "",
        f"Samples scored: {gt.get('samples')} (GT 2D). MRPE uses the ground-truth 2D joints and intrinsics with the "
        "predicted root-relative joints (least squares on the projection).",
        "",
        "## Compute",
        f"- {hours:.2f} h of wall time on 2 CPU cores shared with other jobs (training, validation and data drawn on "
        "the CPU); see benchmarks/BENCHMARKS.md for samples/s.",
        "",
    ]
    if extra:
        lines += [extra.rstrip(), ""]
    lines += [
        "## Licence and credit",
        "- Weights: Apache-2.0, like p2m. Trained only on synthetic data from the anny body model (code Apache-2.0, "
        "assets CC0-1.0) and CMU motion capture.",
        f"- {CMU_CREDIT}",
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any, unit: str) -> str:
    return "-" if value is None else f"{float(value):.1f} {unit}"


def ship(
    stage1: str | os.PathLike,
    stage2: str | os.PathLike,
    result: Mapping[str, Any],
    *,
    hours: float,
    folder: str | os.PathLike | None = None,
    extra: str = "",
    stages: tuple[str | os.PathLike, ...] = (),
) -> str:
    """Export the last stage's (``stage2``) best weights as the shipped model and write its model card (``stages``:
    runs between the first and the last); returns a one-line summary."""
    from p2m.io import write_text

    out_dir = Path(folder or models_dir())
    stem = SHIPPED[DEFAULT]
    gt = result.get("gt", {})
    meta = {k: f"{gt[k]:.2f}" for k, _, _ in _ROWS if gt.get(k) is not None}
    size = export_weights(stage2, out_dir / f"{stem}.safetensors", metadata={"eval_gt": json.dumps(meta)})
    s1, s2 = run_summary(stage1), run_summary(stage2)
    middle = tuple(run_summary(r) for r in stages)
    write_text(
        out_dir / f"{stem}.md",
        card_text(s1, s2, result, size_bytes=size, hours=hours, extra=extra, middle=middle),
    )
    return f"shipped {out_dir / stem}.safetensors ({size / 1e6:.2f} MB) and its model card"
