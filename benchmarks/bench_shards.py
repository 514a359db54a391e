"""Benchmark `p2m shard`: write speed against `tar -cf`, bytes per sample, read speed against JSON loading.

Measures, on a synthetic Human3.6M-like dataset written through p2m.layout.DatasetWriter (5 subjects x
FRAMES frames x 4 cameras, SMPL-sized body parameters):

0. JSON: the subject files parsed by json (stdlib), orjson (when installed), msgspec and msgspec with the typed
   records ``p2m shard`` decodes.
1. write: ``build_shards`` end to end (dataset JSON -> shards) with 1 and 2 workers and with the columnar path
   off (the per-sample path it replaced), and its archiving stage alone (encode + tar + sha256 + fsync/rename of
   the same samples, the dataset already parsed), against ``tar -cf`` of the same members as files on disk (page
   cache warm), baseline measured in the same run.
2. size: bytes per pose-only sample; per sample with 256 px person crops and with whole frames (a smaller
   image dataset of 1000x1000 JPEG frames).
3. read: pose-only shards -> batched torch tensors through ``make_loader`` (0 and 2 workers), against the
   original Pose2Mesh loader's way: ``json.load`` of each subject's data/camera/joint_3d/param files, one dict
   of arrays per sample (world -> camera, projection, bbox), then stacking batches.

Prints one JSON line per measurement and a markdown table. Usage: ``python benchmarks/bench_shards.py
[--frames 2000] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import emit  # noqa: E402

from p2m.camera import Camera, bbox_from_joints
from p2m.layout import DatasetWriter

CAMS = {
    i + 1: Camera.look_at(
        [4500.0 * np.cos(a), 4500.0 * np.sin(a), 1500.0],
        [0.0, 0.0, 900.0],
        f=[1145.0, 1144.0],
        c=[512.0, 515.0],
    )
    for i, a in enumerate(np.linspace(0, 2 * np.pi, 4, endpoint=False))
}
BASE = np.array([
    [0, 0, 900], [-130, 0, 900], [-130, 0, 480], [-130, 0, 60], [130, 0, 900], [130, 0, 480], [130, 0, 60],
    [0, 0, 1150], [0, 0, 1400], [0, -80, 1500], [0, 0, 1650], [180, 0, 1400], [200, 0, 1120], [210, 0, 860],
    [-180, 0, 1400], [-200, 0, 1120], [-210, 0, 860],
], dtype=float)  # fmt: skip


def make_dataset(root: Path, subjects: tuple[int, ...], frames: int, images: bool = False) -> int:
    """Write a Human3.6M-like dataset; return the number of person samples."""
    rng = np.random.default_rng(0)
    jpeg = _gradient_jpeg() if images else None
    n = 0
    with DatasetWriter(root, "h36m", info={"version": "bench"}) as w:
        for s in subjects:
            for cam_idx, cam in CAMS.items():
                w.add_camera(s, cam_idx, cam)
            for f in range(frames):
                X = BASE + rng.normal(0, 40, BASE.shape)
                params = {
                    "model": "smpl",
                    "pose": rng.normal(0, 0.2, 72).tolist(),
                    "shape": rng.normal(0, 1, 10).tolist(),
                    "trans": rng.normal(0, 0.1, 3).tolist(),
                }
                for cam_idx, cam in CAMS.items():
                    fname = f"s_{s:02d}_act_02_subact_01_ca_{cam_idx:02d}/s_{s:02d}_ca_{cam_idx:02d}_{f + 1:06d}.jpg"
                    if jpeg is not None:
                        (root / "images" / fname).parent.mkdir(parents=True, exist_ok=True)
                        (root / "images" / fname).write_bytes(jpeg)
                    j2d = np.c_[cam.project(X), np.full(17, 2.0)]
                    kp = np.c_[j2d[:, :2], np.full(17, 2.0)]
                    ann = {"bbox": bbox_from_joints(j2d), "keypoints": kp, "joints_2d_h36m": j2d}
                    image = {
                        "file_name": fname,
                        "width": 1000,
                        "height": 1000,
                        "action_idx": 2,
                        "subaction_idx": 1,
                        "cam_idx": cam_idx,
                        "frame_idx": f,
                    }
                    w.add_frame(s, image, [ann], joints_3d_world=X, body_param=params)
                    n += 1
    return n


def _gradient_jpeg() -> bytes:
    import io

    from PIL import Image

    x = np.linspace(0, 255, 1000)[None, :].repeat(1000, 0)
    rgb = np.stack([x, x.T, np.full_like(x, 128)], -1).astype(np.uint8)
    bio = io.BytesIO()
    Image.fromarray(rgb).save(bio, format="JPEG", quality=90)
    return bio.getvalue()


def _best(fn, repeat: int = 3) -> tuple[float, float]:
    """Best wall time and best CPU time (this process + waited-for children) of ``repeat`` runs, in seconds.

    The machine is shared, so wall time depends on the neighbours; CPU time says what one core delivers.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c, t = time.process_time(), time.perf_counter()
        fn()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c + (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return min(walls), min(cpus)


def _row(
    bench: str, n: int, ours: tuple[float, float], base: tuple[float, float], baseline: str, **extra
) -> dict:
    return {
        "bench": bench,
        "samples": n,
        "samples_per_s": n / ours[0],
        "cpu_samples_per_s": n / ours[1],
        "baseline": baseline,
        "baseline_samples_per_s": n / base[0],
        "baseline_cpu_samples_per_s": n / base[1],
        "ratio": base[0] / ours[0],
        "cpu_ratio": base[1] / ours[1],
        **extra,
    }


def bench_write(ds: Path, work: Path, n: int) -> list[dict]:
    from p2m.layout import read_dataset
    from p2m.shards import build_shards, columns, load_index
    from p2m.shards.codec import iter_tar_samples
    from p2m.shards.encode import EncodeOptions, Job, SampleEncoder, camera_array, camera_json, sample_key
    from p2m.shards.write import _SplitWriter, aggregate_split

    def end_to_end(workers: int, columnar: bool = True) -> None:
        shutil.rmtree(work / "shards", ignore_errors=True)
        columns.ENABLED = columnar
        try:
            build_shards([ds], work / "shards", progress=False, workers=workers)
        finally:
            columns.ENABLED = True

    t_e2e2 = _best(lambda: end_to_end(2))
    t_e2e = _best(lambda: end_to_end(1))
    t_e2e_ref = _best(lambda: end_to_end(1, columnar=False))
    index = load_index(work / "shards")
    shards = index["splits"]["train"]["shards"]
    total_bytes = sum(sh["bytes"] for sh in shards)
    jobs = [  # the dataset, parsed (one person per image here)
        Job(
            "train",
            sample_key(
                s.dataset,
                s.subject,
                s.image["action_idx"],
                s.image["subaction_idx"],
                s.image["cam_idx"],
                s.image["frame_idx"],
                0,
            ),
            s.dataset,
            0,
            s,
            camera_json(s.camera),
            camera_array(s.camera),
        )
        for s in read_dataset(ds).iter_samples()
    ]
    opts = EncodeOptions()
    encoded = list(map(SampleEncoder(opts).encode, jobs))  # ... and its members, encoded

    def archive(source) -> None:
        out = work / "stage"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        records: list[dict] = []
        writer = _SplitWriter(out, "train", 0, 10_000, 1_000_000_000, lambda s, r: records.append(r))
        for enc in source():
            writer.add(enc)
        writer.commit()
        aggregate_split(records)

    t_archive = _best(lambda: archive(lambda: encoded))
    t_encode = _best(lambda: archive(lambda: map(SampleEncoder(opts).encode, jobs)))  # one encoder per run
    # baseline: the same members as files, archived by tar in shard order
    members = work / "members"
    shutil.rmtree(members, ignore_errors=True)
    members.mkdir()
    names: list[str] = []
    for sh in shards:
        with open(work / "shards" / sh["name"], "rb") as fh:
            for key, fields in iter_tar_samples(fh):
                for field, data in fields.items():
                    (members / f"{key}.{field}").write_bytes(data)
                    names.append(f"{key}.{field}")
    (work / "list.txt").write_text("\n".join(names) + "\n")

    def tar() -> None:
        subprocess.run(
            ["tar", "-cf", str(work / "baseline.tar"), "-C", str(members), "-T", str(work / "list.txt")],
            check=True,
        )
        fd = os.open(work / "baseline.tar", os.O_RDONLY)
        os.fsync(fd)  # our shards are fsynced before the rename; give tar the same durability
        os.close(fd)

    t_tar = _best(tar)
    base = "tar -cf of the same members (files, page cache), + fsync"
    mb = {"MB": round(total_bytes / 1e6, 1)}
    return [
        _row(
            "shard_write_archive (members -> tars + sha256 + fsync/rename + index)",
            n,
            t_archive,
            t_tar,
            base,
            **mb,
        ),
        _row("shard_write_encode_archive (parsed samples -> tars)", n, t_encode, t_tar, base, **mb),
        _row(
            "shard_write_end_to_end (dataset folder -> tars, incl. JSON parsing)", n, t_e2e, t_tar, base, **mb
        ),
        _row("shard_write_end_to_end --workers 2", n, t_e2e2, t_tar, base, **mb),
        _row(
            "shard_write_end_to_end, per-sample path (columnar off: the path before)",
            n,
            t_e2e_ref,
            t_tar,
            base,
            **mb,
        ),
    ]


def bench_json(ds: Path, n: int) -> list[dict]:
    """Parsing the subject files (data, joint_3d, body_param) with each parser, against the standard json module.

    msgspec typed is what ``p2m shard`` runs (records of the fields it needs; the garbage collector paused, as
    p2m does for every parser here).
    """
    import gc

    import msgspec

    from p2m.shards import columns

    files = sorted((ds / "annotations").glob("*_subject*_*.json"))
    raws = [(p.name.rsplit("_", 1)[-1], p.read_bytes()) for p in files if not p.name.endswith("_camera.json")]
    typed = {
        "data.json": columns._DECODER,
        "3d.json": columns._J3D_DECODER,
        "param.json": columns._BODY_DECODER,
    }
    parsers = {
        "json (stdlib)": lambda kind, raw: json.loads(raw.decode("utf-8")),
        "msgspec": lambda kind, raw: msgspec.json.decode(raw),
        "msgspec typed (p2m shard)": lambda kind, raw: typed[kind].decode(raw),
    }
    try:
        import orjson

        parsers["orjson"] = lambda kind, raw: orjson.loads(raw)
    except ImportError:
        pass

    def parse_all(parse) -> None:
        gc.disable()
        try:
            for kind, raw in raws:
                parse(kind, raw)
        finally:
            gc.enable()

    times = {name: _best(lambda parse=parse: parse_all(parse)) for name, parse in parsers.items()}
    base = times["json (stdlib)"]
    mb = {"MB": round(sum(len(r) for _, r in raws) / 1e6, 1)}
    return [
        _row(
            f"shard_json_parse {name} (subject files)", n, t, base, "json.loads (stdlib), GC paused too", **mb
        )
        for name, t in times.items()
        if name != "json (stdlib)"
    ]


def bench_sizes(work: Path, n_pose: int) -> list[dict]:
    from p2m.shards import build_shards, load_index

    img = work / "img_ds"
    shutil.rmtree(img, ignore_errors=True)
    n = make_dataset(img, (1,), 50, images=True)
    rows = []
    pose = load_index(work / "shards")["splits"]["train"]
    frame_bytes = np.mean([p.stat().st_size for p in (img / "images").rglob("*.jpg")])
    for label, kwargs in (
        ("crops_256", {"with_images": True, "crop": True}),
        ("frames", {"with_images": True}),
    ):
        out = work / f"shards_{label}"
        shutil.rmtree(out, ignore_errors=True)
        build_shards([img], out, progress=False, **kwargs)
        rec = load_index(out)["splits"]["train"]
        rows.append(
            {
                "bench": f"shard_bytes_per_sample_{label}",
                "bytes_per_sample": rec["bytes"] / rec["samples"],
                "samples": n,
                "baseline": "pose-only sample",
                "baseline_bytes": pose["bytes"] / pose["samples"],
                "ratio": rec["bytes"] / rec["samples"] / (pose["bytes"] / pose["samples"]),
            }
        )
    rows.insert(
        0,
        {
            "bench": "shard_bytes_per_sample_pose_only",
            "bytes_per_sample": pose["bytes"] / pose["samples"],
            "samples": n_pose,
            "baseline": "1000x1000 JPEG frame (q90 gradient)",
            "baseline_bytes": frame_bytes,
            "ratio": (pose["bytes"] / pose["samples"]) / frame_bytes,
        },
    )
    return rows


def pose2mesh_json_batches(ds: Path, batch_size: int) -> int:
    """The original loader's way: json.load per subject file, one dict of arrays per sample, then batches."""
    import torch

    datalist = []
    for data_path in sorted((ds / "annotations").glob("*_data.json")):
        stem = data_path.name.removesuffix("_data.json")
        with open(data_path) as fh:
            db = json.load(fh)
        with open(data_path.with_name(f"{stem}_camera.json")) as fh:
            cams = json.load(fh)
        with open(data_path.with_name(f"{stem}_joint_3d.json")) as fh:
            joints = json.load(fh)
        with open(data_path.with_name(f"{stem}_body_param.json")) as fh:
            params = json.load(fh)
        images = {img["id"]: img for img in db["images"]}
        for ann in db["annotations"]:
            img = images[ann["image_id"]]
            cam = cams[str(img["cam_idx"])]
            R, t = np.array(cam["R"], np.float32), np.array(cam["t"], np.float32)
            f, c = np.array(cam["f"], np.float32), np.array(cam["c"], np.float32)
            a, s, fr = str(img["action_idx"]), str(img["subaction_idx"]), str(img["frame_idx"])
            world = np.array(joints[a][s][fr], np.float32)
            joint_cam = world @ R.T + t
            joint_img = joint_cam[:, :2] / joint_cam[:, 2:] * f + c
            p = params[a][s][fr]
            datalist.append(
                {
                    "joint_img": np.c_[joint_img, np.ones(17, np.float32)],
                    "joint_cam": joint_cam,
                    "bbox": np.array(ann["bbox"], np.float32),
                    "pose": np.array(p["pose"], np.float32),
                    "shape": np.array(p["shape"], np.float32),
                    "trans": np.array(p["trans"], np.float32),
                }
            )
    count = 0
    for i in range(0, len(datalist) - batch_size + 1, batch_size):
        chunk = datalist[i : i + batch_size]
        batch = {k: torch.from_numpy(np.stack([d[k] for d in chunk])) for k in chunk[0]}
        count += len(batch["pose"])
    return count


def bench_read(ds: Path, work: Path, n: int, batch_size: int = 256) -> list[dict]:
    from p2m.shards import make_loader

    t_json = _best(lambda: pose2mesh_json_batches(ds, batch_size), repeat=2)
    rows = []
    for workers in (0, 2):
        loader = make_loader(
            work / "shards", "train", batch_size, num_workers=workers, shuffle_buffer=1000, seed=0
        )
        got = [0]

        def epoch(loader=loader, got=got) -> None:
            got[0] = sum(len(b["key"]) for b in loader)

        epoch()  # starts the (persistent) workers
        t = _best(epoch, repeat=3)
        if workers:  # the workers' CPU time is not this process's: report wall time only
            t = (t[0], float("nan"))
        rows.append(
            _row(
                f"shard_read_pose_only_{workers}_workers (batch {batch_size})",
                got[0],
                t,
                (t_json[0] * got[0] / n, t_json[1] * got[0] / n),
                "Pose2Mesh-style json.load of subject files + per-sample dicts -> batches",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=2000, help="frames per subject (x 5 subjects x 4 cameras)"
    )
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse the dataset already in --out")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_shards_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ds = work / "dataset"
        marker = ds / f".frames-{args.frames}"
        if args.reuse and marker.exists():
            n = 5 * 4 * args.frames
        else:
            shutil.rmtree(ds, ignore_errors=True)
            n = make_dataset(ds, (1, 5, 6, 7, 8), args.frames)
            marker.touch()
        rows = bench_json(ds, n) + bench_write(ds, work, n) + bench_sizes(work, n) + bench_read(ds, work, n)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        print(
            json.dumps(
                {
                    k: ((None if v != v else round(v, 3)) if isinstance(v, float) else v)
                    for k, v in row.items()
                }
            )
        )
    print("\n| benchmark | measured (wall; CPU) | baseline | baseline (wall; CPU) | ratio (wall; CPU) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "samples_per_s" in r:
            emit(
                "shards",
                f"{r['bench']} samples/s (wall)",
                round(r["samples_per_s"]),
                "samples/s",
                r["baseline"],
                round(r["baseline_samples_per_s"]),
                note=f"CPU-time ratio {r['cpu_ratio']:.2f}x",
            )
        else:
            emit(
                "shards",
                f"{r['bench']} bytes/sample",
                round(r["bytes_per_sample"]),
                "B",
                r["baseline"],
                round(r["baseline_bytes"]),
                higher_is_better=False,
            )
    for r in rows:
        if "samples_per_s" in r:
            fig = f"{r['samples_per_s']:,.0f}; {r['cpu_samples_per_s']:,.0f} samples/s"
            base = f"{r['baseline_samples_per_s']:,.0f}; {r['baseline_cpu_samples_per_s']:,.0f} samples/s"
            ratio = f"{r['ratio']:.2f}x; {r['cpu_ratio']:.2f}x"
        else:
            fig, base = f"{r['bytes_per_sample']:,.0f} B/sample", f"{r['baseline_bytes']:,.0f} B"
            ratio = f"{r['ratio']:.2f}x"
        print(f"| {r['bench']} | {fig} | {r['baseline']} | {base} | {ratio} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
