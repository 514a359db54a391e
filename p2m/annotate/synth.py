"""`p2m synth`: fully annotated people from the open body model, real mocap poses and virtual cameras.

Each synthetic frame is one body (random phenotype, a pose from mocap or the joint-range sampler, a random
heading, feet on the floor near the origin) seen by one or more cameras. For every image the dataset gets, in
the layout of DESIGN.md Contract 1: COCO-17 keypoints and H36M-17 2D joints (exact projections of the body's
regressed joints), the camera, the world 3D joints in mm and the body parameters that reproduce the mesh.
With ``images=True`` the posed mesh is rendered shaded, depth-tested, over a procedural background, and joints
hidden behind the body are marked v=1 (labelled, not visible).

Same arguments and seed give the same bytes: every random draw comes from one seeded generator, in order.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.camera import Camera, bbox_from_joints
from p2m.errors import P2MError
from p2m.io import write_bytes
from p2m.layout import IMAGES_DIR, DatasetWriter

logger = logging.getLogger(__name__)

CAMERA_MODES = ("h36m", "random")
#: Human3.6M-like rig: 4 cameras on a ring, 1000x1000 images, focal about 1145 px, lens about 1.6 m high.
H36M_IMAGE_SIZE = (1000, 1000)
H36M_FOCAL = 1145.0
#: Keypoints whose depth is this far (mm) behind the rendered surface at their pixel count as occluded (v=1).
#: Joints are inside the body, so a joint is always some centimetres behind the skin it projects onto; a limb
#: or the torso in front puts it further back than a body half-depth.
OCCLUSION_MARGIN_MM = 180.0
#: Ranges (low, high) of the random draws, shared with the trainer's on-device source (p2m.pose2mesh.synthetic).
#: Adult phenotypes: age 2/3..1 is adult; weight and height kept off the extremes (statures about 1.45-2.0 m).
SHAPE_RANGES: dict[str, tuple[float, float]] = {"age": (0.67, 1.0), "weight": (0.15, 0.85), "height": (0.2, 0.8)}
#: Human3.6M-like rig: camera distance from the target (mm), lens height (mm), target (mm, world), target jitter
#: (mm, each axis), focal jitter (factor) and principal-point jitter (px).
H36M_RIG = {"distance": (4500.0, 5500.0), "height": (1300.0, 1900.0), "target": (0.0, 0.0, 900.0),
            "target_jitter": 150.0, "focal_jitter": 0.03, "centre_jitter": 8.0, "azimuth_jitter": 0.25}  # fmt: skip
#: Random cameras: focal in image sizes, share of the image height the person fills, elevation (degrees),
#: principal-point jitter (image sizes) and target jitter (mm).
RANDOM_CAMERA = {"focal": (0.9, 1.8), "fill": (0.45, 0.85), "elevation_deg": (-5.0, 30.0), "centre_jitter": 0.02,
                 "target_jitter": 100.0, "margin_mm": 300.0}  # fmt: skip


@dataclass(frozen=True)
class SynthOptions:
    """What `p2m synth` makes. See :func:`synth`."""

    num: int
    poses: str = "cmu-train"
    cameras: str = "h36m"
    images: bool = False
    seed: int = 0
    subjects: int = 1
    image_size: int = 512
    topology: str = "full"
    name: str = "synth"
    batch_size: int = 64
    jpeg_quality: int = 90
    #: Number of the first subject: subjects are ``first_subject .. first_subject + subjects - 1`` (so that a
    #: second dataset, e.g. an evaluation set, can take subject numbers of its own).
    first_subject: int = 1


def _rotz(angle: np.ndarray) -> np.ndarray:
    """(N,) radians -> (N, 3, 3) rotations about +Z (the anny up axis)."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((len(angle), 3, 3))
    out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1], out[:, 2, 2] = c, -s, s, c, 1.0
    return out


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv).as_matrix()


def _matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(m).as_rotvec()


def sample_shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) anny phenotypes of adults: gender, age (2/3..1 = adult), muscle, weight, height, proportions.

    Height and weight are kept off the extremes so that statures stay plausible (about 1.45-2.0 m).
    """
    shape = rng.uniform(0.0, 1.0, size=(n, 6))
    shape[:, 1] = rng.uniform(*SHAPE_RANGES["age"], size=n)
    shape[:, 3] = rng.uniform(*SHAPE_RANGES["weight"], size=n)
    shape[:, 4] = rng.uniform(*SHAPE_RANGES["height"], size=n)
    return shape


def h36m_cameras(rng: np.random.Generator, target_mm: np.ndarray) -> list[Camera]:
    """Four cameras on a ring around ``target_mm`` like Human3.6M's (4.5-5.5 m away, about 1.6 m high)."""
    cams = []
    rig = H36M_RIG
    base = rng.uniform(0, 2 * math.pi)
    for i in range(4):
        azimuth = base + i * math.pi / 2 + rng.uniform(-rig["azimuth_jitter"], rig["azimuth_jitter"])
        dist = rng.uniform(*rig["distance"])
        eye = np.array([math.cos(azimuth) * dist, math.sin(azimuth) * dist, rng.uniform(*rig["height"])])
        f = H36M_FOCAL * rng.uniform(1 - rig["focal_jitter"], 1 + rig["focal_jitter"])
        c = np.array(H36M_IMAGE_SIZE, dtype=float) / 2 + rng.uniform(-rig["centre_jitter"], rig["centre_jitter"], size=2)
        target = target_mm + rng.uniform(-rig["target_jitter"], rig["target_jitter"], size=3)
        cams.append(Camera.look_at(eye, target, f=(f, f), c=c))
    return cams


