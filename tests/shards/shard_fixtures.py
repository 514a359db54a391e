"""Writers of small Contract 1 datasets (through p2m.layout.DatasetWriter) for the shard tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from p2m.camera import Camera, bbox_from_joints
from p2m.layout import DatasetWriter

H36M_CAMS = {
    1: Camera.look_at([0.0, -4500.0, 1500.0], [0.0, 0.0, 900.0], f=[1145.0, 1144.0], c=[512.0, 515.0]),
    2: Camera.look_at([4000.0, 1000.0, 1200.0], [0.0, 0.0, 900.0], f=[1150.0, 1150.0], c=[500.0, 500.0]),
}
CAM_IDS = {1: 54138969, 2: 55011271}  # Human3.6M camera names, used in the dotted file names


def _pose(rng: np.random.Generator) -> np.ndarray:
    base = np.array(
        [
            [0, 0, 900],
            [-130, 0, 900],
            [-130, 0, 480],
            [-130, 0, 60],
            [130, 0, 900],
            [130, 0, 480],
            [130, 0, 60],
            [0, 0, 1150],
            [0, 0, 1400],
            [0, -80, 1500],
            [0, 0, 1650],
            [180, 0, 1400],
            [200, 0, 1120],
            [210, 0, 860],
            [-180, 0, 1400],
            [-200, 0, 1120],
            [-210, 0, 860],
        ],
        dtype=float,
    )
    return base + rng.normal(0, 30, base.shape)


def _annotation(j2d: np.ndarray) -> dict:
    coco = np.zeros((17, 3))
    coco[:, :2] = j2d[:17, :2]
    coco[:, 2] = 2
    return {"bbox": bbox_from_joints(j2d), "keypoints": coco, "joints_2d_h36m": j2d}


def gradient_jpeg(w: int = 1000, h: int = 1000) -> bytes:
    """A frame whose red channel is 255 x / w and green channel 255 y / h: crops can be located by colour."""
    from PIL import Image

    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    rgb = np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    bio = io.BytesIO()
    Image.fromarray(rgb).save(bio, format="JPEG", quality=90)
    return bio.getvalue()


def write_h36m_like(
    root: Path,
    name: str = "h36m",
    subjects=(1, 5, 9),
    frames: int = 4,
    model: str = "anny",
    pose_len: int = 93,
    images: bool = False,
    seed: int = 0,
) -> Path:
    """Human3.6M-style: 2 cameras, 3D joints, body parameters; image files named like
    ``S1_Directions_1.54138969_000001.jpg`` (dots inside the name)."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, name, info={"version": "test"}) as w:
        for s in subjects:
            for cam_idx, cam in H36M_CAMS.items():
                w.add_camera(s, cam_idx, cam)
            for f in range(frames):
                X = _pose(rng)
                params = {
                    "model": model,
                    "pose": rng.normal(size=pose_len).tolist(),
                    "shape": rng.normal(size=10 if model == "smpl" else 6).tolist(),  # as the model needs
                    "trans": [0.0, 0.0, 0.9],
                }
                for cam_idx, cam in H36M_CAMS.items():
                    fname = f"S{s}/S{s}_Directions_1.{CAM_IDS[cam_idx]}_{f + 1:06d}.jpg"
                    if images:
                        (root / "images" / fname).parent.mkdir(parents=True, exist_ok=True)
                        (root / "images" / fname).write_bytes(gradient_jpeg())
                    image = {
                        "file_name": fname,
                        "width": 1000,
                        "height": 1000,
                        "action_idx": 2,
                        "subaction_idx": 1,
                        "cam_idx": cam_idx,
                        "frame_idx": f,
                    }
                    j2d = np.c_[cam.project(X), np.full(17, 2.0)]
                    w.add_frame(s, image, [_annotation(j2d)], joints_3d_world=X, body_param=params)
    return root


def write_photos(root: Path, name: str = "crawl", photos: int = 3, seed: int = 1) -> Path:
    """Crawl-style: single photos with two people each, 2D only (no camera file, no 3D, no body)."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, name, info={"version": "test"}) as w:
        for i in range(photos):
            image = {
                "file_name": f"p{i}.jpg",
                "width": 640,
                "height": 480,
                "action_idx": 0,
                "subaction_idx": 0,
                "cam_idx": i + 1,
                "frame_idx": 0,
                "source_url": f"http://127.0.0.1/p{i}.jpg",
                "license": "CC0-1.0",
            }
            anns = [_annotation(np.c_[rng.uniform(50, 400, (17, 2)), np.full(17, 2.0)]) for _ in range(2)]
            w.add_frame(1, image, anns)
    return root
