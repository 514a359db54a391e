"""Benchmark `p2m annotate fit`: PA-MPJPE of the fitted 3D joints on synthetic people whose 3D is known.

Three measurements, each on fresh `p2m synth` people (CMU eval poses, random cameras, 512 px images):

1. **GT 2D**: fit from the exact projected COCO keypoints. Baseline in the same run: the rest A-pose of the body
   model (no fitting at all) against the same truth, so the ratio says how much of the pose the fit recovers.
2. **MediaPipe 2D, default focal**: `p2m annotate detect` on the rendered images (each a single photo with the
   default focal, the image diagonal), then fit. Baseline: the GT-2D fit of the same people.
3. **MediaPipe 2D, true camera**: the same detections with the renderer's cameras written into camera.json.

PA-MPJPE is Pose2Mesh's protocol: similarity Procrustes on the 14 joints of ``H36M_EVAL_14``, in mm.

    python benchmarks/bench_fit.py --num 64 --images 32 [--iters 100] [--device auto] [--out DIR]

Prints one JSON line per measurement, then markdown rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))


def _frames(root: Path, name: str, kind: str) -> dict[tuple[str, str, str], object]:
    from p2m.layout import subject_file

    path = subject_file(root, name, 1, kind)
    if not path.exists():
        return {}
    nested = json.loads(path.read_text())
    return {
        (a, s, f): v for a, subs in nested.items() for s, frames in subs.items() for f, v in frames.items()
    }


def _data(root: Path, name: str) -> dict:
    from p2m.layout import subject_file

    return json.loads(subject_file(root, name, 1, "data").read_text())


def _key(img: dict) -> tuple[str, str, str]:
    return str(img["action_idx"]), str(img["subaction_idx"]), str(img["frame_idx"])


def _synth(out: Path, num: int, images: bool, seed: int, poses: str) -> dict:
    """Make a synthetic dataset; return its truth by file name: {file_name: (joints (17, 3) world mm, camera)}."""
    from p2m.annotate.synth import SynthOptions, synth

    synth(out, SynthOptions(num=num, poses=poses, cameras="random", images=images, seed=seed), progress=False)
    j3d = _frames(out, "synth", "joint_3d")
    cams = json.loads((out / "annotations" / "synth_subject1_camera.json").read_text())
    data = _data(out, "synth")
    kps = {a["image_id"]: a["keypoints"] for a in data["annotations"]}
    return {
        img["file_name"]: (np.asarray(j3d[_key(img)]), cams[str(img["cam_idx"])], kps[img["id"]])
        for img in data["images"]
    }


def _strip_3d(root: Path) -> None:
    for kind in ("joint_3d", "body_param"):
        (root / "annotations" / f"synth_subject1_{kind}.json").unlink()


def _pa(root: Path, name: str, truth: dict) -> tuple[np.ndarray, list[str]]:
    """Per-person PA-MPJPE (mm) of the valid fits of ``root`` against ``truth``; and the file names scored."""
    from p2m.joints import H36M_EVAL_14
    from p2m.pose2mesh.metrics import pa_mpjpe

    j3d = _frames(root, name, "joint_3d")
    pred, gt, names = [], [], []
    for img in _data(root, name)["images"]:
        if _key(img) in j3d and img["file_name"] in truth:
            pred.append(j3d[_key(img)])
            gt.append(truth[img["file_name"]][0])
            names.append(img["file_name"])
    if not pred:
        return np.zeros(0), []
    return pa_mpjpe(np.array(pred), np.array(gt), joints=H36M_EVAL_14, reduce=False), names


def _rest_pose_pa(truth: dict) -> float:
    """PA-MPJPE of the body model's rest A-pose (mean shape) against every true pose: the no-fit baseline."""
    import torch

    from p2m.body import create
    from p2m.joints import H36M_EVAL_14
    from p2m.pose2mesh.metrics import pa_mpjpe

    body = create("anny", topology="full")
    with torch.no_grad():
        rest = body(torch.zeros(1, body.num_bones, 3)).joints[0].double().numpy() * 1000.0
    gt = np.array([t[0] for t in truth.values()])
    return float(pa_mpjpe(np.broadcast_to(rest, gt.shape), gt, joints=H36M_EVAL_14))


