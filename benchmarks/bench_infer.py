"""Benchmark `p2m infer`'s input handling on held-out synthetic people: the COCO Head rule and the missing-joint fill.

Usage: python benchmarks/bench_infer.py [--num 2000] [--checkpoint RUN]

1. Head (top of head) from COCO keypoints, the error in % of the torso length (Pelvis-Neck), on clean keypoints and
   with Gaussian keypoint noise of 5 % of the neck-to-ears distance: p2m's rule (``Neck + 1.68 (Ears - Neck) +
   0.28 (Nose - Ears)``, fitted on `p2m synth` CMU *train* poses) against the baseline "Head = ear midpoint".
2. With ``--checkpoint``: the fill of missing joints. Knees and ankles are hidden; the filled positions are
   compared with the truth (px, and % of the torso): p2m's iterative fill (rest-pose template, then
   ``FILL_ITERATIONS`` passes through the network) against the baseline "template only" (the rest pose placed on
   the known joints, front or back view, no network pass).

People come from `p2m synth` with the CMU *eval* poses (held out from the rule's fit). Prints JSON lines and markdown
rows with the measured figure, the baseline and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from rows import emit  # noqa: E402


def people(num: int, topology: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 17, 3) COCO keypoints and (N, 17, 3) H36M joints of ``num`` synthetic people (CMU eval poses)."""
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    from p2m.annotate.synth import SynthOptions, synth

    with tempfile.TemporaryDirectory() as tmp:
        synth(
            Path(tmp) / "ds",
            SynthOptions(num=num, poses="cmu-eval", subjects=1, topology=topology, seed=21),
            progress=False,
        )
        data = json.loads(next((Path(tmp) / "ds" / "annotations").glob("*_data.json")).read_text())
    anns = data["annotations"]
    return (
        np.array([np.reshape(a["keypoints"], (17, 3)) for a in anns], dtype=np.float64),
        np.array([a["joints_2d_h36m"] for a in anns], dtype=np.float64),
    )


def head_rows(coco: np.ndarray, h36m: np.ndarray, noise: float, rng: np.random.Generator) -> dict:
    from p2m.infer.pose_input import head_top_from_coco

    kp = coco.copy()
    neck, ears = (kp[:, 5, :2] + kp[:, 6, :2]) / 2, (kp[:, 3, :2] + kp[:, 4, :2]) / 2
    size = np.linalg.norm(ears - neck, axis=1)
    kp[:, :, :2] += rng.standard_normal(kp[:, :, :2].shape) * (noise * size)[:, None, None]
    torso = np.linalg.norm(h36m[:, 8, :2] - h36m[:, 0, :2], axis=1)
    ours = np.array([head_top_from_coco(k)[0] for k in kp])
    base = (kp[:, 3, :2] + kp[:, 4, :2]) / 2
    err = 100 * np.linalg.norm(ours - h36m[:, 10, :2], axis=1) / torso
    err_b = 100 * np.linalg.norm(base - h36m[:, 10, :2], axis=1) / torso
    return {
        "bench": "infer_head",
        "people": len(kp),
        "noise": noise,
        "p2m_rule_pct_torso": round(float(err.mean()), 2),
        "baseline_ear_midpoint_pct_torso": round(float(err_b.mean()), 2),
        "ratio_baseline_over_p2m": round(float(err_b.mean() / err.mean()), 2),
    }


def fill_rows(checkpoint: str, h36m: np.ndarray, limit: int) -> dict:
    from p2m.infer import predictor as I

    pred = I.load_predictor(checkpoint)
    hidden = np.array([2, 3, 5, 6])  # knees and ankles
    known = np.ones(17, bool)
    known[hidden] = False
    errs, errs_b = [], []
    for j in h36m[:limit]:
        xy = j[:, :2].copy()
        xy[hidden] = np.nan
        out = I.predict(pred, xy, known)
        base = I.template_fill(pred.template, xy, known)
        torso = np.linalg.norm(j[8, :2] - j[0, :2])
        errs.append(np.linalg.norm(out.joints2d[hidden] - j[hidden, :2], axis=1).mean() / torso)
        errs_b.append(np.linalg.norm(base[hidden] - j[hidden, :2], axis=1).mean() / torso)
    e, b = 100 * float(np.mean(errs)), 100 * float(np.mean(errs_b))
    return {
        "bench": "infer_fill",
        "checkpoint": checkpoint,
        "people": len(errs),
        "hidden": "knees+ankles",
        "p2m_fill_pct_torso": round(e, 2),
        "baseline_template_pct_torso": round(b, 2),
        "ratio_baseline_over_p2m": round(b / e, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=2000, help="synthetic people")
    ap.add_argument("--topology", default="notoes_collapse10pc")
    ap.add_argument("--checkpoint", default=None, help="a run folder or checkpoint for the fill benchmark")
    ap.add_argument("--fill-people", type=int, default=100)
    args = ap.parse_args()
    coco, h36m = people(args.num, args.topology)
    rng = np.random.default_rng(0)
    rows = [head_rows(coco, h36m, 0.0, rng), head_rows(coco, h36m, 0.05, rng)]
    if args.checkpoint:
        rows.append(fill_rows(args.checkpoint, h36m, args.fill_people))
    for r in rows:
        print(json.dumps(r))
        if r["bench"] == "infer_head":
            emit(
                "infer",
                f"Head from COCO keypoints, error in % of torso ({r['people']} people, noise {r['noise']:.0%})",
                r["p2m_rule_pct_torso"],
                "%",
                "ear midpoint",
                r["baseline_ear_midpoint_pct_torso"],
                higher_is_better=False,
            )
        else:
            emit(
                "infer",
                f"hidden knees+ankles filled, error in % of torso ({r['people']} people)",
                r["p2m_fill_pct_torso"],
                "%",
                "template (rest pose) only",
                r["baseline_template_pct_torso"],
                higher_is_better=False,
                note="depends on the checkpoint given with --checkpoint",
            )
    print("| benchmark | p2m | baseline | baseline / p2m |\n|---|---|---|---|")
    for r in rows:
        if r["bench"] == "infer_head":
            print(
                f"| COCO Head rule, {r['people']} people, noise {r['noise']:.0%} | {r['p2m_rule_pct_torso']} % torso "
                f"| ear midpoint {r['baseline_ear_midpoint_pct_torso']} % | {r['ratio_baseline_over_p2m']} |"
            )
        else:
            print(
                f"| fill of hidden knees+ankles, {r['people']} people | {r['p2m_fill_pct_torso']} % torso "
                f"| template only {r['baseline_template_pct_torso']} % | {r['ratio_baseline_over_p2m']} |"
            )


if __name__ == "__main__":
    main()
