"""Benchmark `p2m annotate detect` on group photos: people found, keypoint accuracy and time per image.

The four COCO val2017 photos of ../shared/external-fixtures/mmpose-coco hold 12 people with keypoints (1, 2, 4 and 5
per photo). A ground-truth person is *found* when a detected person of the same photo has a box IoU >= 0.5 with
it (greedy, best overlap first); PCK@0.1 counts the keypoints labelled in both within 0.1 of the larger side of the
ground-truth box. Baseline in the same run: detect with ``max_people=1`` (MediaPipe's legacy single-person Pose,
what detect did before it searched every person).

    python benchmarks/bench_detect.py [--fixtures DIR] [--tiles 2]

Prints one JSON line per setting, then markdown rows.
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


def score(out: Path, gt: dict) -> dict:
    """People found (IoU >= 0.5), false people, PCK@0.1 of the found ones."""
    from p2m.annotate.multi_pose import box_overlap
    from p2m.layout import subject_file

    data = json.loads(subject_file(out, "photos", 1, "data").read_text())
    file_of = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
    found = total = 0
    pck: list[float] = []
    for img in gt["images"]:
        preds = [a for a in data["annotations"] if file_of[a["image_id"]] == img["file_name"]]
        truth = [a for a in gt["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] > 0]
        total += len(truth)
        pairs = sorted(
            (
                (box_overlap(np.array(p["bbox"]), np.array(t["bbox"]))[0], i, j)
                for i, p in enumerate(preds)
                for j, t in enumerate(truth)
            ),
            reverse=True,
        )
        used_p, used_t = set(), set()
        for iou, i, j in pairs:
            if iou < 0.5 or i in used_p or j in used_t:
                continue
            used_p.add(i)
            used_t.add(j)
            kp = np.asarray(preds[i]["keypoints"], float).reshape(17, 3)
            t = np.asarray(truth[j]["keypoints"], float).reshape(17, 3)
            both = (kp[:, 2] > 0) & (t[:, 2] > 0)
            size = max(truth[j]["bbox"][2:])
            pck.append(float((np.linalg.norm(kp[both, :2] - t[both, :2], axis=1) < 0.1 * size).mean()))
        found += len(used_t)
    return {
        "found": found,
        "total": total,
        "written": len(data["annotations"]),
        "false": len(data["annotations"]) - found,
        "pck01": round(float(np.mean(pck)), 3) if pck else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--fixtures", type=Path, default=REPO.parent / "shared" / "external-fixtures" / "mmpose-coco"
    )
    ap.add_argument("--tiles", type=int, default=2)
    args = ap.parse_args()
    from p2m.annotate.detect import detect

    gt = json.loads((args.fixtures / "test_coco.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="p2m-bench-detect-"))
    src = work / "src"
    src.mkdir()
    for img in gt["images"]:
        shutil.copy(args.fixtures / img["file_name"], src / img["file_name"])
    res = {}
    for label, kwargs in (
        ("single", {"max_people": 1}),
        ("every person", {"max_people": 20, "grid": args.tiles}),
    ):
        detect(src, work / "warm", progress=False, **kwargs)  # model load and bundle build outside the timing
        t0 = time.perf_counter()
        detect(src, work / label.replace(" ", "_"), progress=False, **kwargs)
        seconds = time.perf_counter() - t0
        res[label] = {
            **score(work / label.replace(" ", "_"), gt),
            "s_per_image": round(seconds / len(gt["images"]), 3),
        }
        shutil.rmtree(work / "warm")
        print(json.dumps({"setting": label, **res[label]}), flush=True)
    one, every = res["single"], res["every person"]
    note = f"4 COCO val2017 photos, {every['total']} people; tiles {args.tiles}"
    emit(
        "detect",
        "people found at box IoU >= 0.5 (COCO group photos)",
        every["found"],
        "people",
        "max_people=1 (legacy single-person Pose)",
        one["found"],
        note=f"{note}; false people: {every['false']}",
    )
    emit("detect", "PCK@0.1 of the people found", every["pck01"], "", "max_people=1", one["pck01"], note=note)
    emit(
        "detect",
        "seconds per photo (CPU)",
        every["s_per_image"],
        "s",
        "max_people=1",
        one["s_per_image"],
        higher_is_better=False,
        note=note,
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