def random_camera(rng: np.random.Generator, joints_mm: np.ndarray, size: int) -> Camera:
    """A camera anywhere around the person, framing them at 45-85 % of the image height."""
    rc = RANDOM_CAMERA
    centre = (joints_mm.max(0) + joints_mm.min(0)) / 2
    extent = float(np.ptp(joints_mm, axis=0).max()) + rc["margin_mm"]
    f = size * rng.uniform(*rc["focal"])
    fill = rng.uniform(*rc["fill"])
    dist = f * extent / (fill * size)
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = rng.uniform(*(math.radians(a) for a in rc["elevation_deg"]))
    eye = centre + dist * np.array([math.cos(azimuth) * math.cos(elevation),
                                    math.sin(azimuth) * math.cos(elevation), math.sin(elevation)])  # fmt: skip
    c = np.full(2, size / 2.0) + rng.uniform(-rc["centre_jitter"], rc["centre_jitter"], size=2) * size
    target = centre + rng.uniform(-rc["target_jitter"], rc["target_jitter"], size=3)
    return Camera.look_at(eye, target, f=(f, f), c=c)


def _visibility(uv: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
    return np.where(inside, 2, 0).astype(np.int64)


def _occlusion(vis: np.ndarray, uv: np.ndarray, depth_mm: np.ndarray, zbuf: np.ndarray) -> np.ndarray:
    """Lower v from 2 to 1 for joints far behind the rendered surface at their pixel."""
    out = vis.copy()
    h, w = zbuf.shape
    for i in np.flatnonzero(vis == 2):
        x, y = int(round(uv[i, 0])), int(round(uv[i, 1]))
        if 0 <= x < w and 0 <= y < h and depth_mm[i] > zbuf[y, x] + OCCLUSION_MARGIN_MM:
            out[i] = 1
    return out


def _round(a: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def _pose_source(spec: str):
    from p2m.body.poses import load_pose_source

    return load_pose_source(spec)


def synth(out: str | Path, options: SynthOptions, progress: bool = True) -> dict[str, Any]:
    """Write a synthetic dataset into ``out`` (Contract 1) and return its stats.

    Args:
        out: the dataset folder (created; an existing dataset of the same name is extended).
        options: what to make (see :class:`SynthOptions`). ``num`` counts images (= person annotations).
        progress: show a progress bar.

    Returns:
        ``{"images", "frames", "subjects", "seconds", "poses", ...}``.
    """
    import torch
    from tqdm import tqdm

    from p2m.body import create

    opts = options
    if opts.num < 1:
        raise P2MError(f"--num {opts.num}: expected at least 1 image")
    if opts.cameras not in CAMERA_MODES:
        raise P2MError(f"--cameras {opts.cameras!r}: expected one of {', '.join(CAMERA_MODES)}")
    if not 1 <= opts.subjects <= opts.num:
        raise P2MError(f"--subjects {opts.subjects}: expected between 1 and --num ({opts.num})")
    if opts.first_subject < 1:
        raise P2MError(f"first_subject {opts.first_subject}: expected a subject number >= 1")
    t0 = time.perf_counter()
    rng = np.random.default_rng(opts.seed)
    source = _pose_source(opts.poses)
    body = create("anny", topology=opts.topology)
    faces = body.faces.cpu().numpy()
    views = 4 if opts.cameras == "h36m" else 1
    size = H36M_IMAGE_SIZE if opts.cameras == "h36m" else (opts.image_size, opts.image_size)
    num_frames = math.ceil(opts.num / views)
    # Contiguous blocks of frames per subject, like Human3.6M's per-subject sessions.
    block = np.minimum(np.arange(num_frames) * opts.subjects // num_frames, opts.subjects - 1)
    subject_of = block + opts.first_subject
    out = Path(out)
    info = {
        "description": "synthetic people rendered from the anny body model (p2m synth)",
        "body_model": f"anny {body.rig} {body.topology}",
        "poses": getattr(source, "description", opts.poses),
        "cameras": opts.cameras,
        "seed": opts.seed,
        "license": "CC0-1.0 (anny/MakeHuman assets); poses: see 'poses'",
    }
    writer = DatasetWriter(out, opts.name, info=info)
    subject_cams: dict[int, list[Camera]] = {}
    frame_counter: dict[int, int] = {}
    images_done = 0
    bar = tqdm(total=opts.num, desc="synth", unit="img", disable=not progress)
    with writer:
        for start in range(0, num_frames, opts.batch_size):
            n = min(opts.batch_size, num_frames - start)
            pose = np.asarray(source.sample(n, rng), dtype=np.float64).reshape(n, body.num_bones, 3)
            heading = rng.uniform(-math.pi, math.pi, size=n)
            root = _rotz(heading) @ _rotvec_to_matrix(pose[:, 0])
            pose[:, 0] = _matrix_to_rotvec(root)
            shape = sample_shapes(n, rng)
            floor_xy = rng.uniform(-400.0, 400.0, size=(n, 2)) / 1000.0
            with torch.inference_mode():
                result = body(torch.as_tensor(pose, dtype=torch.float32), torch.as_tensor(shape, dtype=torch.float32))
            verts = result.vertices.double().numpy()
            joints = result.joints.double().numpy()
            kps = result.keypoints.double().numpy()
            # Feet on the floor (z = 0), body near the origin.
            trans = np.concatenate([floor_xy, -verts[:, :, 2].min(1, keepdims=True)], axis=1)
            for i in range(n):
                frame = start + i
                subject = int(subject_of[frame])
                fidx = frame_counter.get(subject, 0)
                frame_counter[subject] = fidx + 1
                joints_mm = (joints[i] + trans[i]) * 1000.0
                kps_mm = (kps[i] + trans[i]) * 1000.0
                verts_mm = (verts[i] + trans[i]) * 1000.0
                if opts.cameras == "h36m":
                    if subject not in subject_cams:
                        subject_cams[subject] = h36m_cameras(rng, np.array([0.0, 0.0, 900.0]))
                        for ci, cam in enumerate(subject_cams[subject], start=1):
                            writer.add_camera(subject, ci, cam)
                    cams = list(enumerate(subject_cams[subject], start=1))
                else:
                    cam = random_camera(rng, joints_mm, opts.image_size)
                    cam_idx = fidx + 1
                    writer.add_camera(subject, cam_idx, cam)
                    cams = [(cam_idx, cam)]
                body_param = {
                    "model": "anny", "rig": body.rig, "topology": body.topology,
                    "pose": _round(pose[i].reshape(-1), 6), "shape": _round(shape[i], 6),
                    "trans": _round(trans[i], 6),
                }  # fmt: skip
                for cam_idx, cam in cams:
                    if images_done >= opts.num:
                        break
                    j2d = cam.project(joints_mm)
                    k2d = cam.project(kps_mm)
                    j_vis = _visibility(j2d, size)
                    k_vis = _visibility(k2d, size)
                    rel = f"{opts.name}/s{subject:02d}/c{cam_idx:02d}/{fidx:06d}.jpg"
                    if opts.images:
                        from p2m.render import procedural_background, render_mesh

                        cam_verts = cam.world_to_camera(verts_mm)
                        render = render_mesh(cam_verts, faces, cam.f, cam.c, size,
                                             background=procedural_background(size[0], size[1], rng),
                                             cull_backfaces=True)  # fmt: skip
                        j_vis = _occlusion(j_vis, j2d, cam.world_to_camera(joints_mm)[:, 2], render.depth)
                        k_vis = _occlusion(k_vis, k2d, cam.world_to_camera(kps_mm)[:, 2], render.depth)
                        _write_jpeg(out / IMAGES_DIR / rel, render.image, opts.jpeg_quality)
                    bbox = bbox_from_joints(np.concatenate([k2d, j2d]), image_size=size)
                    image = {
                        "file_name": rel, "width": size[0], "height": size[1], "action_idx": 1,
                        "subaction_idx": 1, "cam_idx": cam_idx, "frame_idx": fidx, "synthetic": True,
                    }  # fmt: skip
                    ann = {
                        "bbox": _round(bbox, 2),
                        "keypoints": np.concatenate([np.round(k2d, 3), k_vis[:, None]], axis=1),
                        "joints_2d_h36m": np.concatenate([np.round(j2d, 3), j_vis[:, None]], axis=1),
                    }
                    writer.add_frame(subject, image, [ann], joints_3d_world=np.round(joints_mm, 3),
                                     body_param=body_param)  # fmt: skip
                    images_done += 1
                    bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    stats = {
        "images": images_done,
        "frames": num_frames,
        "subjects": opts.subjects,
        "cameras": opts.cameras,
        "poses": getattr(source, "description", opts.poses),
        "with_images": opts.images,
        "seconds": round(seconds, 2),
        "images_per_second": round(images_done / max(seconds, 1e-9), 1),
    }
    logger.info("synth: %s", stats)
    return stats


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, optimize=False)
    write_bytes(path, buf.getvalue())