def _row(what: str, value: float, baseline_name: str, baseline: float, extra: dict) -> dict:
    return {
        "bench": "fit",
        "what": what,
        "pa_mpjpe_mm": round(value, 1),
        "baseline": baseline_name,
        "baseline_mm": round(baseline, 1),
        "ratio": round(value / baseline, 3) if baseline else None,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=64, help="people fitted from GT 2D")
    parser.add_argument(
        "--images", type=int, default=32, help="rendered people for the MediaPipe runs (0: skip)"
    )
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--poses", default="cmu-eval", help="synth --poses (cmu-eval: subjects the prior never saw)"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the datasets here (default: a temp folder)"
    )
    args = parser.parse_args(argv)

    from p2m.annotate import fit_bodies

    work = args.out or Path(tempfile.mkdtemp(prefix="bench_fit_"))
    rows = []
    try:
        # 1. GT 2D
        gt_root = work / "gt2d"
        shutil.rmtree(gt_root, ignore_errors=True)
        truth = _synth(gt_root, args.num, False, args.seed, args.poses)
        _strip_3d(gt_root)
        t0 = time.perf_counter()
        stats = fit_bodies(gt_root, device=args.device, iters=args.iters, batch=args.batch, progress=False)
        seconds = time.perf_counter() - t0
        pa, _ = _pa(gt_root, "synth", truth)
        rest = _rest_pose_pa(truth)
        rows.append(
            _row(
                "GT 2D",
                float(pa.mean()),
                "rest A-pose (no fit)",
                rest,
                {
                    "people": len(pa),
                    "valid": stats.get("annotations/valid", 0),
                    "median_mm": round(float(np.median(pa)), 1),
                    "fit_error_px": stats.get("fit_error_px/mean"),
                    "seconds": round(seconds, 1),
                    "people_per_s": round(len(pa) / seconds, 2),
                    "device": stats["device"],
                    "iters": args.iters,
                },
            )
        )
        print(json.dumps(rows[-1]), flush=True)

        # 2./3. MediaPipe 2D on renders
        if args.images > 0:
            from p2m.annotate.detect import detect

            img_root, det_root = work / "renders", work / "detected"
            for p in (img_root, det_root):
                shutil.rmtree(p, ignore_errors=True)
            truth_img = _synth(img_root, args.images, True, args.seed + 1, args.poses)
            detect(img_root / "images", det_root, name="photos", progress=False)
            det = _data(det_root, "photos")
            images = {img["id"]: img for img in det["images"]}
            px = []
            for ann in det["annotations"]:
                kp = np.asarray(ann["keypoints"], dtype=float).reshape(17, 3)
                gt_kp = np.asarray(truth_img[images[ann["image_id"]]["file_name"]][2], dtype=float).reshape(
                    17, 3
                )
                seen = (kp[:, 2] > 0) & (gt_kp[:, 2] > 0)
                px.append(np.linalg.norm(kp[seen, :2] - gt_kp[seen, :2], axis=1).mean())
            # GT-2D fit of the same rendered people: the baseline of the MediaPipe rows
            ref_root = work / "renders_gt2d"
            shutil.rmtree(ref_root, ignore_errors=True)
            shutil.copytree(img_root / "annotations", ref_root / "annotations")
            _strip_3d(ref_root)
            fit_bodies(ref_root, device=args.device, iters=args.iters, batch=args.batch, progress=False)
            ref_pa, _ = _pa(ref_root, "synth", truth_img)
            for variant in ("default focal", "true camera"):
                root = work / f"detected_{variant.split()[0]}"
                shutil.rmtree(root, ignore_errors=True)
                shutil.copytree(det_root / "annotations", root / "annotations")
                if variant == "true camera":
                    cams = {str(img["cam_idx"]): truth_img[img["file_name"]][1] for img in det["images"]}
                    (root / "annotations" / "photos_subject1_camera.json").write_text(json.dumps(cams))
                t0 = time.perf_counter()
                stats = fit_bodies(
                    root, device=args.device, iters=args.iters, batch=args.batch, progress=False
                )
                seconds = time.perf_counter() - t0
                pa, names = _pa(root, "photos", truth_img)
                ref = float(np.mean(ref_pa)) if len(ref_pa) else float("nan")
                rows.append(
                    _row(
                        f"MediaPipe 2D, {variant}",
                        float(pa.mean()) if len(pa) else float("nan"),
                        "GT-2D fit of the same renders",
                        ref,
                        {
                            "people": len(pa),
                            "detected": len(det["annotations"]),
                            "rendered": args.images,
                            "valid": stats.get("annotations/valid", 0),
                            "invalid": stats.get("annotations/invalid", 0),
                            "median_mm": round(float(np.median(pa)), 1) if len(pa) else None,
                            "detect_error_px": round(float(np.mean(px)), 2) if px else None,
                            "fit_error_px": stats.get("fit_error_px/mean"),
                            "seconds": round(seconds, 1),
                            "device": stats["device"],
                            "iters": args.iters,
                        },
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| fit from | people | PA-MPJPE (mm) | baseline | baseline (mm) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['what']} | {r['people']} | {r['pa_mpjpe_mm']} | {r['baseline']} | {r['baseline_mm']} | {r['ratio']} |"
        )
        emit(
            "fit",
            f"PA-MPJPE of fitted joints, from {r['what']} ({r['people']} people)",
            r["pa_mpjpe_mm"],
            "mm",
            r["baseline"],
            r["baseline_mm"],
            higher_is_better=False,
            note="target from GT 2D: under 60 mm",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
