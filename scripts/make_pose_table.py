"""Make the shipped CMU pose tables: retarget the CMU BVH clips onto anny and write p2m/data/cmu_poses_{split}.npz.

Usage: ``python scripts/make_pose_table.py [--data ../shared/data/cmu-mocap] [--every 4] [--out p2m/data]``.
The tables hold float16 axis-angle poses (anny ``cmu_mb`` rig, "local-ref"), the clip, subject and frame of
every pose, the clip descriptions and CMU's credit line. Same input, same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cmu-mocap"
DEFAULT_OUT = ROOT / "p2m" / "data"
logger = logging.getLogger("make_pose_table")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (deflate) with fixed timestamps, so that the same arrays always give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def build_split(data: Path, rows: list[dict[str, str]], every: int) -> dict[str, np.ndarray]:
    """Retarget the clips of one split and gather the table's arrays."""
    from tqdm import tqdm

    from p2m.body.bvh import read_bvh
    from p2m.body.poses import CMU_CREDIT, TABLE_FORMAT, has_tpose_frame
    from p2m.body.retarget import anny_rest, retarget

    rest = anny_rest()
    poses, clips, frames, names, subjects, descriptions = [], [], [], [], [], []
    for row in tqdm(rows, desc="retarget", unit="clip", disable=None, file=sys.stderr):
        motion = read_bvh(data / row["file"])
        start = 1 if has_tpose_frame(motion.values) else 0
        rt = retarget(motion, slice(start, None, every), rest=rest)
        clips.append(np.full(len(rt.frames), len(names), np.int16))
        frames.append(rt.frames.astype(np.int32))
        poses.append(rt.pose)
        names.append(row["file"].removesuffix(".gz").removesuffix(".bvh"))
        subjects.append(int(row["subject"]))
        descriptions.append(row.get("description", ""))
    pose = np.concatenate(poses)
    fps = 1.0 / motion.frame_time / every
    source = {
        "data": "CMU Graphics Lab Motion Capture Database, cgspeed MotionBuilder-friendly BVH (subjects 1-9)",
        "pose": "axis-angle radians per bone of anny's cmu_mb rig (bone_names), anny 'local-ref' parameterisation; "
        "no translation; root = global orientation as captured (anny frame: +X left, -Y forward, +Z up)",
        "retarget": "p2m.body.retarget.retarget (directions matched per segment, elbow/knee hinges aligned, rigid hands)",
        "frames": f"every {every}th BVH frame from 120 fps ({fps:g} fps), cgspeed's T-pose frame 0 dropped; "
        "frame = 0-based BVH frame index",
    }
    return {
        "format": np.array(TABLE_FORMAT),
        "pose": pose.astype(np.float16),
        "bone_names": np.array(rest.names),
        "clip": np.concatenate(clips),
        "frame": np.concatenate(frames),
        "clip_names": np.array(names),
        "clip_subject": np.array(subjects, dtype=np.int16),
        "clip_description": np.array(descriptions),
        "credit": np.array(CMU_CREDIT),
        "source": np.array(json.dumps(source, sort_keys=True)),
        "fps": np.array(fps, dtype=np.float32),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CMU BVH folder with index.csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the .npz tables go")
    parser.add_argument("--every", type=int, default=4, help="keep every N-th frame (4: 120 -> 30 fps)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from p2m.body.poses import TABLE_SPLITS, read_index
    from p2m.io import write_bytes

    rows = read_index(args.data)
    for split in TABLE_SPLITS:
        t0 = time.perf_counter()
        chosen = [r for r in rows if r.get("split") == split]
        if not chosen:
            logger.error("%s: no clip in split %r", args.data / "index.csv", split)
            return 1
        arrays = build_split(args.data, chosen, args.every)
        path = args.out / f"cmu_poses_{split}.npz"
        data = npz_bytes(arrays)
        write_bytes(path, data)
        logger.info(
            "%s: %d poses from %d clips, %.2f MB, %.1f s",
            path,
            len(arrays["pose"]),
            len(chosen),
            len(data) / 1e6,
            time.perf_counter() - t0,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
