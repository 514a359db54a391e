"""`p2m synth`: fully annotated people from the open body model, real mocap poses and virtual cameras.

Each synthetic frame is one body (random phenotype, a pose from mocap or the joint-range sampler, a random
heading, feet on the floor near the origin) seen by one or more cameras. For every image the dataset gets, in
the layout of DESIGN.md Contract 1: COCO-17 keypoints and H36M-17 2D joints (exact projections of the body's
regressed joints), the camera, the world 3D joints in mm and the body parameters that reproduce the mesh.
With ``images=True`` the posed mesh is rendered shaded, depth-tested, over a procedural background, and joints
hidden behind the body are marked v=1 (labelled, not visible).

Same arguments and seed give the same bytes: every random draw of a batch of frames comes from a generator
seeded by (seed, batch), so batches can be made anywhere (``p2m synth --ray``) and written in order.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p2m.body.sampler import SHAPE_RANGES
from p2m.camera import H36M_FOCAL, H36M_IMAGE_SIZE, H36M_RIG, RANDOM_CAMERA, Camera, bbox_from_joints
from p2m.errors import P2MError
from p2m.io import write_bytes
from p2m.layout import IMAGES_DIR, DatasetWriter

logger = logging.getLogger(__name__)

CAMERA_MODES = ("h36m", "random")
#: Human3.6M-like rig: 4 cameras on a ring, 1000x1000 images, focal about 1145 px, lens about 1.6 m high.
#: Keypoints whose depth is this far (mm) behind the rendered surface at their pixel count as occluded (v=1).
#: Joints are inside the body, so a joint is always some centimetres behind the skin it projects onto; a limb
#: or the torso in front puts it further back than a body half-depth.
OCCLUSION_MARGIN_MM = 180.0


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
        c = np.array(H36M_IMAGE_SIZE, dtype=float) / 2 + rng.uniform(
            -rig["centre_jitter"], rig["centre_jitter"], size=2
        )
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
    eye = centre + dist * np.array(
        [
            math.cos(azimuth) * math.cos(elevation),
            math.sin(azimuth) * math.cos(elevation),
            math.sin(elevation),
        ]
    )
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


def _check(opts: SynthOptions) -> None:
    if opts.num < 1:
        raise P2MError(f"--num {opts.num}: expected at least 1 image")
    if opts.cameras not in CAMERA_MODES:
        raise P2MError(f"--cameras {opts.cameras!r}: expected one of {', '.join(CAMERA_MODES)}")
    if not 1 <= opts.subjects <= opts.num:
        raise P2MError(f"--subjects {opts.subjects}: expected between 1 and --num ({opts.num})")
    if opts.first_subject < 1:
        raise P2MError(f"first_subject {opts.first_subject}: expected a subject number >= 1")
    if opts.batch_size < 1:
        raise P2MError(f"batch_size {opts.batch_size}: expected at least 1")


def num_batches(options: SynthOptions) -> int:
    """How many batches :func:`synth` makes: the units :class:`Synthesizer` works on (and Ray tasks share)."""
    views = 4 if options.cameras == "h36m" else 1
    return math.ceil(math.ceil(options.num / views) / options.batch_size)


class Synthesizer:
    """Makes the records of one batch of frames at a time, independently of every other batch.

    Every random draw of batch ``b`` comes from a generator seeded by ``(seed, b)`` (the four H36M cameras of a
    subject from ``(seed, subject)``), so batches can be made in any order, in any process, and
    :func:`write_records` in batch order gives the same bytes. Images (``options.images``) are written to
    ``out/images`` here; the annotations are returned as records.
    """

    def __init__(self, out: str | Path, options: SynthOptions) -> None:
        from p2m.body import create

        _check(options)
        self.out, self.opts = Path(out), options
        self.source = _pose_source(options.poses)
        self.body = create("anny", topology=options.topology)
        self.faces = self.body.faces.cpu().numpy()
        self.views = 4 if options.cameras == "h36m" else 1
        self.size = H36M_IMAGE_SIZE if options.cameras == "h36m" else (options.image_size, options.image_size)
        self.num_frames = math.ceil(options.num / self.views)
        # Contiguous blocks of frames per subject, like Human3.6M's per-subject sessions.
        block = np.minimum(
            np.arange(self.num_frames) * options.subjects // self.num_frames, options.subjects - 1
        )
        self.subject_of = block + options.first_subject
        self.first_frame = {int(s): int(np.argmax(self.subject_of == s)) for s in np.unique(self.subject_of)}

    def info(self) -> dict[str, Any]:
        """The dataset facts for ``{name}_info.json``."""
        return {
            "description": "synthetic people rendered from the anny body model (p2m synth)",
            "body_model": f"anny {self.body.rig} {self.body.topology}",
            "poses": getattr(self.source, "description", self.opts.poses),
            "cameras": self.opts.cameras,
            "seed": self.opts.seed,
            "license": "CC0-1.0 (anny/MakeHuman assets); poses: see 'poses'",
        }

    def subject_cameras(self, subject: int) -> list[Camera]:
        return h36m_cameras(np.random.default_rng([self.opts.seed, 1, subject]), np.array([0.0, 0.0, 900.0]))

    def batch(self, index: int) -> list[tuple]:
        """Records of batch ``index``: ``("camera", subject, cam_idx, Camera)`` and
        ``("frame", subject, image, annotations, joints_3d_world, body_param)``, in writing order."""
        import torch

        opts, body, size = self.opts, self.body, self.size
        rng = np.random.default_rng([opts.seed, 0, index])
        start = index * opts.batch_size
        n = min(opts.batch_size, self.num_frames - start)
        pose = np.asarray(self.source.sample(n, rng), dtype=np.float64).reshape(n, body.num_bones, 3)
        heading = rng.uniform(-math.pi, math.pi, size=n)
        root = _rotz(heading) @ _rotvec_to_matrix(pose[:, 0])
        pose[:, 0] = _matrix_to_rotvec(root)
        shape = sample_shapes(n, rng)
        floor_xy = rng.uniform(-400.0, 400.0, size=(n, 2)) / 1000.0
        # One thread: float32 sums then do not depend on how many threads a process has, so a Ray worker rounds
        # exactly like a local run (and for batches this small one thread is also the fastest, measured).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                result = body(
                    torch.as_tensor(pose, dtype=torch.float32), torch.as_tensor(shape, dtype=torch.float32)
                )
        finally:
            torch.set_num_threads(threads)
        verts = result.vertices.double().numpy()
        joints = result.joints.double().numpy()
        kps = result.keypoints.double().numpy()
        # Feet on the floor (z = 0), body near the origin.
        trans = np.concatenate([floor_xy, -verts[:, :, 2].min(1, keepdims=True)], axis=1)
        records: list[tuple] = []
        for i in range(n):
            frame = start + i
            subject = int(self.subject_of[frame])
            fidx = frame - self.first_frame[subject]
            joints_mm = (joints[i] + trans[i]) * 1000.0
            kps_mm = (kps[i] + trans[i]) * 1000.0
            verts_mm = (verts[i] + trans[i]) * 1000.0
            if opts.cameras == "h36m":
                cams = list(enumerate(self.subject_cameras(subject), start=1))
                if fidx == 0:
                    records += [("camera", subject, ci, cam) for ci, cam in cams]
            else:
                cam = random_camera(rng, joints_mm, opts.image_size)
                cams = [(fidx + 1, cam)]
                records.append(("camera", subject, fidx + 1, cam))
            body_param = {
                "model": "anny",
                "rig": body.rig,
                "topology": body.topology,
                "pose": _round(pose[i].reshape(-1), 6),
                "shape": _round(shape[i], 6),
                "trans": _round(trans[i], 6),
            }
            for view, (cam_idx, cam) in enumerate(cams):
                if frame * self.views + view >= opts.num:
                    break
                j2d = cam.project(joints_mm)
                k2d = cam.project(kps_mm)
                j_vis = _visibility(j2d, size)
                k_vis = _visibility(k2d, size)
                rel = f"{opts.name}/s{subject:02d}/c{cam_idx:02d}/{fidx:06d}.jpg"
                if opts.images:
                    from p2m.render import procedural_background, render_mesh

                    cam_verts = cam.world_to_camera(verts_mm)
                    render = render_mesh(
                        cam_verts,
                        self.faces,
                        cam.f,
                        cam.c,
                        size,
                        background=procedural_background(size[0], size[1], rng),
                        cull_backfaces=True,
                    )
                    j_vis = _occlusion(j_vis, j2d, cam.world_to_camera(joints_mm)[:, 2], render.depth)
                    k_vis = _occlusion(k_vis, k2d, cam.world_to_camera(kps_mm)[:, 2], render.depth)
                    _write_jpeg(self.out / IMAGES_DIR / rel, render.image, opts.jpeg_quality)
                bbox = bbox_from_joints(np.concatenate([k2d, j2d]), image_size=size)
                image = {
                    "file_name": rel,
                    "width": size[0],
                    "height": size[1],
                    "action_idx": 1,
                    "subaction_idx": 1,
                    "cam_idx": cam_idx,
                    "frame_idx": fidx,
                    "synthetic": True,
                }
                ann = {
                    "bbox": _round(bbox, 2),
                    "keypoints": np.concatenate([np.round(k2d, 3), k_vis[:, None]], axis=1),
                    "joints_2d_h36m": np.concatenate([np.round(j2d, 3), j_vis[:, None]], axis=1),
                }
                records.append(("frame", subject, image, [ann], np.round(joints_mm, 3), body_param))
        return records


def write_records(writer: DatasetWriter, records: list[tuple]) -> int:
    """Add one batch's records (see :meth:`Synthesizer.batch`) to ``writer``; returns the images added."""
    images = 0
    for rec in records:
        if rec[0] == "camera":
            writer.add_camera(rec[1], rec[2], rec[3])
        else:
            writer.add_frame(rec[1], rec[2], rec[3], joints_3d_world=rec[4], body_param=rec[5])
            images += 1
    return images


