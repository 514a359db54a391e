"""Measure how well retargeted CMU poses reproduce the mocap joints (per joint, per subject, over the clips)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cmu-mocap"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CMU BVH folder with index.csv")
    parser.add_argument("--every", type=int, default=4, help="keep every N-th frame (after dropping frame 0)")
    parser.add_argument(
        "--topology", default="notoes_collapse10pc", help="anny mesh for the regressed joints"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N clips (0 = all)")
    parser.add_argument(
        "--definition",
        choices=("notes", "matched"),
        default="notes",
        help="mocap joint definitions (see cmu_h36m_joints)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from tqdm import tqdm

    from p2m.body import create
    from p2m.body.mocap_eval import measure_clip
    from p2m.body.poses import read_index
    from p2m.joints import H36M_JOINTS

    body = create("anny", topology=args.topology)
    clips = read_index(args.data)
    if args.limit:
        clips = clips[: args.limit]
    per_joint: list[np.ndarray] = []
    subjects: dict[int, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for clip in tqdm(clips, desc="clips", disable=None, file=sys.stderr):
            err, _ = measure_clip(
                args.data / clip["file"], body, every=args.every, definition=args.definition
            )
            per_joint.append(err)
            subjects.setdefault(int(clip["subject"]), []).append(err)
    errs = np.concatenate(per_joint) * 1000.0
    result = {
        "definition": args.definition,
        "every": args.every,
        "frames": int(errs.shape[0]),
        "clips": len(clips),
        "mpjpe_mm_17": float(errs.mean()),
        "mpjpe_mm_eval14": float(errs[:, [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]].mean()),
        "per_joint_mm": {name: round(float(v), 1) for name, v in zip(H36M_JOINTS, errs.mean(0))},
        "per_subject_mm": {
            s: round(float(np.concatenate(v).mean() * 1000), 1) for s, v in sorted(subjects.items())
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        from p2m.io import write_json

        write_json(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
