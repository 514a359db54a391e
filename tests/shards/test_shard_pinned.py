"""Shard bytes pinned by sha256: a fixed small dataset must give the same shards whatever makes the writer fast.

The dataset is written here as plain JSON from arithmetic (no RNG, no p2m writer), and covers what the writer
decides per person: cameras and 3D joints or none, SMPL (legacy ``smpl_param`` file, no ``model`` field), anny
with a rig, an unknown model with a nested pose, frames without body parameters, two people per image, crowd /
rejected / invalid-fit people, bad or missing 2D joints and bboxes, non-finite joints, a subject in no split.
The hashes were taken from the writer before it was made columnar (commit 3d2f6e5); a change of the sample
format must update them on purpose (and bump the schema version).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2m.shards import build_shards, load_index

ROT = {  # exact in decimal, so the JSON text holds these very numbers
    1: [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],
    2: [[0.6, 0.8, 0.0], [0.0, 0.0, -1.0], [-0.8, 0.6, 0.0]],
}


def _num(i: int, j: int, scale: float = 1.0) -> float:
    return round(((i * 7919 + j * 104729) % 100_003) / 97.0 * scale, 6)


def _camera(cam: int) -> dict:
    return {
        "R": ROT[cam],
        "t": [10.0 * cam, -20.0, 4500.0 + cam],
        "f": [1145.5, 1144.25 + cam],
        "c": [512.0, 515.5 - cam],
    }


def _write(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj))


def _subject(
    root: Path,
    name: str,
    subject: int,
    frames: int,
    *,
    cams: bool,
    body: str | None,
    people: int = 1,
    quirks: bool = False,
) -> None:
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, anns, j3d, params = [], [], {}, {}
    base = 1000 * subject
    for f in range(frames):
        world = [[_num(f * 17 + j, k, 9.0) - 400.0 for k in range(3)] for j in range(17)]
        j3d.setdefault("2", {}).setdefault("1", {})[str(f)] = world
        if body == "smpl" and f != 1:  # frame 1 has no body parameters
            params.setdefault("2", {}).setdefault("1", {})[str(f)] = {
                "pose": [_num(f, j, 0.001) for j in range(72)],
                "shape": [_num(j, f, 0.01) for j in range(10)],
                "trans": [0.1 * f, 0.0, 0.9],
            }
        elif body == "anny":
            params.setdefault("2", {}).setdefault("1", {})[str(f)] = {
                "model": "anny",
                "rig": "cmu_mb",
                "pose": [_num(f, j, 0.001) for j in range(93)],
                "shape": [0.5, 0.25, 0.125, 0.5, 0.75, 0.5],
                "trans": [0.0, 0.1 * f, 0.9],
            }
        elif body == "other":  # unknown model: sizes unchecked, a nested pose keeps its shape
            params.setdefault("2", {}).setdefault("1", {})[str(f)] = {
                "model": "mymodel",
                "pose": [[_num(f, 3 * j + k, 0.001) for k in range(3)] for j in range(5)],
                "shape": [1.5],
                "trans": [0.0, 0.0, 1.0],
            }
        for cam in (1, 2):
            image_id = base + 10 * f + cam
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{name}/S{subject}/c{cam}_{f:04d}.jpg",
                    "width": 1000,
                    "height": 1002,
                    "action_idx": 2,
                    "subaction_idx": 1,
                    "cam_idx": cam,
                    "frame_idx": f,
                    "subject": subject,
                }
            )
            for p in range(people):
                n = len(anns)
                j2d = [[_num(n, j, 5.0), _num(j, n, 5.0), float((j + p) % 3)] for j in range(17)]
                ann = {
                    "id": base + n + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [_num(n, 1), _num(n, 2), 40.5 + n, 80.25 + p],
                    "area": 1.0,
                    "iscrowd": 0,
                    "keypoints": [v for row in j2d for v in row],
                    "num_keypoints": 17,
                    "joints_2d_h36m": j2d,
                }
                if quirks:
                    kind = n % 9
                    if kind == 1:
                        ann["iscrowd"] = 1
                    elif kind == 2:
                        ann["review"] = {"status": "rejected"}
                    elif kind == 3:
                        ann["fit_valid"] = False
                    elif kind == 4:
                        del ann["joints_2d_h36m"]
                    elif kind == 5:
                        ann["joints_2d_h36m"] = j2d[:16]
                    elif kind == 6:
                        ann["bbox"] = [1.0, 2.0, 3.0]
                    elif kind == 7:
                        ann["joints_2d_h36m"] = [[1e39, 0.0, 2.0]] + j2d[1:]  # beyond float32
                    elif kind == 8:
                        ann["review"] = {"status": "accepted"}
                        ann["fit_valid"] = True
                anns.append(ann)
    _write(
        ann_dir / f"{name}_subject{subject}_data.json",
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}], "licenses": []},
    )
    if cams:
        _write(ann_dir / f"{name}_subject{subject}_camera.json", {str(c): _camera(c) for c in (1, 2)})
        _write(ann_dir / f"{name}_subject{subject}_joint_3d.json", j3d)
    if body == "smpl":
        _write(ann_dir / f"{name}_subject{subject}_smpl_param.json", params)
    elif body:
        _write(ann_dir / f"{name}_subject{subject}_body_param.json", params)


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("pinned")
    a, b = base / "lab.v1", base / "web"
    _subject(a, "lab", 1, 6, cams=True, body="smpl")
    _subject(a, "lab", 2, 5, cams=True, body="anny", quirks=True)
    _subject(a, "lab", 3, 4, cams=True, body="other")
    _subject(a, "lab", 4, 3, cams=True, body=None)  # in no split
    _subject(b, "web", 1, 4, cams=False, body=None, people=2, quirks=True)
    _subject(b, "web", 3, 3, cams=True, body="anny", people=2)
    return [a, b]


def _shards(out: Path) -> dict[str, list[tuple[str, int, str]]]:
    index = load_index(out)
    return {
        s: [(sh["name"], sh["samples"], sh["sha256"][:16]) for sh in rec["shards"]]
        for s, rec in index["splits"].items()
    }


SPLITS = {"train": "S1,S2", "test": "S3"}
POSE_ONLY = {
    "train": [("train-000000.tar", 7, "b9f5f752bd367e0e"), ("train-000001.tar", 7, "b9161bf67de1ebcf"),
              ("train-000002.tar", 4, "6fae1de3750149cc")],
    "test": [("test-000000.tar", 7, "d5a1e75302f12a4d"), ("test-000001.tar", 7, "1fe659c10218bc48"),
             ("test-000002.tar", 6, "f5dc7362c1a0ce06")],
}  # fmt: skip
STATS = {"samples/skipped/bad_bbox": 3, "samples/skipped/bad_joints_2d": 5, "samples/skipped/fit_invalid": 3,
         "samples/skipped/iscrowd": 3, "samples/skipped/no_joints_2d": 3, "samples/skipped/no_split": 6,
         "samples/skipped/rejected": 3, "samples/written": 38}  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
def test_pose_only_shards_keep_their_sha256(pinned, tmp_path, workers):
    stats = build_shards(pinned, tmp_path / "out", splits=SPLITS, maxcount=7, workers=workers)
    assert _shards(tmp_path / "out") == POSE_ONLY
    assert {k: v for k, v in stats.items() if k.startswith("samples/")} == STATS


def test_meta_shards_keep_their_sha256(pinned, tmp_path):
    build_shards(pinned, tmp_path / "out", splits={"train": "*"}, maxcount=1000, with_meta=True)
    assert _shards(tmp_path / "out") == {"train": [("train-000000.tar", 44, "2cadd2ca30766052")]}
