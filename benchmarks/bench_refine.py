"""Rigid hands and feet (issue 9, part 1): MPVPE over hands, feet and the whole body before and after refinement.

Held-out synthetic people: poses of the CMU evaluation table (``cmu-eval``, subjects never trained on), random
adult shapes (:func:`p2m.annotate.synth.sample_shapes`) and random cameras around them
(:func:`p2m.annotate.synth.random_camera`); ground-truth meshes come from the body model, root-relative
(regressed pelvis) in the camera frame, mm, like Pose2Mesh's targets. Two kinds of input are refined:

* ``blurred-gt``: a controlled corruption that mimics graph-CNN blur: the ground truth's hands and feet
  Laplacian-smoothed (weighted by their skinning membership, over ``--blur-mm``: 8 iterations on the
  1,229-vertex mesh, 118 on ``notoes``, 158 on ``full``: the same physical blur) plus Gaussian noise on every vertex
  (``--noise-mm``). The corrupted meshes stay close to the body model's space, which favours method (a).
* ``model``: meshes predicted by a trained Pose2Mesh (``--checkpoint``: a run folder or .pt) from the projected
  ground-truth 2D joints, centred on their regressed pelvis (as ``p2m infer`` does).

Methods: (a) ``fit`` fits the body model and blends its hands and feet in, ``fit-whole`` keeps the whole fitted
mesh; (b) ``paste`` places rigidly aligned template hands and feet. Regions: ``hands`` / ``feet`` are the
vertices with skinning membership >= 0.5 in the hand / foot bones; ``shape`` rows score them after a rigid
(Kabsch) alignment of each extremity to the truth, i.e. the hand's own shape without its placement. The baseline
is the input itself (``before``); ``ratio`` = after / before (below 1 = better).

    python benchmarks/bench_refine.py [--num 32] [--topology 1229] [--checkpoint RUN] [--out out/refine]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

REGIONS = ("hands", "feet", "hands+feet", "body", "hands (shape)", "feet (shape)")
METHODS = ("fit", "fit-whole", "paste")


def ground_truth(body, num: int, seed: int) -> dict[str, np.ndarray]:
    """Held-out people: camera-frame root-relative meshes (mm) and the 2D joints of their cameras."""
    from p2m.annotate.synth import h36m_cameras, sample_shapes
    from p2m.body.poses import load_pose_source

    rng = np.random.default_rng(seed)
    pose = load_pose_source("cmu-eval").sample(num, rng)
    shape = sample_shapes(num, rng)
    with torch.no_grad():
        out = body(torch.as_tensor(pose, dtype=torch.float32), torch.as_tensor(shape, dtype=torch.float32))
    verts, h36m = out.vertices.double().numpy() * 1000, out.joints.double().numpy() * 1000
    coco = out.keypoints.double().numpy() * 1000
    mesh = np.empty_like(verts)
    j2d_h36m, j2d_coco = np.empty((num, 17, 2)), np.empty((num, 17, 2))
    for i in range(num):
        centre = (h36m[i].max(axis=0) + h36m[i].min(axis=0)) / 2
        cam = h36m_cameras(rng, centre)[int(rng.integers(4))]
        mesh[i] = (verts[i] - h36m[i, :1]) @ cam.R.T
        j2d_h36m[i], j2d_coco[i] = cam.project(h36m[i]), cam.project(coco[i])
    return {"mesh": mesh, "j2d_h36m": j2d_h36m, "j2d_coco": j2d_coco}


def load_model(checkpoint: str):
    """(model in eval mode, its Config) from a run folder or checkpoint file."""
    from p2m.pose2mesh.checkpoint import load_model_state
    from p2m.pose2mesh.config import Config, from_dict
    from p2m.pose2mesh.model import load_model as build

    state, config, info = load_model_state(checkpoint)
    cfg = from_dict(Config, config)
    print(
        f"# model: {info['path']} (epoch {info.get('epoch')}, topology {cfg.model.body.topology})",
        file=sys.stderr,
    )
    return build({"config": config, "state_dict": state}).eval(), cfg


def predict(model, cfg, gt: dict[str, np.ndarray]) -> np.ndarray:
    """(N, V, 3) predicted meshes (mm, camera frame) centred on their regressed pelvis."""
    from p2m.pose2mesh.transforms import normalize_pose2d

    if cfg.model.joint_set == "h36m":
        j2d = gt["j2d_h36m"]
    else:  # coco19: COCO-17 + pelvis (mid-hips) + neck (mid-shoulders)
        c = gt["j2d_coco"]
        j2d = np.concatenate([c, (c[:, 11:12] + c[:, 12:13]) / 2, (c[:, 5:6] + c[:, 6:7]) / 2], axis=1)
    t = cfg.transform
    x = torch.from_numpy(normalize_pose2d(j2d, None, (t.crop_width, t.crop_height)))
    with torch.inference_mode():
        out = model(x)
    mesh = out.mesh.double()
    return (mesh - out.joints_from_mesh.double()[:, :1]).numpy()


def blurred(gt: np.ndarray, body, regions, blur_mm: float, noise_mm: float, seed: int) -> np.ndarray:
    from p2m.infer.refine import blur_extremities

    member = np.clip(sum(e.membership for e in regions.values()), 0.0, 1.0)
    smooth = blur_extremities(torch.from_numpy(gt), body.faces.numpy(), member, radius=blur_mm).numpy()
    return smooth + np.random.default_rng(seed + 1).normal(0.0, noise_mm, size=gt.shape)


def scores(pred: np.ndarray, gt: np.ndarray, regions) -> dict[str, float]:
    """Mean vertex error (mm) per region (see the module docstring)."""
    from p2m.infer.refine import kabsch

    err = np.linalg.norm(pred - gt, axis=-1)  # (N, V)
    hands = np.concatenate([regions[k].core for k in ("left_hand", "right_hand")])
    feet = np.concatenate([regions[k].core for k in ("left_foot", "right_foot")])
    out = {
        "hands": err[:, hands].mean(),
        "feet": err[:, feet].mean(),
        "hands+feet": err[:, np.concatenate([hands, feet])].mean(),
        "body": err.mean(),
    }
    for label, names in (
        ("hands (shape)", ("left_hand", "right_hand")),
        ("feet (shape)", ("left_foot", "right_foot")),
    ):
        errs = []
        for k in names:
            core = regions[k].core
            p, g = torch.from_numpy(pred[:, core]), torch.from_numpy(gt[:, core])
            rot, t = kabsch(p, g)
            aligned = torch.einsum("bij,bvj->bvi", rot, p) + t[:, None]
            errs.append((aligned - g).norm(dim=-1).numpy())
        out[label] = float(np.concatenate(errs, axis=1).mean())
    return {k: float(v) for k, v in out.items()}


def run_methods(inp: np.ndarray, body, args) -> dict[str, tuple[np.ndarray, float]]:
    """method -> (refined (N, V, 3) mm, seconds per sample)."""
    from p2m.infer.refine import ExtremityRefiner

    out = {}
    for name in args.methods:
        method, blend = (
            ("paste", "extremities")
            if name == "paste"
            else ("fit", "whole" if name == "fit-whole" else "extremities")
        )
        if name == "fit-whole" and "fit" in out:  # same fit, other blend: reuse it
            out[name] = (out["fit_fitted"][0], out["fit"][1])
            continue
        refiner = ExtremityRefiner(body, method, blend, steps=args.steps)
        start = time.perf_counter()
        parts, fitted = [], []
        for lo in range(0, len(inp), args.batch):
            res = refiner(torch.from_numpy(inp[lo : lo + args.batch]))
            parts.append(res.vertices.numpy())
            if res.fitted is not None:
                fitted.append(res.fitted.numpy())
        sec = (time.perf_counter() - start) / len(inp)
        out[name] = (np.concatenate(parts), sec)
        if fitted:
            out["fit_fitted"] = (np.concatenate(fitted), sec)
    out.pop("fit_fitted", None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=32, help="held-out people")
    ap.add_argument("--topology", default="notoes_collapse10pc", help="mesh (ignored with --checkpoint)")
    ap.add_argument(
        "--checkpoint", default=None, help="a trained run folder or .pt: also refine its predictions"
    )
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default: refine.FIT_STEPS)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--blur-mm", type=float, default=60.0, help="length scale of the corruption's smoothing (mm)"
    )
    ap.add_argument("--noise-mm", type=float, default=3.0, help="Gaussian noise of the corruption (mm)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/refine"), help="where the before/after pictures go")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if args.steps is None:
        from p2m.infer.refine import FIT_STEPS

        args.steps = FIT_STEPS

    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    from p2m.body import create
    from p2m.infer.refine import extremity_regions
    from p2m.infer.refine_view import refine_figure, write_png

    model = cfg = None
    topology = args.topology
    if args.checkpoint:
        model, cfg = load_model(args.checkpoint)
        topology = cfg.model.body.topology
    body = create("anny", topology=topology)
    regions = extremity_regions(body)
    gt = ground_truth(body, args.num, args.seed)
    inputs = {"blurred-gt": blurred(gt["mesh"], body, regions, args.blur_mm, args.noise_mm, args.seed)}
    if model is not None:
        inputs["model"] = predict(model, cfg, gt)

    header = (
        "| input | region | before | after (a) fit | after (a) whole fit | after (b) paste | ratio (a) | "
        "ratio (b) |"
    )
    lines = [header, "|" + "---|" * 8]
    for label, inp in inputs.items():
        before = scores(inp, gt["mesh"], regions)
        refined = run_methods(inp, body, args)
        after = {m: scores(v, gt["mesh"], regions) for m, (v, _) in refined.items()}
        for region in REGIONS:
            cells = [after[m][region] if m in after else float("nan") for m in METHODS]
            for m in ("fit", "paste"):
                if m in after:
                    emit(
                        "refine",
                        f"MPVPE {region}, {label} input, {body.topology}, after {m}",
                        round(after[m][region], 2),
                        "mm",
                        "the same meshes before refinement",
                        round(before[region], 2),
                        higher_is_better=False,
                    )
            lines.append(
                f"| {label} | {region} | {before[region]:.1f} | "
                + " | ".join(f"{c:.1f}" for c in cells)
                + f" | {cells[0] / before[region]:.2f} | {cells[2] / before[region]:.2f} |"
            )
        for m, (_, sec) in refined.items():
            print(
                json.dumps(
                    {
                        "bench": "refine",
                        "input": label,
                        "topology": body.topology,
                        "num": args.num,
                        "method": m,
                        "steps": args.steps if m != "paste" else 0,
                        "s_per_mesh": round(sec, 4),
                        "before_mm": {k: round(v, 2) for k, v in before.items()},
                        "after_mm": {k: round(v, 2) for k, v in after[m].items()},
                    }
                )
            )
        panels = {"before": inp[0]}
        panels.update({f"after {m}": refined[m][0][0] for m in ("fit", "paste") if m in refined})
        panels["truth"] = gt["mesh"][0]
        weight = np.clip(sum(e.weight for e in regions.values()), 0.0, 1.0)
        path = args.out / f"refine_{label}_{body.topology}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(path, refine_figure(panels, body.faces.numpy(), regions, weight=weight))
        print(f"# picture: {path}", file=sys.stderr)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