def synth(
    out: str | Path,
    options: SynthOptions,
    progress: bool | None = None,
    batches: Iterator[list[tuple]] | None = None,
) -> dict[str, Any]:
    """Write a synthetic dataset into ``out`` (Contract 1) and return its stats.

    Args:
        out: the dataset folder (created; an existing dataset of the same name is extended).
        options: what to make (see :class:`SynthOptions`). ``num`` counts images (= person annotations).
        progress: show a progress bar (None: only on a terminal).
        batches: the records of batches ``0 .. num_batches(options) - 1`` in order, made elsewhere (e.g. by Ray
            workers, :mod:`p2m.scale.synth`); None makes them here.

    Returns:
        ``{"images", "frames", "subjects", "seconds", "poses", ...}``.
    """
    from tqdm import tqdm

    opts = options
    _check(opts)
    t0 = time.perf_counter()
    maker = Synthesizer(out, opts)
    if batches is None:
        batches = (maker.batch(b) for b in range(num_batches(opts)))
    images_done = 0
    bar = tqdm(total=opts.num, desc="synth", unit="img", disable=None if progress is None else not progress)
    with DatasetWriter(out, opts.name, info=maker.info()) as writer:
        for records in batches:
            done = write_records(writer, records)
            images_done += done
            bar.update(done)
    bar.close()
    if images_done != opts.num:
        raise P2MError(f"synth: {images_done} images made, expected {opts.num} (a batch is missing)")
    seconds = time.perf_counter() - t0
    stats = {
        "images": images_done,
        "frames": maker.num_frames,
        "subjects": opts.subjects,
        "cameras": opts.cameras,
        "poses": getattr(maker.source, "description", opts.poses),
        "with_images": opts.images,
        "seconds": round(seconds, 2),
        "images_per_second": round(images_done / max(seconds, 1e-9), 1),
    }
    logger.debug("synth: %s", stats)
    return stats


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, optimize=False)
    write_bytes(path, buf.getvalue())
